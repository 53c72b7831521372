"""Backends: what turns a region's target into workers that exist (processes here, ECS tasks in production)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proximate.regions import RegionError

if TYPE_CHECKING:
    from proximate.cluster import LocalRegionalCluster

logger = logging.getLogger("proximate.autoscale")


class Backend:
    """What the autoscaler needs from whatever runs a region's workers.

    The autoscaler decides; a backend only acts, one region at a time. Another backend (Kubernetes: a
    Deployment's replicas per region; a batch system: one job per worker) implements:

    * ``regions``: the region names it can scale.
    * :meth:`requested`: the workers it has asked for in a region, registered with the scheduler or still
      starting. The autoscaler compares its target with this count, so it must include workers still starting
      (else each poll would start them again) and exclude ones known to be gone.
    * :meth:`scale_up`: ask for ``n`` more workers in a region; return without waiting for them to register.
    * :meth:`retired`: the scheduler has already retired these workers gracefully (their data moved to the
      region's other workers, the worker processes told to close): stop what is left of them and ask for that
      many fewer, so that nothing restarts them.
    * :meth:`close`: release clients; the workers themselves are the cluster's to stop.

    None of them may raise for a failed call to the platform: a backend retries what it can, then records the
    failure in :attr:`errors` and logs it; the autoscaler tries again at its next step.
    """

    regions: Sequence[str] = ()

    def __init__(self) -> None:
        #: (time, region, message) of every call that failed after its retries.
        self.errors: list[tuple[float, str, str]] = []

    def requested(self, region: str) -> int:
        raise NotImplementedError

    def scale_up(self, region: str, n: int) -> None:
        raise NotImplementedError

    def retired(self, region: str, names: Sequence[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""

    def _report(self, region: str, message: str) -> None:
        logger.error("autoscale backend, region %s: %s", region, message)
        self.errors.append((time.time(), region, message))


class LocalBackend(Backend):
    """Worker processes of a :class:`~proximate.cluster.LocalRegionalCluster`, started and stopped by PID.

    Runs in the process that owns the cluster (only it can start and reap its children).
    """

    def __init__(self, cluster: LocalRegionalCluster, *, stop_grace: float = 10.0) -> None:
        super().__init__()
        self.cluster = cluster
        self.regions = cluster.region_names
        self.stop_grace = stop_grace

    def requested(self, region: str) -> int:
        return len(self.cluster.worker_processes(region))

    def scale_up(self, region: str, n: int) -> None:
        for _ in range(n):
            try:
                self.cluster.start_worker(region, wait=False)
            except (OSError, RegionError) as exc:
                self._report(region, f"could not start a worker: {exc}")
                return

    def retired(self, region: str, names: Sequence[str]) -> None:
        try:
            seconds = self.cluster.stop_workers(names, grace=self.stop_grace)
        except OSError as exc:
            self._report(region, f"could not stop workers {list(names)}: {exc}")
            return
        logger.info("autoscale: region %s stopped %s", region, {n: round(s, 1) for n, s in seconds.items()})


@dataclass(frozen=True)
class ECSService:
    """Where one region's workers run: an ECS service in a cluster in an AWS region."""

    cluster: str
    service: str
    aws_region: str


class ECSBackend(Backend):
    """Each region's workers are the tasks of one ECS service; the target becomes its ``desiredCount``.

    One boto3 ECS client per AWS region (a client is bound to its region's endpoint and credentials scope).
    A worker the scheduler retired exits on its own; lowering ``desiredCount`` by the same number right after
    keeps ECS from starting a replacement (one may start in between; the autoscaler retires it later, idle).

    Args:
        services: proximate region name to its ECS service.
        client_factory: ``aws_region -> ECS client``; by default ``boto3.client("ecs", region_name=...)``.
        attempts: calls per request before it is reported as failed.
        backoff: seconds before the second attempt, doubling each time.
        bounds: if given, every desired count is clamped to the region's bounds (a second fence behind the
            policy's, for a hand-edited or stale target).
    """

    def __init__(
        self,
        services: Mapping[str, ECSService],
        *,
        client_factory: Callable[[str], Any] | None = None,
        attempts: int = 3,
        backoff: float = 0.5,
        bounds: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if client_factory is None:
            import boto3

            def client_factory(aws_region: str) -> Any:
                return boto3.client("ecs", region_name=aws_region)

        self.services = dict(services)
        self.regions = list(self.services)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.bounds = dict(bounds or {})
        self.clients = {s.aws_region: client_factory(s.aws_region) for s in self.services.values()}
        #: The desiredCount last set (or read) per region: what :meth:`requested` answers.
        self.desired: dict[str, int] = {}
        #: Every update_service call that succeeded: (region, desiredCount), for the record.
        self.updates: list[tuple[str, int]] = []
        for region in self.regions:
            self.desired[region] = self._read_desired(region)

    def _call(self, region: str, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` with retries; ``None`` (reported) when every attempt failed. Never raises."""
        delay = self.backoff
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as exc:  # botocore's errors and any transport failure alike
                last = f"{type(exc).__name__}: {exc}"
                logger.warning("autoscale: %s for region %s failed (attempt %d): %s", what, region, attempt, last)
                if attempt < self.attempts:
                    time.sleep(delay)
                    delay *= 2
        self._report(region, f"{what} failed after {self.attempts} attempts: {last}")
        return None

    def _read_desired(self, region: str) -> int:
        svc = self.services[region]
        out = self._call(
            region,
            "describe_services",
            lambda: self.clients[svc.aws_region].describe_services(cluster=svc.cluster, services=[svc.service]),
        )
        with contextlib.suppress(TypeError, KeyError, IndexError):
            return int(out["services"][0]["desiredCount"])
        return 0

    def _set(self, region: str, n: int) -> None:
        bounds = self.bounds.get(region)
        if bounds is not None:
            n = bounds.clamp(n)
        n = max(0, n)
        if n == self.desired.get(region):
            return
        svc = self.services[region]
        out = self._call(
            region,
            f"update_service desiredCount={n}",
            lambda: self.clients[svc.aws_region].update_service(
                cluster=svc.cluster, service=svc.service, desiredCount=n
            ),
        )
        if out is not None:
            self.desired[region] = n
            self.updates.append((region, n))

    def requested(self, region: str) -> int:
        return self.desired.get(region, 0)

    def scale_up(self, region: str, n: int) -> None:
        self._set(region, self.requested(region) + n)

    def retired(self, region: str, names: Sequence[str]) -> None:
        self._set(region, self.requested(region) - len(names))
