"""``proximate autoscale``: scale each region's ECS service of workers on its own backlog (production)."""

from __future__ import annotations

import argparse
from typing import Any

from proximate.cli.common import add_tls, tls_from_args
from proximate.cli.scaling import add_scaling_options, bounds_from_args


def register(subparsers: Any) -> None:
    """Add ``autoscale`` to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    autoscale = subparsers.add_parser(
        "autoscale",
        help="scale each region's ECS service of workers on its own backlog (production; runs until SIGTERM)",
    )
    autoscale.add_argument("--scheduler", required=True, help="the multi-region scheduler, tls://host:port")
    autoscale.add_argument(
        "--ecs-service",
        action="append",
        default=[],
        metavar="REGION=AWS_REGION:CLUSTER/SERVICE",
        help="the ECS service running a region's workers (repeat per region)",
    )
    add_scaling_options(autoscale)
    autoscale.add_argument("--threads-per-worker", type=int, default=1, help="threads of each worker task")
    autoscale.add_argument("--ecs-endpoint-url", help="an ECS endpoint other than AWS's (a VPC endpoint)")
    add_tls(autoscale)
    autoscale.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check every value, then scale the services until SIGTERM; print the updates it made.

    Args:
        args: the parsed ``autoscale`` arguments.

    Returns:
        0 once stopped.

    Raises:
        RegionError: a service, a bound, a timing or a TLS file is unusable; nothing has connected then.
    """
    import logging

    from proximate.autoscale.service import parse_ecs_services, run_ecs_autoscaler

    services = parse_ecs_services(args.ecs_service)  # every value checked before anything connects
    bounds = bounds_from_args(args, list(services))
    tls = tls_from_args(args, args.scheduler)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    scaler = run_ecs_autoscaler(
        args.scheduler,
        services,
        bounds,
        security=tls.security() if tls else None,
        endpoint_url=args.ecs_endpoint_url,
        interval=args.scale_interval,
        target_duration=args.target_duration,
        scale_down_after=args.scale_down_after,
        threads_per_worker=args.threads_per_worker,
    )
    updates = ", ".join(f"{r}={n}" for r, n in scaler.backend.updates) or "none"
    print(f"autoscale stopped: desiredCount updates {updates}; {len(scaler.errors)} error(s)", flush=True)
    return 0
