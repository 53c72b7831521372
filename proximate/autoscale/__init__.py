"""Each region scales its own workers on its own backlog.

* :mod:`~proximate.autoscale.policy`: pure: bounds from the command line, a region's desired workers, which
  workers to retire, the adaptive policy with its cool-down.
* :mod:`~proximate.autoscale.backends`: what acts on a decision: :class:`Backend` (what a backend implements),
  :class:`LocalBackend` (worker processes of a local cluster), :class:`ECSBackend` (an ECS service per region).
* :mod:`~proximate.autoscale.loop`: the loop, in the process that owns the backend (why: its docstring).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from proximate.autoscale.backends import Backend, ECSBackend, ECSService, LocalBackend
from proximate.autoscale.loop import Autoscaler, ClientSchedulerView, Sample
from proximate.autoscale.policy import (
    DEFAULT_SCALE_DOWN_AFTER,
    DEFAULT_SCALE_INTERVAL,
    DEFAULT_TARGET_DURATION,
    AdaptivePolicy,
    RegionBacklog,
    RegionBounds,
    WorkerLoad,
    check_scaling,
    desired_workers,
    option_name,
    parse_bounds,
    workers_to_retire,
)

if TYPE_CHECKING:
    from proximate.cluster import LocalRegionalCluster

__all__ = [
    "AdaptivePolicy",
    "Autoscaler",
    "Backend",
    "ClientSchedulerView",
    "ECSBackend",
    "ECSService",
    "LocalBackend",
    "RegionBacklog",
    "RegionBounds",
    "Sample",
    "WorkerLoad",
    "autoscaled",
    "check_scaling",
    "desired_workers",
    "option_name",
    "parse_bounds",
    "workers_to_retire",
]


@contextlib.contextmanager
def autoscaled(
    cluster: LocalRegionalCluster,
    bounds: Mapping[str, RegionBounds],
    *,
    interval: float = DEFAULT_SCALE_INTERVAL,
    scale_down_after: float = DEFAULT_SCALE_DOWN_AFTER,
    target_duration: float = DEFAULT_TARGET_DURATION,
) -> Iterator[Autoscaler]:
    """Scale a started local cluster's regions within ``bounds`` for the length of the block (in a thread)."""
    policy = AdaptivePolicy(
        bounds,
        target_duration=target_duration,
        scale_down_after=scale_down_after,
        threads_per_worker=cluster.threads_per_worker,
    )
    with cluster.client(set_as_default=False, timeout=30) as client:
        scaler = Autoscaler(ClientSchedulerView(client), LocalBackend(cluster), policy, interval=interval)
        with scaler:
            yield scaler
