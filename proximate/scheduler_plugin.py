"""Region routing on the scheduler (``dask scheduler --preload proximate.scheduler_plugin``).

Since dask 2025.4 graphs are materialised and optimised on the scheduler, so nothing a client does can
guarantee placement. This plugin works after materialisation, where nothing can undo it:

* every task derived from region-pinned data is restricted to a region (``pool-<region>: 0``, which restricts
  placement without consuming a slot, so orchestrating tasks cannot deadlock);
* when such a task becomes ready, it is re-pinned to the region that holds most of its input bytes, measured,
  so a task that combines regions runs where most of its input already is and only the smaller side moves;
* restricted tasks are only ever stolen between workers of their own region (``valid_workers``);
* a task whose region has no live worker errs after a bounded time with an error naming the region, and a
  task pinned to a region the cluster does not have errs at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.metrics import monotonic
from distributed.protocol import pickle
from tornado.ioloop import PeriodicCallback

from proximate.errors import RegionUnavailableError
from proximate.regions import POOL_PREFIX, region_of_resource

logger = logging.getLogger("proximate.scheduler")

PLUGIN_NAME = "proximate-region-router"
REGIONS_ENV = "PROXIMATE_REGIONS"
NO_WORKERS_TIMEOUT_ENV = "PROXIMATE_NO_WORKERS_TIMEOUT"
PROPAGATE_ENV = "PROXIMATE_PROPAGATE"
DEFAULT_NO_WORKERS_TIMEOUT = 60.0


def task_pool(ts: Any) -> str | None:
    """The ``pool-*`` resource a task is restricted to, if any."""
    for resource in ts.resource_restrictions or ():
        if resource.startswith(POOL_PREFIX):
            return resource
    return None


def _choose_pool(deps: Any) -> str | None:
    """The pool holding most (known) input bytes; ties go to the pool with more inputs, then by name."""
    weight: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for dts in deps:
        pool = task_pool(dts)
        if pool is None:
            continue
        weight[pool] += max(int(dts.nbytes), 0)
        count[pool] += 1
    if not count:
        return None
    return max(count, key=lambda p: (weight[p], count[p], p))


class RegionRouter(SchedulerPlugin):
    """Pins derived tasks to regions and fails tasks whose region cannot run them."""

    name = PLUGIN_NAME

    def __init__(
        self,
        declared_regions: list[str] | None = None,
        no_workers_timeout: float = DEFAULT_NO_WORKERS_TIMEOUT,
        propagate: bool = True,
        check_interval: float = 0.5,
    ) -> None:
        self.declared_regions = list(declared_regions or [])
        self.no_workers_timeout = float(no_workers_timeout)
        self.propagate = propagate
        self.check_interval = check_interval
        self.scheduler: Any = None
        #: Keys whose region we chose (not the user); they may be re-pinned once their inputs are measured.
        self.derived: set[Any] = set()
        self.repinned = 0
        self._pc: PeriodicCallback | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        if self._pc is not None:  # started twice (preload, then the scheduler's own plugin start)
            return
        self._pc = PeriodicCallback(self._check_unrunnable, self.check_interval * 1000)
        self._pc.start()

    async def close(self) -> None:
        if self._pc is not None:
            self._pc.stop()

    # -- regions -------------------------------------------------------------------------------------------
    def known_regions(self) -> list[str]:
        seen = {region_of_resource(r) for r in (self.scheduler.resources if self.scheduler else {})}
        return sorted({*self.declared_regions, *(r for r in seen if r)})

    def live_regions(self) -> dict[str, int]:
        """Region name to number of live workers offering its pool."""
        out: dict[str, int] = {}
        for ws in self.scheduler.workers.values():
            for resource in ws.resources:
                region = region_of_resource(resource)
                if region:
                    out[region] = out.get(region, 0) + 1
        return out

    # -- routing -------------------------------------------------------------------------------------------
    def update_graph(self, scheduler: Any, *, tasks: list[Any], **kwargs: Any) -> None:
        if not self.propagate:
            return
        new = set(tasks)
        done: set[Any] = set()
        for key in tasks:
            stack: list[tuple[Any, bool]] = [(key, False)]
            while stack:
                k, expanded = stack.pop()
                if k in done:
                    continue
                ts = scheduler.tasks.get(k)
                if ts is None:
                    done.add(k)
                    continue
                if not expanded:
                    stack.append((k, True))
                    stack.extend((d.key, False) for d in ts.dependencies if d.key in new and d.key not in done)
                    continue
                done.add(k)
                self._assign(ts)

    def _assign(self, ts: Any) -> None:
        if task_pool(ts) is not None or not ts.dependencies:
            return
        if ts.worker_restrictions or ts.host_restrictions or ts.actor:
            return  # the user placed it explicitly
        if ts.state not in ("released", "waiting"):
            return
        pool = _choose_pool(ts.dependencies)
        if pool is None:
            return
        ts.resource_restrictions = {**(ts.resource_restrictions or {}), pool: 0}
        ts.loose_restrictions = False
        self.derived.add(ts.key)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten":
            self.derived.discard(key)
            return
        if finish != "memory" or not self.derived:
            return
        ts = self.scheduler.tasks.get(key)
        if ts is None:
            return
        for dts in ts.dependents:
            if dts.key in self.derived and dts.state == "waiting" and not dts.waiting_on:
                self._repin(dts)

    def _repin(self, ts: Any) -> None:
        """All inputs are in memory now: run where most of their bytes are."""
        pool = _choose_pool(ts.dependencies)
        current = task_pool(ts)
        if pool is None or pool == current:
            return
        restrictions = {k: v for k, v in (ts.resource_restrictions or {}).items() if k != current}
        restrictions[pool] = 0
        ts.resource_restrictions = restrictions
        self.repinned += 1

    # -- fail fast -----------------------------------------------------------------------------------------
    def _check_unrunnable(self) -> None:
        scheduler = self.scheduler
        if scheduler is None or not scheduler.unrunnable:
            return
        now = monotonic()
        known = set(self.known_regions())
        failures: list[tuple[Any, RegionUnavailableError]] = []
        for ts, since in list(scheduler.unrunnable.items()):
            pool = task_pool(ts)
            if pool is None:
                continue
            region = pool[len(POOL_PREFIX) :]
            if region not in known:
                failures.append((ts, RegionUnavailableError(region, str(ts.key), 0.0, tuple(sorted(known)))))
            elif now - since > self.no_workers_timeout:
                failures.append((ts, RegionUnavailableError(region, str(ts.key), self.no_workers_timeout)))
        if not failures:
            return
        stimulus_id = f"proximate-region-unavailable-{time.time()}"
        recommendations: dict[Any, str] = {}
        for ts, error in failures:
            if ts.state != "no-worker":
                continue
            logger.error("%s", error)
            recommendations.update(
                scheduler.transition(
                    ts.key,
                    "erred",
                    exception=pickle.dumps(error),
                    cause=ts.key,
                    exception_text=str(error),
                    stimulus_id=stimulus_id,
                )
            )
        scheduler.transitions(recommendations, stimulus_id=stimulus_id)


def scheduler_regions(dask_scheduler: Any) -> dict[str, Any]:
    """For ``client.run_on_scheduler``: what the router knows about regions."""
    router = dask_scheduler.plugins.get(PLUGIN_NAME)
    if router is None:
        return {"router": False, "known": [], "live": {}}
    return {
        "router": True,
        "known": router.known_regions(),
        "live": router.live_regions(),
        "no_workers_timeout": router.no_workers_timeout,
        "repinned": router.repinned,
    }


def router_from_env(environ: dict[str, str] | None = None) -> RegionRouter:
    env = os.environ if environ is None else environ
    regions = [r for r in env.get(REGIONS_ENV, "").split(",") if r]
    timeout = float(env.get(NO_WORKERS_TIMEOUT_ENV, DEFAULT_NO_WORKERS_TIMEOUT))
    propagate = env.get(PROPAGATE_ENV, "1").lower() not in ("0", "false", "no")
    return RegionRouter(regions, no_workers_timeout=timeout, propagate=propagate)


async def dask_setup(scheduler: Any) -> None:
    """Preload hook: install the router."""
    await scheduler.register_scheduler_plugin(router_from_env(), name=PLUGIN_NAME, idempotent=False)
