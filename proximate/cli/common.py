"""What several commands share: how a command is declared, TLS options, SIGTERM as Ctrl-C, and commands found
through entry points."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proximate.errors import ProximateInputError
from proximate.regions import RegionError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from proximate.cluster import TLSFiles

COMMANDS_GROUP = "proximate.commands"
# The demo extra, as the demo's S3 server needs it: moto, and the web framework moto's server runs on.
DEMO_EXTRA_MODULES = ("moto", "flask")


class CommandUnavailableError(ProximateInputError):
    """A command whose part is not installed: exit status 2, as for bad input, with the fix in the message."""


def add_command(
    subparsers: Any,
    name: str,
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str | None = None,
    arguments: Mapping[str, str | Mapping[str, Any]] | None = None,
    **defaults: Any,
) -> argparse.ArgumentParser:
    """Declare a command: its parser under ``subparsers``, its arguments in order, and ``run`` as its function.

    Args:
        subparsers: The ``proximate`` parser's subparsers (or a command's own, for ``catalog export-stac``).
        name: The command's name.
        run: What ``main`` calls with the parsed arguments; returns the exit status.
        help: One line for the list of commands.
        description: What ``--help`` of the command says first (nothing when omitted).
        arguments: Each argument (a positional's name, or an option) and its help text, or argparse's keywords
            for it (``{"type": int, "help": ...}``).
        **defaults: More attributes the parsed arguments carry (``one_shot=True``).

    Returns:
        The command's parser, for options added by another helper (:func:`add_tls`).

    Examples:
        >>> commands = argparse.ArgumentParser().add_subparsers()
        >>> p = add_command(commands, "echo", lambda args: 0, help="say it", arguments={"text": "what to say"})
        >>> p.parse_args(["hi"]).text
        'hi'
    """
    parser = subparsers.add_parser(name, help=help, description=description)
    for flag, spec in (arguments or {}).items():
        parser.add_argument(flag, **({"help": spec} if isinstance(spec, str) else spec))
    parser.set_defaults(func=run, **defaults)
    return parser


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so context managers clean up exactly as on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def add_tls(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-ca-file``, ``--tls-cert`` and ``--tls-key`` to a command's parser (read by :func:`tls_from_args`)."""
    parser.add_argument("--tls-ca-file", help="CA certificate that signs scheduler and worker certificates")
    parser.add_argument("--tls-cert", help="this process's certificate")
    parser.add_argument("--tls-key", help="this process's private key")


def tls_from_args(args: argparse.Namespace, scheduler: str | None = None) -> TLSFiles | None:
    """The TLS files given on the command line, or ``None`` for plaintext.

    Args:
        args: the parsed arguments of a command that called :func:`add_tls`.
        scheduler: the scheduler address the command connects to, if any: a ``tls://`` one needs the files.

    Returns:
        The three files, each checked to exist, or ``None`` when none is given.

    Raises:
        RegionError: only some of the three are given, one does not exist, or a tls:// scheduler has none.

    Examples:
        >>> tls_from_args(argparse.Namespace(tls_ca_file=None, tls_cert=None, tls_key=None)) is None
        True
    """
    from proximate.cluster import TLSFiles

    given = [args.tls_ca_file, args.tls_cert, args.tls_key]
    if not any(given):
        if scheduler is not None and scheduler.startswith("tls://"):
            raise RegionError("a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key")
        return None
    if not all(given):
        raise RegionError("TLS needs all of --tls-ca-file, --tls-cert and --tls-key")
    for path in given:
        if not Path(path).is_file():
            raise RegionError(f"TLS file does not exist: {path}")
    return TLSFiles(args.tls_ca_file, args.tls_cert, args.tls_key)


def find_command(name: str, entry_points: Iterable[EntryPoint] | None = None) -> Callable[..., Any]:
    """The function registered as command ``name`` in the ``proximate.commands`` entry points.

    Commands that live outside the core (the full demo runs the Prefect flows) are found this way so that
    ``proximate/`` never imports their packages; look-ups happen when a command runs, never at start-up.

    Args:
        name: the entry point's name, e.g. ``"demo"``.
        entry_points: where to look; by default the installed ones of the group.

    Returns:
        The loaded entry point (importing its module).

    Raises:
        CommandUnavailableError: no entry point of that name (the installation predates it).

    Examples:
        >>> from importlib.metadata import EntryPoint
        >>> find_command("up", [EntryPoint("up", "os.path:join", COMMANDS_GROUP)]).__name__
        'join'
    """
    if entry_points is None:
        from importlib.metadata import entry_points as installed

        entry_points = installed(group=COMMANDS_GROUP)
    for entry_point in entry_points:
        if entry_point.name == name:
            return entry_point.load()
    raise CommandUnavailableError(
        f"no {name!r} command is installed (entry point group {COMMANDS_GROUP!r}): reinstall proximate, "
        "pip install -e '.[demo]'"
    )


def require_demo_extra() -> None:
    """Refuse to go on without the demo extra (the demo's and the testbed's S3 servers are moto).

    Raises:
        CommandUnavailableError: a module of the extra is not installed; the message says how to install it.
    """
    from importlib.util import find_spec

    if any(find_spec(module) is None for module in DEMO_EXTRA_MODULES):
        raise CommandUnavailableError("the demo needs the demo extra: pip install 'proximate[demo]'")
