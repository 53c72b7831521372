"""Region routing on the scheduler (``dask scheduler --preload proximate.scheduler_plugin``).

Since dask 2025.4 graphs are materialised and optimised on the scheduler, so nothing a client does can
guarantee placement. This plugin works after materialisation, where nothing can undo it:

* every task whose own arguments name a region's file (a ``RegionPath``, or a table's ``TablePart``: what it
  reads) is restricted to that region whatever its annotations say, so DataFrame reads (dask-expr drops
  annotations) and any new reader route by their data; a task naming files of two regions cannot run anywhere
  and fails at once with ``CrossRegionReadError`` before reading;
* every task derived from region-pinned data is restricted to a region (``pool-<region>: 0``, which restricts
  placement without consuming a slot, so orchestrating tasks cannot deadlock);
* when such a task becomes ready, it is re-pinned to the region that holds most of its input bytes, measured,
  so a task that combines regions runs where most of its input already is and only the smaller side moves;
* restricted tasks are only ever stolen between workers of their own region (``valid_workers``);
* a task whose region has no live worker errs after a bounded time with an error naming the region, and a
  task pinned to a region the cluster does not have errs at once;
* a task waiting for data from another region whose workers its worker has failed to reach for longer than
  the link bound (both regions still reaching the scheduler: the direct path between them is cut) errs with
  ``RegionLinkError`` naming both regions and the link, instead of retrying forever;
* it reports each region's backlog and workers (:func:`scheduler_backlog`) and retires a region's workers so
  that their data stays in the region (:func:`retire_in_region`), for the per-region autoscaler
  (:mod:`proximate.autoscale`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.metrics import monotonic
from distributed.protocol import pickle
from tornado.ioloop import PeriodicCallback

from proximate import config
from proximate.errors import CrossRegionReadError, RegionLinkError, RegionUnavailableError
from proximate.placement import choose_pool, regions_read
from proximate.regions import POOL_PREFIX, region_of_resource

logger = logging.getLogger("proximate.scheduler")

PLUGIN_NAME = "proximate-region-router"
#: The variables ``proximate cluster up`` hands the scheduler it starts (see :mod:`proximate.config`).
REGIONS_ENV = config.env_var("scheduler.regions")
NO_WORKERS_TIMEOUT_ENV = config.env_var("scheduler.no-workers-timeout")
PROPAGATE_ENV = config.env_var("scheduler.propagate")
LINK_TIMEOUT_ENV = config.env_var("scheduler.link-timeout")
HEARTBEAT_INTERVAL_ENV = config.env_var("scheduler.heartbeat-interval")
DEFAULT_NO_WORKERS_TIMEOUT = float(config.default("scheduler.no-workers-timeout"))
#: Worker arrivals and departures the router remembers (for the workers per region over a run).
WORKER_EVENTS = 10_000
#: Seconds a worker's fetches from a peer may keep failing before the tasks waiting on them err. Above Dask's
#: connect timeout (30 s), so a failure is one whole failed attempt and then some: a cut shorter than this
#: heals by itself (Dask retries), a longer one errs within about this bound plus one connect timeout.
DEFAULT_LINK_TIMEOUT = float(config.default("scheduler.link-timeout"))
#: The event topic workers report broken peers on (``worker_plugin.LINK_TOPIC``; not imported from there: the
#: scheduler does not load the worker's preload module).
LINK_TOPIC = "proximate-peer-link"
#: Key prefix of a P2P shuffle's barrier task (``distributed.shuffle._core.barrier_key``). The barrier and the
#: output tasks after it are placed by P2P itself (it pins each output partition to a worker it picks among all
#: workers when the barrier runs); a pool restriction of ours on them could contradict that pin and leave the task
#: with no valid worker, so the router leaves them alone.
P2P_BARRIER_PREFIX = "shuffle-barrier-"


def task_pool(ts: Any) -> str | None:
    """The ``pool-*`` resource a task is restricted to, if any."""
    for resource in ts.resource_restrictions or ():
        if resource.startswith(POOL_PREFIX):
            return resource
    return None


def _key_name(key: Any) -> str:
    return str(key[0]) if isinstance(key, tuple) and key else str(key)


def _placed_by_p2p(ts: Any) -> bool:
    """A P2P barrier, or an output task of one: P2P pins it to a worker itself."""
    if _key_name(ts.key).startswith(P2P_BARRIER_PREFIX):
        return True
    return any(_key_name(d.key).startswith(P2P_BARRIER_PREFIX) for d in ts.dependencies)


def _refuse(what: tuple[str, tuple[str, ...], str]) -> None:
    """The run spec of a task that reads several regions' files: fails naming them, reading nothing."""
    raise CrossRegionReadError(*what)


def _choose_pool(deps: Any) -> str | None:
    """The pool holding most (known) input bytes: :func:`proximate.placement.choose_pool` over the inputs."""
    return choose_pool((task_pool(dts), dts.nbytes) for dts in deps)


class RegionRouter(SchedulerPlugin):
    """Pins derived tasks to regions and fails tasks whose region cannot run them."""

    name = PLUGIN_NAME

    def __init__(
        self,
        declared_regions: list[str] | None = None,
        no_workers_timeout: float = DEFAULT_NO_WORKERS_TIMEOUT,
        propagate: bool = True,
        check_interval: float = 0.5,
        link_timeout: float = DEFAULT_LINK_TIMEOUT,
    ) -> None:
        self.declared_regions = list(declared_regions or [])
        self.no_workers_timeout = float(no_workers_timeout)
        self.link_timeout = float(link_timeout)
        #: (fetching worker, peer) -> scheduler-monotonic time since which every fetch between them failed.
        self.broken_paths: dict[tuple[str, str], float] = {}
        self.link_errors = 0
        self.propagate = propagate
        self.check_interval = check_interval
        self.scheduler: Any = None
        #: Keys whose region we chose (not the user); they may be re-pinned once their inputs are measured.
        self.derived: set[Any] = set()
        self.repinned = 0
        #: Tasks restricted to the region whose files they read (rule 1), and tasks refused for reading several.
        self.reads_pinned = 0
        self.reads_refused = 0
        self._pc: PeriodicCallback | None = None
        #: (wall time, live workers per region just after) at every worker arrival and departure.
        self.worker_events: deque[tuple[float, dict[str, int]]] = deque(maxlen=WORKER_EVENTS)

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        if self._pc is not None:  # started twice (preload, then the scheduler's own plugin start)
            return
        self._pc = PeriodicCallback(self._check, self.check_interval * 1000)
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

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.worker_events.append((time.time(), self.live_regions()))

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.worker_events.append((time.time(), self.live_regions()))

    # -- routing -------------------------------------------------------------------------------------------
    def update_graph(self, scheduler: Any, *, tasks: list[Any], **kwargs: Any) -> None:
        # Reads are pinned by their data even without propagation: a read elsewhere can only fail.
        for key in tasks:
            ts = scheduler.tasks.get(key)
            if ts is not None:
                self._pin_read(ts)
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

    def _pin_read(self, ts: Any) -> None:
        """Rule 1 of :mod:`proximate.placement`: a task that reads a region's files runs in that region."""
        if ts.state not in ("released", "waiting") or ts.run_spec is None:
            return
        if ts.worker_restrictions or ts.host_restrictions:
            return  # placed on a worker by name: the user's choice (a read there fails naming region and path)
        regions = regions_read(ts.run_spec)
        if not regions:
            return
        restrictions = {k: v for k, v in (ts.resource_restrictions or {}).items() if not k.startswith(POOL_PREFIX)}
        region = min(regions)
        restrictions[POOL_PREFIX + region] = 0
        ts.resource_restrictions = restrictions
        ts.loose_restrictions = False
        self.derived.discard(ts.key)
        if len(regions) == 1:
            self.reads_pinned += 1
            return
        # No region can read it all: replace the work by its refusal (it reads nothing, fails at once, and the
        # client gets the error naming the operation, the regions and the task).
        from dask._task_spec import Task

        operation = _key_name(ts.key).rsplit("-", 1)[0]
        ts.run_spec = Task(ts.key, _refuse, (operation, tuple(sorted(regions)), str(ts.key)))
        self.reads_refused += 1
        logger.error("task %r reads regions %s: refused", ts.key, sorted(regions))

    def _assign(self, ts: Any) -> None:
        if task_pool(ts) is not None or not ts.dependencies:
            return
        if _placed_by_p2p(ts):
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

    # -- broken paths between live regions ----------------------------------------------------------------
    def log_event(self, topic: str, msg: Any) -> None:
        """Workers report here (``PeerLinkWatch``) each failed fetch from a peer, and the first success after."""
        if topic != LINK_TOPIC or not isinstance(msg, dict):
            return
        path = (str(msg.get("worker")), str(msg.get("peer")))
        if msg.get("status") == "failing":
            since = monotonic() - float(msg.get("seconds", 0.0))
            self.broken_paths[path] = min(since, self.broken_paths.get(path, since))
        else:
            self.broken_paths.pop(path, None)

    def _check_broken_paths(self) -> None:
        """Fail tasks whose worker has not reached any holder of an input for longer than the link bound."""
        scheduler = self.scheduler
        if scheduler is None or not self.broken_paths:
            return
        now = monotonic()
        unreachable: dict[str, dict[str, float]] = defaultdict(dict)
        for (worker, peer), since in list(self.broken_paths.items()):
            if worker not in scheduler.workers or peer not in scheduler.workers:
                del self.broken_paths[(worker, peer)]  # a lost worker is the no-worker path's business
                continue
            unreachable[worker][peer] = since
        stimulus_id = f"proximate-link-broken-{time.time()}"
        recommendations: dict[Any, str] = {}
        done: set[tuple[str, str]] = set()
        for worker, peers in unreachable.items():
            ws = scheduler.workers[worker]
            for ts in list(ws.processing):
                found = self._link_error(ts, ws, peers, now)
                if found is None:
                    continue
                error, holders = found
                # Forget the paths once they have failed a task: they may be back by the next run, so they must
                # fail again (a fresh report, which still carries how long they have been failing) to fail more.
                done.update((worker, holder) for holder in holders)
                self.link_errors += 1
                recommendations.update(_fail(scheduler, ts, error, stimulus_id, worker=worker))
                # The worker still waits for the input: make it drop the task, as the scheduler does when it
                # releases a task that is processing.
                scheduler.worker_send(worker, {"op": "free-keys", "keys": [ts.key], "stimulus_id": stimulus_id})
        for path in done:
            self.broken_paths.pop(path, None)
        if recommendations:
            scheduler.transitions(recommendations, stimulus_id=stimulus_id)

    def _link_error(
        self, ts: Any, ws: Any, peers: dict[str, float], now: float
    ) -> tuple[RegionLinkError, list[str]] | None:
        """The error for ``ts`` and the holders of the input it blames, if one of its inputs is held only by peers
        that ``ws`` has failed to reach for longer than the bound."""
        for dts in ts.dependencies:
            holders = dts.who_has or set()
            if not holders or ws in holders:
                continue
            since = [peers.get(h.address) for h in holders]
            if any(s is None for s in since) or now - max(since) <= self.link_timeout:  # type: ignore[type-var]
                continue  # some holder is reachable (or not failing long enough): Dask will get it
            peer = min(holders, key=lambda h: peers[h.address])
            error = RegionLinkError(
                _worker_region(ws) or "?",
                _worker_region(peer) or "?",
                str(ts.key),
                now - peers[peer.address],
                worker=f"{ws.name} ({ws.address})",
                peer=f"{peer.name} ({peer.address})",
            )
            return error, [h.address for h in holders]
        return None

    # -- fail fast -----------------------------------------------------------------------------------------
    def _check(self) -> None:
        self._check_broken_paths()
        self._check_unrunnable()

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
            recommendations.update(_fail(scheduler, ts, error, stimulus_id))
        scheduler.transitions(recommendations, stimulus_id=stimulus_id)


def _fail(scheduler: Any, ts: Any, error: Exception, stimulus_id: str, **kwargs: Any) -> dict[Any, str]:
    """Log ``error`` and move ``ts`` to erred with it; returns the scheduler's further recommendations."""
    logger.error("%s", error)
    return scheduler.transition(
        ts.key,
        "erred",
        exception=pickle.dumps(error),
        cause=ts.key,
        exception_text=str(error),
        stimulus_id=stimulus_id,
        **kwargs,
    )


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
        "link_timeout": router.link_timeout,
        "broken_paths": [list(path) for path in router.broken_paths],
        "repinned": router.repinned,
        "reads_pinned": router.reads_pinned,
        "reads_refused": router.reads_refused,
    }


def worker_timeline(dask_scheduler: Any, since: float | None = None) -> dict[str, Any] | None:
    """For ``client.run_on_scheduler``: the scheduler's time, live workers per region now, and each change of them
    since ``since`` (scheduler wall time) as ``(time, counts)``; None without the router."""
    router = dask_scheduler.plugins.get(PLUGIN_NAME)
    if router is None:
        return None
    events = [(t, counts) for t, counts in router.worker_events if since is not None and t >= since]
    return {"now": time.time(), "live": router.live_regions(), "events": events}


#: Above this many tasks the backlog report does not count waiting tasks (see ``scheduler_backlog``).
WAITING_SCAN_LIMIT = 100_000


def _prefix_duration(scheduler: Any, ts: Any) -> float:
    """Expected compute seconds of a task, as the scheduler estimates it for adaptive scaling.

    The average of its prefix's measured durations; twice the longest execution seen while none has finished;
    the scheduler's ``unknown-task-duration`` before anything ran.
    """
    prefix = ts.prefix
    if prefix is not None:
        if prefix.duration_average >= 0:
            return float(prefix.duration_average)
        if prefix.max_exec_time > 0:
            return 2.0 * float(prefix.max_exec_time)
    return float(scheduler.UNKNOWN_TASK_DURATION)


def _worker_region(ws: Any) -> str | None:
    for resource in ws.resources:
        region = region_of_resource(resource)
        if region:
            return region
    return None


def scheduler_backlog(dask_scheduler: Any) -> dict[str, Any]:
    """For ``client.run_on_scheduler``: each region's backlog and workers, plus what belongs to no region.

    A region's runnable tasks are those processing on its workers (restricted tasks are assigned to a worker
    at once, never queued) and those in ``no-worker`` waiting for its pool (a region scaled to zero). Tasks
    restricted to it whose inputs are not ready are reported as ``waiting``. Unrestricted tasks can run in any
    region; they are reported as ``unpinned`` and drive no region's scaling.

    Returns:
        ``{"regions": {region: {"tasks", "seconds", "waiting", "workers": [...]}}, "unpinned": {...}}``, each
        worker as the fields of :class:`proximate.autoscale.policy.WorkerLoad`.
    """
    regions: dict[str, dict[str, Any]] = {}
    router = dask_scheduler.plugins.get(PLUGIN_NAME)
    for region in router.known_regions() if router is not None else ():
        regions[region] = {"tasks": 0, "seconds": 0.0, "waiting": 0, "workers": []}

    def entry(region: str) -> dict[str, Any]:
        return regions.setdefault(region, {"tasks": 0, "seconds": 0.0, "waiting": 0, "workers": []})

    for ws in dask_scheduler.workers.values():
        region = _worker_region(ws)
        if region is None:
            continue
        e = entry(region)
        e["tasks"] += len(ws.processing)
        e["seconds"] += sum(_prefix_duration(dask_scheduler, ts) for ts in ws.processing)
        e["workers"].append(
            {
                "address": ws.address,
                "name": str(ws.name),
                "nthreads": ws.nthreads,
                "processing": len(ws.processing),
                "nbytes": int(ws.nbytes),
                "unique_keys": sum(1 for ts in ws.has_what if len(ts.who_has or ()) == 1),
                "status": ws.status.name,
            }
        )
    unpinned = {"tasks": len(dask_scheduler.queued), "seconds": 0.0}
    for ts in dask_scheduler.unrunnable:
        pool = task_pool(ts)
        if pool is None:
            unpinned["tasks"] += 1
            continue
        e = entry(pool[len(POOL_PREFIX) :])
        e["tasks"] += 1
        e["seconds"] += _prefix_duration(dask_scheduler, ts)
    # Counting waiting tasks walks every task; past WAITING_SCAN_LIMIT that would hold the scheduler's event loop
    # for a noticeable time every poll, and the count drives no decision, so it is left out (None).
    if len(dask_scheduler.tasks) > WAITING_SCAN_LIMIT:
        for e in regions.values():
            e["waiting"] = None
    else:
        for ts in dask_scheduler.tasks.values():
            if ts.state == "waiting":
                pool = task_pool(ts)
                if pool is not None:
                    entry(pool[len(POOL_PREFIX) :])["waiting"] += 1
    return {"regions": regions, "unpinned": unpinned}


async def retire_in_region(dask_scheduler: Any, workers: list[str]) -> dict[str, Any]:
    """For ``client.run_on_scheduler``: retire workers gracefully, their data moving to their own region.

    Dask's ``retire_workers`` moves a retiring worker's only copies to whichever running worker uses least
    memory, which may be in another region: the bytes would cross regions and the next task needing them would
    read them across too. So each key only a retiring worker holds is first copied to the least loaded running
    worker of the same region; then ``retire_workers(close_workers=True)`` finds a replica in place, drops its
    own and closes the worker. A worker whose region has no other running worker to take its data is not
    retired. Addresses the scheduler no longer knows are ignored.

    Not airtight: Dask's ReduceReplicas policy may drop the fresh copy instead of the retiring worker's before
    the retirement drops it, and a task may finish on the worker between the copy and the retirement; such a key
    then moves where Dask chooses. No data is lost either way; ``left_region`` counts these keys.

    Returns:
        ``{"retired": [addresses], "kept": {address: reason}, "copied": n, "left_region": n}``, where
        ``left_region`` counts keys of retired workers that ended up held only outside their region.
    """
    retiring = {a for a in workers if a in dask_scheduler.workers}
    kept: dict[str, str] = {a: "unknown to the scheduler" for a in workers if a not in dask_scheduler.workers}
    plan: dict[str, dict[Any, list[str]]] = {}
    ok: list[str] = []
    moved: dict[Any, str] = {}
    for address in sorted(retiring):
        ws = dask_scheduler.workers[address]
        region = _worker_region(ws)
        peers = [
            p
            for p in dask_scheduler.running
            if p.address not in retiring and p.address != address and _worker_region(p) == region
        ]
        only_here = [ts for ts in ws.has_what if ts.who_has == {ws}]
        if only_here and not peers:
            kept[address] = f"holds the only copy of {len(only_here)} key(s) and region {region!r} has no other worker"
            continue
        ok.append(address)
        for ts in only_here:
            target = min(peers, key=lambda p: p.nbytes + sum(len(w) for w in plan.get(p.address, {})))
            plan.setdefault(target.address, {})[ts.key] = [address]
            moved[ts.key] = region or ""
    copied = 0
    if plan:
        results = await asyncio.gather(
            *(dask_scheduler.gather_on_worker(addr, who_has) for addr, who_has in plan.items())
        )
        failed = set().union(*results)
        copied = sum(len(w) for w in plan.values()) - len(failed)
    retired: list[str] = []
    if ok:
        info = await dask_scheduler.retire_workers(workers=ok, close_workers=True)
        retired = sorted(info)
        for address in set(ok) - set(retired):
            kept[address] = "retire_workers did not retire it"
    left = 0
    for key, region in moved.items():
        ts = dask_scheduler.tasks.get(key)
        if ts is not None and ts.who_has and all(_worker_region(w) != region for w in ts.who_has):
            left += 1
    if left:
        logger.warning("retiring %s: %d key(s) ended up outside their region", retired, left)
    return {"retired": retired, "kept": kept, "copied": copied, "left_region": left}


def router_from_env(environ: dict[str, str] | None = None) -> RegionRouter:
    """The router the ``proximate.scheduler.*`` settings describe (:mod:`proximate.config`)."""
    regions = config.get_list("scheduler.regions", environ)
    timeout = config.get_float("scheduler.no-workers-timeout", environ)
    propagate = config.get_bool("scheduler.propagate", environ)
    link_timeout = config.get_float("scheduler.link-timeout", environ)
    return RegionRouter(
        regions,
        no_workers_timeout=DEFAULT_NO_WORKERS_TIMEOUT if timeout is None else timeout,
        propagate=propagate,
        link_timeout=DEFAULT_LINK_TIMEOUT if link_timeout is None else link_timeout,
    )


def set_heartbeat_floor(seconds: float) -> None:
    """Make this scheduler ask its workers to heartbeat no more often than every ``seconds``.

    Worker heartbeats are most of an idle cluster's traffic (about 0.33 GB per region per day with two workers,
    measured on the testbed), and Dask has no setting for their interval: the scheduler tells each worker
    ``heartbeat_interval(number of workers)`` (0.5 s up to 10 workers) in every reply. So the scheduler's module
    function is wrapped, in the scheduler process only, to return at least ``seconds``. Dask derives two more
    intervals from it: the workers' time to live is at least 10 heartbeats, and clients heartbeat 10 times less
    often. A cut link is still noticed by the broken stream (``distributed.comm.timeouts.tcp``).
    """
    import distributed.scheduler as dask_scheduler

    dask_interval = getattr(dask_scheduler, "_dask_heartbeat_interval", dask_scheduler.heartbeat_interval)

    def heartbeat_interval(n: int) -> float:
        return max(dask_interval(n), seconds)

    dask_scheduler._dask_heartbeat_interval = dask_interval  # type: ignore[attr-defined]
    dask_scheduler.heartbeat_interval = heartbeat_interval


async def dask_setup(scheduler: Any) -> None:
    """Preload hook: install the router (and a heartbeat floor, when ``PROXIMATE_HEARTBEAT_INTERVAL`` is set)."""
    floor = config.get_float("scheduler.heartbeat-interval")
    if floor:
        set_heartbeat_floor(floor)
        logger.info("workers heartbeat every %s s at most (%s)", floor, config.source("scheduler.heartbeat-interval"))
    await scheduler.register_scheduler_plugin(router_from_env(), name=PLUGIN_NAME, idempotent=False)
