"""The autoscaler's loop: read every region's backlog from the scheduler, decide, act through a backend.

Where it runs: in the process that owns the backend, talking to the scheduler through a client
(``run_on_scheduler``), not inside the scheduler. The local backend's worker processes are children of the
cluster's process, which alone can start and reap them; and a backend's calls (boto3 with retries and backoff,
seconds when a platform is slow) must not block the scheduler's event loop, nor can a backend that fails take
the scheduler down with it. The scheduler keeps only what needs its state: the per-region backlog
(:func:`proximate.scheduler_plugin.scheduler_backlog`) and retiring workers without their data leaving the
region (:func:`proximate.scheduler_plugin.retire_in_region`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proximate.autoscale.backends import Backend
from proximate.autoscale.policy import AdaptivePolicy, Decision, RegionBacklog

logger = logging.getLogger("proximate.autoscale")

DEFAULT_INTERVAL = 1.0


class ClientSchedulerView:
    """The scheduler as the autoscaler sees it, through a ``distributed.Client``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def backlog(self) -> dict[str, Any]:
        from proximate.scheduler_plugin import scheduler_backlog

        return self.client.run_on_scheduler(scheduler_backlog)

    def retire(self, addresses: list[str]) -> dict[str, Any]:
        from proximate.scheduler_plugin import retire_in_region

        return self.client.run_on_scheduler(retire_in_region, workers=addresses)


@dataclass
class Sample:
    """One step of the record: each region's registered workers, requested workers, target and backlog."""

    time: float
    workers: dict[str, int]
    requested: dict[str, int]
    targets: dict[str, int]
    tasks: dict[str, int]


@dataclass
class Autoscaler:
    """Scales each region on its own backlog, one :meth:`step` at a time (or in a thread: :meth:`start`).

    Args:
        scheduler: ``backlog()`` and ``retire(addresses)``, e.g. :class:`ClientSchedulerView`.
        backend: acts on decisions.
        policy: decides.
        interval: seconds between steps in the thread.
        clock: monotonic seconds (tests pass their own).
    """

    scheduler: Any
    backend: Backend
    policy: AdaptivePolicy
    interval: float = DEFAULT_INTERVAL
    clock: Callable[[], float] = time.monotonic
    #: One sample per step: the workers per region over the run.
    history: list[Sample] = field(default_factory=list)
    #: Every retirement the scheduler reported (its ``retire_in_region`` answer).
    retirements: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def step(self) -> list[Decision]:
        """Read, decide, act once. Errors are logged and recorded, never raised (the next step tries again)."""
        try:
            report = self.scheduler.backlog()
        except Exception as exc:  # a scheduler briefly unreachable must not end the loop
            self._error(f"reading the backlog failed: {type(exc).__name__}: {exc}")
            return []
        backlogs = {r: RegionBacklog.from_dict(r, d) for r, d in report.get("regions", {}).items()}
        requested = {r: self.backend.requested(r) for r in self.policy.bounds}
        decisions = self.policy.decide(self.clock(), backlogs, requested)
        for d in decisions:
            if d.start:
                logger.info("autoscale: region %s %d -> %d worker(s)", d.region, d.current, d.target)
                self.backend.scale_up(d.region, d.start)
            elif d.retire:
                self._retire(d)
        self.history.append(
            Sample(
                time=time.time(),
                workers={r: len(b.workers) for r, b in backlogs.items() if r in self.policy.bounds},
                requested={r: self.backend.requested(r) for r in self.policy.bounds},
                targets={d.region: d.target for d in decisions},
                tasks={r: b.tasks for r, b in backlogs.items()},
            )
        )
        return decisions

    def _retire(self, d: Decision) -> None:
        addresses = [w.address for w in d.retire]
        try:
            result = self.scheduler.retire(addresses)
        except Exception as exc:
            self._error(f"retiring {addresses} in region {d.region} failed: {type(exc).__name__}: {exc}")
            return
        self.retirements.append(result)
        by_address = {w.address: w.name for w in d.retire}
        names = [by_address[a] for a in result.get("retired", ()) if a in by_address]
        logger.info("autoscale: region %s retired %s (kept %s)", d.region, names, result.get("kept"))
        if names:
            self.backend.retired(d.region, names)

    def _error(self, message: str) -> None:
        logger.warning("autoscale: %s", message)
        self.errors.append(message)

    # -- in a thread -----------------------------------------------------------------------------------------
    def start(self) -> Autoscaler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="proximate-autoscale", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.step()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Autoscaler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
