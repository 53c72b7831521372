"""Which TCP sockets a process tree listens on, read from ``/proc`` (what ``ss -ltnp`` shows), for the network
acceptance tests: no process of ours may listen on a wildcard address (0.0.0.0 or ::) it was not asked to."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

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


def listeners(pids: Iterable[int]) -> list[Listener]:
    """Every TCP socket in LISTEN state that the processes ``pids`` hold, over IPv4 and IPv6.

    psutil reads ``/proc/<pid>/net/tcp`` and ``tcp6`` and matches their inodes with the process's open file
    descriptors, as ``ss -ltnp`` does.

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
            proc = psutil.Process(pid)
            name = proc.name()
            sockets = proc.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN:
                found.add(Listener(pid, name, sock.laddr.ip, sock.laddr.port))
    return sorted(found, key=lambda s: (s.pid, s.port, s.ip))


def tree_listeners(pid: int) -> list[Listener]:
    """The listening sockets of ``pid`` and all its descendants (see :func:`listeners`)."""
    return listeners(p.pid for p in process_tree(pid))
