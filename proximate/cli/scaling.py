"""The scaling options of ``cluster up`` and ``autoscale``: registered and checked here, once.

The checks themselves are :func:`proximate.autoscale.parse_bounds` and :func:`proximate.autoscale.check_scaling`,
which the ``RegionalCluster`` block's validator calls too.
"""

from __future__ import annotations

import argparse

from proximate.autoscale.policy import (
    DEFAULT_SCALE_DOWN_AFTER,
    DEFAULT_SCALE_INTERVAL,
    DEFAULT_TARGET_DURATION,
    RegionBounds,
    check_scaling,
    option_name,
    parse_bounds,
)
from proximate.regions import RegionError


def add_scaling_options(parser: argparse.ArgumentParser, *, when: str = "", hide_interval: bool = False) -> None:
    """Add ``--min-workers``, ``--max-workers``, ``--scale-down-after``, ``--target-duration``, ``--scale-interval``.

    Args:
        parser: the command's parser.
        when: what the options' help starts with when they apply only sometimes (``"with --max-workers: "``).
        hide_interval: leave ``--scale-interval`` out of the help (a local cluster's tests tune it, users need not).

    Examples:
        >>> parser = argparse.ArgumentParser()
        >>> add_scaling_options(parser)
        >>> parser.parse_args(["--max-workers", "4", "--max-workers", "a=8"]).max_workers
        ['4', 'a=8']
    """
    # the bounds are repeatable N|REGION=N (a default, then per-region overrides); the timings are seconds
    bounds = (
        ("--min-workers", f"{when}the fewest workers a region scales down to (default 1); REGION=N overrides one"),
        ("--max-workers", "scale each region's workers on its own backlog up to N; REGION=N overrides one region"),
    )
    for option, text in bounds:
        parser.add_argument(option, action="append", default=[], metavar="N|REGION=N", help=f"{text}; repeatable")
    timings = (
        (
            "--scale-down-after",
            DEFAULT_SCALE_DOWN_AFTER,
            "how long a region must need fewer workers before one retires",
        ),
        (
            "--target-duration",
            DEFAULT_TARGET_DURATION,
            "a region gets enough workers to clear its backlog in this time",
        ),
        ("--scale-interval", DEFAULT_SCALE_INTERVAL, "time between two scaling decisions"),
    )
    for option, default, text in timings:
        shown = not (hide_interval and option == "--scale-interval")
        help_text = f"{when}{text}" if shown else argparse.SUPPRESS
        parser.add_argument(option, type=float, default=default, metavar="SECONDS", help=help_text)


def bounds_from_args(args: argparse.Namespace, region_names: list[str]) -> dict[str, RegionBounds]:
    """Each region's bounds from the options :func:`add_scaling_options` added, after checking all of them.

    Args:
        args: the parsed arguments.
        region_names: the regions that scale.

    Returns:
        Region name to its bounds.

    Raises:
        RegionError: no ``--max-workers``, or a value out of range; the message names the option.

    Examples:
        >>> parser = argparse.ArgumentParser()
        >>> add_scaling_options(parser)
        >>> bounds_from_args(parser.parse_args(["--max-workers", "3"]), ["a"])
        {'a': RegionBounds(minimum=1, maximum=3)}
    """
    if not args.max_workers:
        needs = "--min-workers needs --max-workers" if args.min_workers else "give --max-workers"
        raise RegionError(f"{needs} N (or REGION=N for every region)")
    bounds = parse_bounds(region_names, args.min_workers, args.max_workers)
    check_scaling(
        scale_down_after=args.scale_down_after,
        target_duration=args.target_duration,
        scale_interval=args.scale_interval,
        spell=option_name,
    )
    return bounds
