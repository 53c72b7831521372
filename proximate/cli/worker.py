"""``proximate worker``: one region's Dask worker, as an ECS task in that region runs it."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any

from proximate.cli.common import add_tls, tls_from_args
from proximate.regions import RegionError, validate_region_name


def register(subparsers: Any) -> None:
    """Add ``worker`` to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    worker = subparsers.add_parser("worker", help="one region's Dask worker, as an ECS task in that region runs it")
    worker.add_argument("--region", required=True)
    worker.add_argument("--root", required=True, help="the region's data root (its FSx mount)")
    worker.add_argument("--scheduler", required=True, help="scheduler address, tcp:// or tls://")
    worker.add_argument("--nthreads", type=int, default=os.cpu_count() or 1)
    worker.add_argument("--name", help="worker name (default: <region>-<host>-<pid>)")
    worker.add_argument(
        "--host", help="the address to listen on and advertise (default: this machine's address toward the scheduler)"
    )
    worker.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="accept a tcp:// scheduler off loopback: unencrypted, unauthenticated; only on a network the cluster owns",
    )
    worker.add_argument(
        "--http-address",
        default="127.0.0.1:0",
        metavar="HOST:PORT|none",
        help="where the worker serves /health and /metrics (default: loopback, any port; none: no HTTP server)",
    )
    worker.add_argument("--memory-limit", default="auto")
    worker.add_argument("--no-nanny", action="store_true")
    worker.add_argument(
        "--no-rejoin",
        action="store_true",
        help="shut down when the scheduler is lost instead of restarting to rejoin (the default, with the nanny)",
    )
    add_tls(worker)
    worker.set_defaults(func=run)


def _network(args: argparse.Namespace) -> tuple[str, str | None]:
    """The address ``proximate worker`` binds (and advertises) and where its HTTP server listens (None: none).

    A plaintext scheduler off loopback is refused unless ``--allow-plaintext``; without ``--host`` the worker
    binds the interface on the route to the scheduler, never Dask's default of every interface.
    """
    from proximate.network import check_scheduler_transport, local_address_toward

    check_scheduler_transport(args.scheduler, allow_plaintext=args.allow_plaintext)
    host = args.host or local_address_toward(args.scheduler)
    return host, None if args.http_address.lower() == "none" else args.http_address


def run(args: argparse.Namespace) -> int:
    """Check the region, root, TLS and network, then become the worker (``execve``: signals reach it directly).

    Args:
        args: the parsed ``worker`` arguments.

    Returns:
        Never, once the worker has taken over the process.

    Raises:
        RegionError: the region name, its root or the TLS files are unusable.
    """
    from proximate.cluster import worker_command, worker_env

    validate_region_name(args.region)
    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise RegionError(f"root directory of region {args.region!r} does not exist: {root}")
    tls = tls_from_args(args, args.scheduler)
    host, http_address = _network(args)
    name = args.name or f"{args.region}-{socket.gethostname()}-{os.getpid()}"
    cmd = worker_command(
        scheduler=args.scheduler,
        region=args.region,
        name=name,
        nthreads=args.nthreads,
        host=host,
        http_address=http_address,
        nanny=not args.no_nanny,
        tls=tls,
        memory_limit=args.memory_limit,
        rejoin=not args.no_rejoin,
    )
    env = worker_env(args.region, root.resolve())
    os.execve(cmd[0], cmd, env)  # the worker takes over this process: signals reach it directly
    return 0  # pragma: no cover
