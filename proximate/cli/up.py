"""``proximate up``: the embedded default kept running for the Prefect UI (it lives with the deployments)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from proximate.cli.common import add_command, find_command, require_demo_extra, terminate_on_sigterm


def register(subparsers: Any) -> None:
    """Add ``up`` to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    add_command(
        subparsers,
        "up",
        run,
        help="the embedded default kept running for the Prefect UI: server, cluster, work pool, worker, deployments",
        description="Start a Prefect server, the demo's data and a two-region Dask cluster, save the blocks, apply "
        "the deployments and start a worker; print the UI address and what to click; Ctrl-C stops all of it.",
        arguments={
            "--workdir": {"default": "proximate-demo", "help": "where data, catalog, Prefect state and logs go"},
            "--workers-per-region": {"type": int, "default": 2},
            "--port": {"type": int, "default": 0, "help": "the Prefect server's port on 127.0.0.1 (0: any free port)"},
            "--prefect-database": "the Prefect server's database, postgresql+asyncpg://USER:PASS@HOST:PORT/DB "
            "(default: SQLite)",
            "--catalog": {
                "choices": ("sqlite", "opensearch"),
                "default": "sqlite",
                "help": "the catalog: the embedded SQLite file (default), or a real OpenSearch node started here "
                "(Java 17 and Maven; the first start downloads its jars)",
            },
        },
    )


def run(args: argparse.Namespace) -> int:
    """Run ``up`` through its ``proximate.commands`` entry point until SIGTERM or Ctrl-C.

    Args:
        args: the parsed ``up`` arguments (with ``entry_points``, set by ``main``).

    Returns:
        0 once everything stopped.

    Raises:
        CommandUnavailableError: without the demo extra or the entry point.
    """
    require_demo_extra()  # the demo's data comes from its S3 server
    run_up = find_command("up", args.entry_points)  # lives with the deployments (the core does not import Prefect)
    terminate_on_sigterm()
    run_up(
        workdir=Path(args.workdir),
        workers_per_region=args.workers_per_region,
        port=args.port,
        prefect_database=args.prefect_database,
        catalog=args.catalog,
    )
    return 0
