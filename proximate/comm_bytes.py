"""What a process's TCP connections carried, per peer, from the kernel's own counters (Linux ``TCP_INFO``).

The locality report counts data (the workers' transfer logs); everything else a cluster sends is control:
task messages, replies, heartbeats, the report's own questions. Dask keeps no byte counters for that, so this
module asks the kernel: for every TCP socket of the process, ``TCP_INFO`` gives payload bytes sent and received
(TLS records included, retransmissions included) and segments out and in (pure ACKs included). Headers are not
in the payload counts; each segment adds a fixed :data:`HEADER_BYTES` on the wire, so payload plus segments times
that is what the connection put on the link, comparable with the link's own counters.

Only sockets open at the second reading are seen: a connection opened and closed between two readings is
missed. Dask pools its connections (worker streams, rpc pools), so little is.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

#: Bytes each TCP segment adds on an Ethernet link besides its payload: Ethernet 14 (the veth/NIC counters
#: include it, not the FCS), IPv4 20, TCP 20 and the timestamp option 12 (Linux sends it on every segment).
HEADER_BYTES = 14 + 20 + 20 + 12

# Offsets in struct tcp_info (linux/tcp.h): stable ABI, fields only ever appended.
_BYTES_ACKED = 120
_BYTES_RECEIVED = 128
_SEGS_OUT = 136
_SEGS_IN = 140
_BYTES_SENT = 200  # Linux 4.19+; before, bytes acked (which omits retransmissions)
_TCP_INFO_LEN = 232


def tcp_counters() -> dict[int, tuple[str, int, int, int, int]]:
    """Every IPv4/IPv6 TCP socket of this process: ``{inode: (peer host, sent, received, segs out, segs in)}``.

    Empty where ``/proc`` or ``TCP_INFO`` is missing (not Linux).
    """
    out: dict[int, tuple[str, int, int, int, int]] = {}
    if not sys.platform.startswith("linux"):
        return out
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for name in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed in between
        if not target.startswith("socket:["):
            continue
        inode = int(target[len("socket:[") : -1])
        if inode in out:
            continue
        try:
            sock = socket.socket(fileno=os.dup(int(name)))  # our own descriptor: closing it leaves theirs open
        except OSError:
            continue
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
            peer = sock.getpeername()[0]
        except OSError:
            continue  # listening or not connected
        finally:
            sock.close()
        if len(info) < _SEGS_IN + 4:
            continue
        (received,) = struct.unpack_from("Q", info, _BYTES_RECEIVED)
        segs_out, segs_in = struct.unpack_from("II", info, _SEGS_OUT)
        (sent,) = struct.unpack_from("Q", info, _BYTES_SENT if len(info) >= _BYTES_SENT + 8 else _BYTES_ACKED)
        out[inode] = (peer, sent, received, segs_out, segs_in)
    return out


def scheduler_counters(dask_scheduler: Any) -> dict[str, Any]:
    """For ``client.run_on_scheduler``: the scheduler's TCP counters and the region of each worker host.

    A region's traffic is everything the scheduler exchanges with its hosts (workers, nannies, and a client
    running there, which crosses the same link). A host with workers of several regions (a local cluster on
    one machine) cannot be split by region and is left out.
    """
    from proximate.scheduler_plugin import _worker_region

    regions_of: dict[str, set[str]] = defaultdict(set)
    for ws in dask_scheduler.workers.values():
        region = _worker_region(ws)
        if region:
            regions_of[ws.host].add(region)
    hosts = {host: next(iter(regions)) for host, regions in regions_of.items() if len(regions) == 1}
    return {"hosts": hosts, "sockets": tcp_counters()}


def bytes_by_region(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per region, what the scheduler's connections to its hosts carried between two :func:`scheduler_counters`.

    Returns:
        ``{region: {"payload": bytes both ways, "wire": payload + segments x HEADER_BYTES, "segments": n}}``;
        a socket new since ``before`` counts from zero.
    """
    hosts = {**before.get("hosts", {}), **after.get("hosts", {})}
    old = before.get("sockets", {})
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"payload": 0, "wire": 0, "segments": 0})
    for inode, (peer, sent, received, segs_out, segs_in) in after.get("sockets", {}).items():
        region = hosts.get(peer)
        if region is None:
            continue
        base = old.get(inode)
        if base is not None and base[0] == peer:
            sent, received = sent - base[1], received - base[2]
            segs_out, segs_in = segs_out - base[3], segs_in - base[4]
        entry = out[region]
        entry["payload"] += sent + received
        entry["segments"] += segs_out + segs_in
        entry["wire"] += sent + received + (segs_out + segs_in) * HEADER_BYTES
    return dict(out)
