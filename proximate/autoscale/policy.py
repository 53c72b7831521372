"""Per-region adaptive scaling: what each region's worker count should be, as pure functions.

Dask's own ``Adaptive`` sums one cluster-wide backlog; a task pinned to ``pool-a`` can only run on region a's
workers, so a cluster-wide target would add workers wherever the backend likes. Here every region has its own
bounds, its own backlog and its own cool-down, and nothing in this module does I/O: the backlog comes in as
data (from :func:`proximate.scheduler_plugin.scheduler_backlog`), decisions go out as data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proximate.regions import RegionError

#: Dask's own default for ``distributed.adaptive.target-duration``: enough workers to clear the backlog in it.
DEFAULT_TARGET_DURATION = 5.0
#: A region's target must stay below its worker count this long before a worker is retired: a short lull
#: between two bursts should not cost a worker start (several seconds) a moment later.
DEFAULT_SCALE_DOWN_AFTER = 10.0
#: Seconds between two decisions of the autoscaler's loop.
DEFAULT_SCALE_INTERVAL = 1.0


@dataclass(frozen=True)
class RegionBounds:
    """The fewest and most workers a region may have."""

    minimum: int
    maximum: int

    def clamp(self, n: int) -> int:
        return max(self.minimum, min(self.maximum, n))


def _count(text: str, option: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise RegionError(f"{option} takes a whole number of workers, got {text!r}") from None
    if n < 0:
        raise RegionError(f"{option} must not be negative, got {text!r}")
    return n


def _split(values: Iterable[str | int], option: str, regions: Sequence[str]) -> tuple[int | None, dict[str, int]]:
    """``["3", "a=8"]`` into a default (3) and per-region overrides ({"a": 8}); the last default wins."""
    default: int | None = None
    per_region: dict[str, int] = {}
    for value in values:
        text = str(value).strip()
        name, sep, number = text.partition("=")
        if not sep:
            default = _count(text, option)
            continue
        name = name.strip()
        if name not in regions:
            raise RegionError(
                f"{option} {text!r} names unknown region {name!r}; this cluster has {', '.join(regions) or 'none'}"
            )
        per_region[name] = _count(number.strip(), f"{option} {name}=")
    return default, per_region


def parse_bounds(
    regions: Sequence[str],
    min_workers: Iterable[str | int] = (),
    max_workers: Iterable[str | int] = (),
    *,
    default_minimum: int = 1,
) -> dict[str, RegionBounds]:
    """Each region's bounds from ``--min-workers``/``--max-workers`` values (``N`` or ``REGION=N``, repeatable).

    Args:
        regions: the cluster's region names.
        min_workers: values of ``--min-workers``; a bare number is every region's default, ``a=N`` overrides it.
        max_workers: values of ``--max-workers``, likewise. At least one value is needed.
        default_minimum: a region's minimum when ``min_workers`` gives none for it.

    Returns:
        Region name to its bounds, for every region.

    Raises:
        RegionError: a value is not a whole number, is negative, names an unknown region, a region's minimum
            exceeds its maximum, a maximum is 0, or no maximum is given; the message names the value.
    """
    regions = list(regions)
    min_default, min_over = _split(min_workers, "--min-workers", regions)
    max_default, max_over = _split(max_workers, "--max-workers", regions)
    out: dict[str, RegionBounds] = {}
    for region in regions:
        lo = min_over.get(region, default_minimum if min_default is None else min_default)
        hi = max_over.get(region, max_default)
        if hi is None:
            raise RegionError(f"region {region!r} has no maximum: give --max-workers N or --max-workers {region}=N")
        if hi < 1:
            raise RegionError(f"--max-workers for region {region!r} must be at least 1, got {hi}")
        if lo > hi:
            raise RegionError(f"region {region!r}: --min-workers {lo} is more than --max-workers {hi}")
        out[region] = RegionBounds(lo, hi)
    return out


def check_scaling(
    *,
    min_workers: int | None = None,
    max_workers: int | None = None,
    scale_down_after: float = DEFAULT_SCALE_DOWN_AFTER,
    target_duration: float = DEFAULT_TARGET_DURATION,
    scale_interval: float = DEFAULT_SCALE_INTERVAL,
    spell: Callable[[str], str] = str,
) -> None:
    """Refuse scaling settings no region could follow, naming the setting as its front end spells it.

    One check for every front end: ``proximate cluster up`` and ``proximate autoscale`` (options), the
    ``RegionalCluster`` block (fields) and :class:`AdaptivePolicy` (arguments); per-region bounds are
    :func:`parse_bounds`'s.

    Args:
        min_workers: every region's default minimum, when one is given as a number.
        max_workers: every region's default maximum, likewise.
        scale_down_after: the cool-down before a worker retires, in seconds (0 or more).
        target_duration: seconds within which a backlog should be cleared (more than 0).
        scale_interval: seconds between two decisions (more than 0).
        spell: a setting's name (``"scale_down_after"``) as the user wrote it (``"--scale-down-after"``).

    Raises:
        RegionError: a value is out of range; the message names it and its value.

    Examples:
        >>> check_scaling(min_workers=1, max_workers=3, scale_down_after=0.0)
        >>> check_scaling(target_duration=0, spell=option_name)
        Traceback (most recent call last):
        ...
        proximate.regions.RegionError: --target-duration must be positive, got 0
    """
    if min_workers is not None and max_workers is not None and min_workers > max_workers:
        raise RegionError(f"{spell('min_workers')} {min_workers} is more than {spell('max_workers')} {max_workers}")
    if scale_down_after < 0:
        raise RegionError(f"{spell('scale_down_after')} must not be negative, got {scale_down_after}")
    for name, value in (("target_duration", target_duration), ("scale_interval", scale_interval)):
        if value <= 0:
            raise RegionError(f"{spell(name)} must be positive, got {value}")


def option_name(setting: str) -> str:
    """A scaling setting's command-line option: ``"scale_down_after"`` is ``"--scale-down-after"``.

    Args:
        setting: the setting's Python name.

    Returns:
        The option as the commands spell it.

    Examples:
        >>> option_name("target_duration")
        '--target-duration'
    """
    return "--" + setting.replace("_", "-")


@dataclass(frozen=True)
class WorkerLoad:
    """One worker as the scheduler sees it."""

    address: str
    name: str
    nthreads: int = 1
    processing: int = 0
    nbytes: int = 0
    #: Keys this worker holds that no other worker holds.
    unique_keys: int = 0
    #: Status on the scheduler ("running", "closing_gracefully", ...).
    status: str = "running"


@dataclass(frozen=True)
class RegionBacklog:
    """What one region has to do and what it has to do it with."""

    region: str
    #: Runnable tasks for this region: processing on its workers, plus no-worker tasks waiting for its pool.
    tasks: int = 0
    #: Their expected compute seconds, from the scheduler's task-prefix durations.
    seconds: float = 0.0
    #: Tasks restricted to this region whose inputs are not ready yet (reported, not scaled on; None: not counted).
    waiting: int | None = 0
    workers: tuple[WorkerLoad, ...] = ()

    @classmethod
    def from_dict(cls, region: str, data: Mapping[str, Any]) -> RegionBacklog:
        workers = tuple(WorkerLoad(**w) for w in data.get("workers", ()))
        return cls(region, int(data.get("tasks", 0)), float(data.get("seconds", 0.0)), data.get("waiting", 0), workers)


def desired_workers(
    backlog: RegionBacklog,
    bounds: RegionBounds,
    *,
    target_duration: float = DEFAULT_TARGET_DURATION,
    threads_per_worker: int = 1,
) -> int:
    """Workers the region needs to finish its backlog within ``target_duration``, clamped to its bounds.

    As Dask's ``adaptive_target``, for one region: the expected seconds over the target duration, but never more
    workers than there are tasks to run (a few long tasks do not ask for many workers), and at least one worker
    while anything waits (a region at zero workers would otherwise stay there).
    """
    if backlog.tasks <= 0:
        return bounds.clamp(0)
    threads = max(1, threads_per_worker)
    by_time = math.ceil(backlog.seconds / max(target_duration, 1e-9) / threads)
    by_tasks = math.ceil(backlog.tasks / threads)
    return bounds.clamp(max(1, min(by_time, by_tasks)))


def workers_to_retire(workers: Sequence[WorkerLoad], n: int, minimum: int) -> list[WorkerLoad]:
    """Up to ``n`` idle workers of one region to retire gracefully, the ones holding least data first.

    Never a busy worker (its running task would be rerun), never so many that fewer than ``minimum`` (nor, while
    any of them holds data only it has, fewer than one) running workers remain: that data moves to a worker of
    the same region, so one must stay.
    """
    running = [w for w in workers if w.status == "running"]
    keep = max(minimum, 1 if any(w.unique_keys for w in running) else 0)
    n = min(n, len(running) - keep)
    if n <= 0:
        return []
    idle = sorted((w for w in running if w.processing == 0), key=lambda w: (w.nbytes, w.unique_keys, w.name))
    return idle[:n]


@dataclass
class RegionState:
    """The policy's memory of one region: when it last scaled and since when it has wanted fewer workers."""

    last_up: float = -math.inf
    below_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """What to do in one region now: start ``start`` workers, or retire ``retire``; ``target`` for the record."""

    region: str
    current: int
    target: int
    start: int = 0
    retire: tuple[WorkerLoad, ...] = ()


@dataclass
class AdaptivePolicy:
    """Each region's target between its bounds, with a cool-down before scaling down.

    Scaling up is immediate: a backlog that waits costs time on the critical path. Scaling down waits until the
    target has stayed below the worker count for ``scale_down_after`` seconds, and not sooner than that after the
    region last scaled up (new workers receive stolen work a moment after they register, so right after a scale-up
    the backlog can look smaller than it is).

    Args:
        bounds: each region's minimum and maximum.
        target_duration: seconds within which a region's backlog should be cleared.
        scale_down_after: the cool-down, in seconds.
        threads_per_worker: threads of each worker (targets count workers, backlogs count tasks).
    """

    bounds: Mapping[str, RegionBounds]
    target_duration: float = DEFAULT_TARGET_DURATION
    scale_down_after: float = DEFAULT_SCALE_DOWN_AFTER
    threads_per_worker: int = 1
    state: dict[str, RegionState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_scaling(scale_down_after=self.scale_down_after, target_duration=self.target_duration)

    def decide(self, now: float, backlogs: Mapping[str, RegionBacklog], requested: Mapping[str, int]) -> list[Decision]:
        """One decision per region.

        Args:
            now: a monotonic time in seconds.
            backlogs: each region's backlog and registered workers, as the scheduler reports them.
            requested: workers each region's backend has asked for, registered or still starting; the count to
                compare the target with, so that workers still starting are not started again.
        """
        decisions = []
        for region, bounds in self.bounds.items():
            backlog = backlogs.get(region, RegionBacklog(region))
            state = self.state.setdefault(region, RegionState())
            current = int(requested.get(region, len(backlog.workers)))
            target = desired_workers(
                backlog, bounds, target_duration=self.target_duration, threads_per_worker=self.threads_per_worker
            )
            if target > current:
                state.last_up, state.below_since = now, None
                decisions.append(Decision(region, current, target, start=target - current))
                continue
            if target == current:
                state.below_since = None
                decisions.append(Decision(region, current, target))
                continue
            if state.below_since is None:
                state.below_since = now
            calm = now - max(state.below_since, state.last_up) >= self.scale_down_after
            retire = workers_to_retire(backlog.workers, current - target, bounds.minimum) if calm else []
            # Workers still starting are not in the backlog's list: if some are pending, fewer can be retired.
            decisions.append(Decision(region, current, target, retire=tuple(retire)))
        return decisions
