"""Which TCP sockets a process tree listens on, read from ``/proc`` (what ``ss -ltnp`` shows), for the network
acceptance tests: no process of ours may listen on a wildcard address (0.0.0.0 or ::) it was not asked to."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

#: The addresses that accept connections on every interface.
WILDCARDS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True)
class Listener:
    """One listening socket: the process holding it and the address it is bound to."""

    pid: int
    name: str
    ip: str
    port: int

    @property
    def wildcard(self) -> bool:
        """True for 0.0.0.0 and :: (every interface), the bind a security review refuses."""
        return self.ip in WILDCARDS

    @property
    def loopback(self) -> bool:
        """True for 127.0.0.0/8 and ::1."""
        return ipaddress.ip_address(self.ip).is_loopback

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.name}[{self.pid}] {host}:{self.port}"


def process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its live descendants (a process that exited meanwhile is left out)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


#: The state column of ``/proc/net/tcp`` for a listening socket.
_TCP_LISTEN = "0A"


def _decode_address(hex_address: str) -> tuple[str, int]:
    """``/proc/net/tcp``'s ``0100007F:1F90`` as ``("127.0.0.1", 8080)`` (tcp6's 32 hex digits likewise): the
    address is the kernel's in-memory words, each 32-bit word in host (little-endian) order."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(packed)), int(port, 16)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # a descriptor closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def listeners(pids: Iterable[int]) -> list[Listener]:
    """Every TCP socket in LISTEN state that the processes ``pids`` hold, over IPv4 and IPv6.

    Read as ``ss -ltnp`` does: each process's own ``/proc/<pid>/net/tcp`` and ``tcp6`` (the tables of the
    network namespace it is in, so a testbed's processes are seen too), matched by inode with the sockets among
    its open file descriptors.

    Args:
        pids: the processes to inspect (those that exited meanwhile are skipped).

    Returns:
        Their listening sockets, sorted by process and port.

    Examples:
        >>> import os
        >>> [str(s) for s in listeners([os.getpid()]) if s.wildcard]
        []
    """
    found = set()
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            inodes = _socket_inodes(pid)
            tables = [Path(f"/proc/{pid}/net/{table}").read_text() for table in ("tcp", "tcp6")]
        except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
            continue
        for table in tables:
            for line in table.splitlines()[1:]:
                fields = line.split()
                if fields[3] == _TCP_LISTEN and fields[9] in inodes:
                    ip, port = _decode_address(fields[1])
                    found.add(Listener(pid, name, ip, port))
    return sorted(found, key=lambda s: (s.pid, s.port, s.ip))


def tree_listeners(pid: int) -> list[Listener]:
    """The listening sockets of ``pid`` and all its descendants (see :func:`listeners`)."""
    return listeners(p.pid for p in process_tree(pid))
