"""``proximate demo``: the end-to-end demo on the embedded defaults (``--quick``: the cluster part only)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from proximate.cli.common import find_command, require_demo_extra, terminate_on_sigterm


def register(subparsers: Any) -> None:
    """Add ``demo`` to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    demo = subparsers.add_parser("demo", help="the end-to-end demo on the embedded defaults")
    demo.add_argument("--workdir", default="proximate-demo", help="where regions' data and results go")
    demo.add_argument("--workers-per-region", type=int, default=2)
    demo.add_argument("--quick", action="store_true", help="only the two-region cluster part, without Prefect")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo: the quick one from the core, the full one through its ``proximate.commands`` entry point.

    Args:
        args: the parsed ``demo`` arguments (with ``entry_points``, set by ``main``).

    Returns:
        0 once the demo finished.

    Raises:
        CommandUnavailableError: the full demo without the demo extra or its entry point.
    """
    if args.quick:  # the cluster part only: generated data, no S3 server, no Prefect
        from proximate.testing.quick_demo import run_demo
    else:  # the full demo lives with the flows it runs (the core does not import Prefect)
        require_demo_extra()
        run_demo = find_command("demo", args.entry_points)

    terminate_on_sigterm()
    run_demo(workdir=Path(args.workdir), workers_per_region=args.workers_per_region)
    return 0
