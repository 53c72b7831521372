"""``proximate cluster up``: a local multi-region Dask cluster, fixed or autoscaled, until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from proximate import config
from proximate.cli.common import add_tls, terminate_on_sigterm, tls_from_args
from proximate.cli.scaling import add_scaling_options, bounds_from_args
from proximate.regions import RegionError


def register(subparsers: Any) -> None:
    """Add ``cluster`` (with its ``up``) to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    cluster = subparsers.add_parser("cluster", help="a local multi-region Dask cluster")
    csub = cluster.add_subparsers(dest="cluster_command", required=True)
    up = csub.add_parser("up", help="start it, print the scheduler address, run until interrupted")
    up.add_argument(
        "--region",
        action="append",
        required=True,
        metavar="NAME=ROOT",
        help="a region and the folder holding its data; repeat for each region",
    )
    up.add_argument(
        "--workers-per-region",
        type=int,
        help="workers each region starts with (default 2; with --max-workers, each region's minimum)",
    )
    add_scaling_options(up, when="with --max-workers: ", hide_interval=True)
    up.add_argument("--threads-per-worker", type=int, default=1)
    up.add_argument("--port", type=int, default=0, help="scheduler port (0: any free port)")
    up.add_argument(
        "--dashboard",
        action="store_true",
        help="serve the Dask dashboard (and /health, /metrics) on loopback; without it no process serves HTTP",
    )
    up.add_argument(
        "--no-workers-timeout",
        type=float,
        default=float(config.default("scheduler.no-workers-timeout")),
        help="seconds a task may wait for a region with no live worker before it errs",
    )
    add_tls(up)
    up.set_defaults(func=run)


def _bounds(args: argparse.Namespace, region_names: list[str]):
    """Each region's scaling bounds from ``--min-workers``/``--max-workers``, or ``None`` for fixed workers."""
    if not args.min_workers and not args.max_workers:
        return None
    bounds = bounds_from_args(args, region_names)
    if args.workers_per_region is not None:
        for name, b in bounds.items():
            if b.clamp(args.workers_per_region) != args.workers_per_region:
                raise RegionError(
                    f"--workers-per-region {args.workers_per_region} is outside region {name!r}'s "
                    f"--min-workers {b.minimum} .. --max-workers {b.maximum}"
                )
    return bounds


def run(args: argparse.Namespace) -> int:
    """Start the cluster, print its address (and the dashboard's), and scale it until SIGTERM or Ctrl-C.

    Args:
        args: the parsed ``cluster up`` arguments.

    Returns:
        0 once interrupted (the cluster stopped).

    Raises:
        RegionError: a region, a bound or a TLS file is unusable; nothing has started then.
    """
    from proximate.cluster import LocalRegionalCluster, parse_region_arg, validate_regions

    regions = validate_regions([parse_region_arg(r) for r in args.region])  # before anything starts
    bounds = _bounds(args, [r.name for r in regions])  # likewise
    if bounds is None:
        workers: int | dict[str, int] = 2 if args.workers_per_region is None else args.workers_per_region
    else:  # each region starts at its minimum (or the count given), then follows its own backlog
        start = args.workers_per_region
        workers = {name: b.minimum if start is None else start for name, b in bounds.items()}
    if isinstance(workers, int) and workers < 0:
        raise RegionError(f"--workers-per-region must not be negative, got {workers}")
    terminate_on_sigterm()
    cluster = LocalRegionalCluster(
        regions,
        workers_per_region=workers,
        threads_per_worker=args.threads_per_worker,
        scheduler_port=args.port,
        dashboard=args.dashboard,
        no_workers_timeout=args.no_workers_timeout,
        tls=tls_from_args(args),
    )
    try:
        cluster.start()
        print(cluster.address, flush=True)
        summary = ", ".join(f"{r.name}={r.root}" for r in cluster.regions)
        if bounds is None:
            print(f"# {workers} worker(s) per region: {summary}", file=sys.stderr, flush=True)
        else:
            scaling = ", ".join(f"{n} {b.minimum}..{b.maximum}" for n, b in bounds.items())
            print(f"# autoscaling workers per region ({scaling}): {summary}", file=sys.stderr, flush=True)
        if cluster.dashboard_link:
            print(f"# dashboard: {cluster.dashboard_link}", file=sys.stderr, flush=True)
        if bounds is None:
            while True:
                signal.pause()
        from proximate.autoscale import autoscaled

        with autoscaled(
            cluster,
            bounds,
            interval=args.scale_interval,
            scale_down_after=args.scale_down_after,
            target_duration=args.target_duration,
        ):
            while True:
                signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.close()
