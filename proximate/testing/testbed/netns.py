"""Network namespaces, veth links, tbf shaping and link byte counters, through ``ip`` and ``tc``.

Every function here runs one iproute2 command (or a few) and turns a refusal into a :class:`NetnsError`
naming the thing refused. Nothing here remembers state: the testbed's state file does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from proximate.errors import ProximateError

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000

#: Rates in tc's bit units (``tc-tbf(8)``): checked before anything is created, so a typo fails at once.
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(|k|m|g|t)bit$")
_RATE_FACTORS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


class NetnsError(ProximateError, RuntimeError):
    """An ``ip``/``tc`` step failed or cannot run here; the message names the namespace, device or value."""


def check_tools() -> None:
    """Refuse early, naming what is missing: root, ``ip`` and ``tc``.

    Raises:
        NetnsError: not root, or ``ip``/``tc`` not on PATH.
    """
    if os.geteuid() != 0:
        raise NetnsError("the testbed needs root (it creates network namespaces): run it as root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetnsError(f"the testbed needs the {tool!r} command (iproute2), which is not on PATH")


def rate_bits(rate: str) -> float:
    """A tc rate (``100mbit``, ``27mbit``, ``1gbit``) in bits per second.

    Raises:
        NetnsError: not a rate in tc's bit units.
    """
    match = _RATE.match(rate.strip().lower())
    if not match:
        raise NetnsError(f"invalid link rate {rate!r}: give it in tc's bit units, e.g. '100mbit' or '27mbit'")
    return float(match.group(1)) * _RATE_FACTORS[match.group(2)]


def run(cmd: Sequence[str], what: str, *, check: bool = True) -> str:
    """Run an iproute2 command; on failure raise naming ``what`` with the tool's own message.

    Args:
        cmd: The command line.
        what: What the command does, for the error ("create namespace 'x'").
        check: Raise on a non-zero exit status.

    Returns:
        Its standard output.

    Raises:
        NetnsError: the command failed (and ``check``).
    """
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise NetnsError(f"could not {what}: {detail[0] if detail else f'exit status {proc.returncode}'}")
    return proc.stdout


def list_namespaces() -> list[str]:
    """Names of the network namespaces on this machine (``ip netns list``)."""
    return [line.split()[0] for line in run(["ip", "netns", "list"], "list namespaces").splitlines() if line.strip()]


def add_namespace(name: str) -> None:
    """Create namespace ``name`` with its loopback up; refuse a name that exists.

    Raises:
        NetnsError: the name exists or ``ip`` refused it.
    """
    if name in list_namespaces():
        raise NetnsError(f"network namespace {name!r} already exists (another testbed, or one left over?)")
    run(["ip", "netns", "add", name], f"create network namespace {name!r}")
    run(["ip", "-n", name, "link", "set", "lo", "up"], f"bring up loopback in {name!r}")


def delete_namespace(name: str) -> None:
    """Delete namespace ``name`` (its veth ends go with it); a missing one is not an error."""
    if name in list_namespaces():
        run(["ip", "netns", "del", name], f"delete network namespace {name!r}")


def namespace_pids(name: str) -> list[int]:
    """PIDs of the processes inside namespace ``name`` (``ip netns pids``); empty if it does not exist."""
    out = run(["ip", "netns", "pids", name], f"list processes in {name!r}", check=False)
    return [int(p) for p in out.split() if p.isdigit()]


@dataclass(frozen=True)
class LinkEnd:
    """One end of a veth link: the namespace, the device, and the node address routed over it."""

    namespace: str
    device: str
    address: str


def add_node_address(namespace: str, address: str) -> None:
    """Give the namespace its one address (a /32 on loopback), which every link routes to.

    One address per node, whatever link a peer uses, so a process can ``--host`` it and be reached from all
    the directly linked namespaces.
    """
    run(["ip", "-n", namespace, "addr", "add", f"{address}/32", "dev", "lo"], f"add address {address} in {namespace!r}")


def add_link(a: LinkEnd, b: LinkEnd, rate: str) -> None:
    """A veth pair between two namespaces, IPv6 off, shaped with tbf at ``rate`` in both directions, routed.

    Raises:
        NetnsError: a step failed; tbf's refusal names the rate and the device.
    """
    run(
        [
            "ip",
            "link",
            "add",
            a.device,
            "netns",
            a.namespace,
            "type",
            "veth",
            "peer",
            "name",
            b.device,
            "netns",
            b.namespace,
        ],
        f"create veth link {a.device} ({a.namespace}) <-> {b.device} ({b.namespace})",
    )
    for end in (a, b):
        # Neighbour discovery and router solicitations would add bytes to the counters the tests read.
        run(
            ["ip", "netns", "exec", end.namespace, "sysctl", "-qw", f"net.ipv6.conf.{end.device}.disable_ipv6=1"],
            f"disable IPv6 on {end.device} in {end.namespace!r}",
        )
        shape(end, rate)
    link_up(a, b)


def shape(end: LinkEnd, rate: str) -> None:
    """Token bucket at ``rate`` on the egress of ``end`` (both ends shaped make both directions shaped).

    Raises:
        NetnsError: tc refused the rate.
    """
    # burst must hold at least one rate-interval's worth of bytes at the timer's granularity, or tbf
    # cannot reach the rate; 64 kB is enough up to about 1 Gbit/s at 1 ms.
    run(
        [
            "tc",
            "-n",
            end.namespace,
            "qdisc",
            "replace",
            "dev",
            end.device,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "64kb",
            "latency",
            "50ms",
        ],
        f"shape {end.device} in {end.namespace!r} with tbf at rate {rate!r}",
    )


def link_up(a: LinkEnd, b: LinkEnd) -> None:
    """Bring both ends up and (re)install the routes to each node address.

    Idempotent: the kernel flushes a device's routes when it goes down, so bringing it back re-adds them.
    """
    for end in (a, b):
        run(["ip", "-n", end.namespace, "link", "set", end.device, "up"], f"bring up {end.device} in {end.namespace!r}")
    for end, peer in ((a, b), (b, a)):
        run(
            [
                "ip",
                "-n",
                end.namespace,
                "route",
                "replace",
                f"{peer.address}/32",
                "dev",
                end.device,
                "src",
                end.address,
            ],
            f"route {peer.address} over {end.device} in {end.namespace!r}",
        )


def link_down(end: LinkEnd) -> None:
    """Take ``end`` down: the peer loses carrier and nothing crosses the link either way."""
    run(["ip", "-n", end.namespace, "link", "set", end.device, "down"], f"take down {end.device} in {end.namespace!r}")


def device_bytes(namespace: str, devices: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{device: {"rx": n, "tx": n}}`` from ``/sys/class/net/DEV/statistics`` inside ``namespace``.

    ``ip netns exec`` mounts the namespace's own sysfs, so these are that namespace's devices.
    """
    files = [f"/sys/class/net/{d}/statistics/{k}_bytes" for d in devices for k in ("rx", "tx")]
    out = run(["ip", "netns", "exec", namespace, "cat", *files], f"read byte counters in {namespace!r}")
    values = [int(v) for v in out.split()]
    return {d: {"rx": values[2 * i], "tx": values[2 * i + 1]} for i, d in enumerate(devices)}


def qdisc_rate(end: LinkEnd) -> str:
    """The tbf rate tc reports on ``end`` (``''`` if not shaped)."""
    out = run(["tc", "-n", end.namespace, "qdisc", "show", "dev", end.device], "show qdisc", check=False)
    match = re.search(r"tbf .*?rate (\S+)", out)
    return match.group(1) if match else ""


def in_namespace(namespace: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in a new thread that has joined ``namespace``'s network stack, and return its result.

    A network namespace belongs to a thread, not a process (``setns(2)``), so the sockets that thread opens
    live in the namespace while the rest of this process stays where it is: used to probe servers and load a
    region's bucket from the host process without starting an interpreter per step.

    Raises:
        NetnsError: the namespace cannot be joined.
        Exception: whatever ``fn`` raised.
    """
    import ctypes
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NetnsError(f"could not join network namespace {namespace!r}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def port_open(namespace: str, host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connect to ``host:port`` succeeds from inside ``namespace``."""
    import socket

    def attempt() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return in_namespace(namespace, attempt)
