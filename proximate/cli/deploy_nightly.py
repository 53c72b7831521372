"""``proximate deploy-nightly``: a scheduled nightly deployment per saved Region block with a ``nightly_cron``."""

from __future__ import annotations

import argparse
from typing import Any

from proximate.cli.common import find_command


def register(subparsers: Any) -> None:
    """Add ``deploy-nightly`` to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    nightly = subparsers.add_parser(
        "deploy-nightly",
        help="one scheduled nightly deployment per saved Region block with a nightly_cron (and none without)",
    )
    nightly.add_argument("--pool", default="proximate-local", help="the work pool the deployments run on")
    nightly.add_argument("--cluster", default="proximate-cluster", help="the RegionalCluster block the runs use")
    nightly.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Apply the nightly deployments through the ``deploy-nightly`` entry point (it imports Prefect).

    Args:
        args: the parsed ``deploy-nightly`` arguments (with ``entry_points``, set by ``main``).

    Returns:
        The entry point's exit status.
    """
    deploy = find_command("deploy-nightly", args.entry_points)  # lives with the deployments (imports Prefect)
    return int(deploy(["--pool", args.pool, "--cluster", args.cluster]))
