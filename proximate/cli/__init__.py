"""The ``proximate`` command: local cluster, production workers, and the demo."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from proximate.cli import autoscale, catalog, cluster, demo, deploy_nightly, sync, testbed, up, worker
from proximate.cli.common import (
    COMMANDS_GROUP,
    DEMO_EXTRA_MODULES,
    CommandUnavailableError,
    find_command,
)
from proximate.errors import ProximateError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["COMMANDS_GROUP", "DEMO_EXTRA_MODULES", "CommandUnavailableError", "build_parser", "find_command", "main"]

# One module per command, each with register(subparsers) and run(args); this order is `proximate --help`'s.
COMMAND_MODULES = (cluster, worker, sync, testbed, catalog, demo, up, autoscale, deploy_nightly)


def _exit_now(code: int) -> None:
    """End a one-shot command without the interpreter's teardown: freeing botocore's loaded models and every
    module's objects costs 50-80 ms of a short sync (measured), and nothing is left to do by then (the sync
    made its files and manifest durable and the lock goes with the process)."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    """The ``proximate`` parser, every command registered by its module.

    Returns:
        The parser; each command's parsed arguments carry ``func``, the command module's ``run``.

    Examples:
        >>> build_parser().parse_args(["deploy-nightly"]).pool
        'proximate-local'
    """
    parser = argparse.ArgumentParser(prog="proximate", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, entry_points: Iterable[EntryPoint] | None = None) -> int:
    """Run one command.

    Args:
        argv: the arguments (default: the process's).
        entry_points: where commands living outside the core are found (default: the installed ones).

    Returns:
        The exit status.

    Examples:
        >>> main(["sync", "s3://era5-bucket/2024/", "/fsx/era5"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.entry_points = entry_points
    try:
        code = int(args.func(args) or 0)
    except ProximateError as exc:  # expected: bad input, or a part that failed; the message names it
        print(f"proximate: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except Exception:  # a bug: the traceback says where, rather than passing for bad input
        traceback.print_exc()
        print(f"proximate: internal error in {args.command!r} (a bug; the traceback above says where)", file=sys.stderr)
        code = 1
    if argv is None and getattr(args, "one_shot", False):  # this process is the command (the console script)
        _exit_now(code)
    return code
