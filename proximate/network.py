"""Network defaults of the processes we start: which address a worker binds and which schedulers it may talk to
in plaintext.

Dask's RPC runs whatever function a peer sends (``rpc(worker).run(...)``), so a worker must listen only where
the cluster reaches it, and must not carry its traffic in the clear across a network others share. A worker
therefore binds the one address it advertises (given, or the local interface on the route to its scheduler),
never a wildcard, and refuses a plaintext ``tcp://`` scheduler unless that scheduler is on loopback or the
operator said ``--allow-plaintext``.
"""

from __future__ import annotations

import ipaddress
import socket

from proximate.errors import ProximateInputError

#: Dask transports that encrypt (and, with a CA, authenticate) the connection.
ENCRYPTED_SCHEMES = frozenset({"tls", "wss"})


class PlaintextSchedulerError(ProximateInputError):
    """A plaintext scheduler address off loopback, without the operator's explicit consent."""


def _scheme_host_port(address: str) -> tuple[str, str, int]:
    """``tcp://[::1]:8786`` as ``("tcp", "::1", 8786)``; Dask's default scheme (tcp) when none is given."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    host, port = parse_host_port(location, default_port=8786)
    return scheme, host, int(port)


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback one (127.0.0.0/8, ::1).

    A name that does not resolve counts as not loopback: nothing proves the traffic stays on this machine.

    Args:
        host: an IP address or a host name.

    Returns:
        Whether connections to it never leave this machine.

    Examples:
        >>> is_loopback_host("127.0.0.1"), is_loopback_host("::1"), is_loopback_host("192.0.2.7")
        (True, True, False)
    """
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_scheduler_transport(scheduler: str, *, allow_plaintext: bool = False) -> None:
    """Refuse a plaintext scheduler that is not on loopback, unless ``allow_plaintext``.

    Args:
        scheduler: the scheduler's address (``tls://``, ``tcp://`` or a bare ``host:port``, which Dask takes as
            tcp).
        allow_plaintext: the operator accepts plaintext off loopback (a private network they trust).

    Raises:
        PlaintextSchedulerError: a plaintext scheduler off loopback without ``allow_plaintext``; the message
            names the address and both ways out.

    Examples:
        >>> check_scheduler_transport("tcp://127.0.0.1:8786")
        >>> check_scheduler_transport("tls://10.0.0.5:8786")
        >>> check_scheduler_transport("tcp://10.0.0.5:8786", allow_plaintext=True)
        >>> try:
        ...     check_scheduler_transport("tcp://10.0.0.5:8786")
        ... except PlaintextSchedulerError as exc:
        ...     print(str(exc)[:66])
        refusing plaintext scheduler tcp://10.0.0.5:8786 (not on loopback)
    """
    scheme, host, _port = _scheme_host_port(scheduler)
    if scheme in ENCRYPTED_SCHEMES or allow_plaintext or is_loopback_host(host):
        return
    raise PlaintextSchedulerError(
        f"refusing plaintext scheduler {scheduler} (not on loopback): use tls:// with --tls-ca-file, --tls-cert "
        "and --tls-key, or pass --allow-plaintext on a network only the cluster can reach"
    )


def local_address_toward(scheduler: str) -> str:
    """The address of this machine's interface on the route to ``scheduler``: the one to bind and advertise.

    A UDP socket "connected" to the scheduler makes the kernel choose the route and source address without
    sending a packet (Dask's ``get_ip`` does the same, for the address it advertises).

    Args:
        scheduler: the scheduler's address, any scheme.

    Returns:
        An IPv4 or IPv6 address (``127.0.0.1`` for a scheduler on loopback).

    Raises:
        ProximateInputError: the scheduler's host does not resolve or no route leads to it (the message names it).

    Examples:
        >>> local_address_toward("tcp://127.0.0.1:8786")
        '127.0.0.1'
    """
    _scheme, host, port = _scheme_host_port(scheduler)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ProximateInputError(f"scheduler host {host!r} does not resolve: {exc}") from None
    errors = []
    for family, kind, proto, _canon, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.connect(sockaddr)
            except OSError as exc:
                errors.append(f"{sockaddr[0]}: {exc.strerror or exc}")
                continue
            return probe.getsockname()[0].split("%")[0]
    raise ProximateInputError(f"no route to scheduler {scheduler}: {'; '.join(errors)}")
