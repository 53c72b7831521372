"""The production autoscaler: a long-running process that scales each region's ECS service on its backlog.

    proximate autoscale --scheduler tls://scheduler:8786 \
        --ecs-service eu-west-2=eu-west-2:proximate-eu-west-2/dask-workers \
        --ecs-service us-east-1=us-east-1:proximate-us-east-1/dask-workers \
        --min-workers 1 --max-workers 10 --tls-ca-file ca.pem --tls-cert client.pem --tls-key client-key.pem

It runs beside the scheduler (in the client region, where the scheduler is), reads every region's backlog from
the scheduler through a Dask client and sets each region's ECS service ``desiredCount`` through boto3, one client
per AWS region. It is a separate process on purpose: a slow or failing AWS call must not block the scheduler, and
the autoscaler can be restarted without touching the cluster. ECS is told to stop a worker only after the
scheduler retired it (its data moved to another worker of its region first).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from proximate.autoscale.backends import ECSBackend, ECSService
from proximate.autoscale.loop import Autoscaler, ClientSchedulerView
from proximate.autoscale.policy import AdaptivePolicy, RegionBounds
from proximate.regions import RegionError, validate_region_name

logger = logging.getLogger("proximate.autoscale")

_SERVICE = re.compile(r"^(?P<region>[^=]+)=(?P<aws>[a-z0-9-]+):(?P<cluster>[^/]+)/(?P<service>.+)$")


def parse_ecs_services(values: Iterable[str]) -> dict[str, ECSService]:
    """``REGION=AWS_REGION:CLUSTER/SERVICE`` values (one per proximate region) as :class:`ECSService`.

    Raises:
        RegionError: a value is malformed, names an invalid region, or a region is given twice; the message
            names the value.
    """
    out: dict[str, ECSService] = {}
    for value in values:
        m = _SERVICE.match(value)
        if not m:
            raise RegionError(
                f"--ecs-service {value!r}: expected REGION=AWS_REGION:CLUSTER/SERVICE, e.g."
                " eu-west-2=eu-west-2:proximate/dask-workers"
            )
        region = validate_region_name(m["region"])
        if region in out:
            raise RegionError(f"--ecs-service: region {region!r} is given twice")
        out[region] = ECSService(m["cluster"], m["service"], m["aws"])
    if not out:
        raise RegionError("give at least one --ecs-service REGION=AWS_REGION:CLUSTER/SERVICE")
    return out


def run_ecs_autoscaler(
    scheduler_address: str,
    services: Mapping[str, ECSService],
    bounds: Mapping[str, RegionBounds],
    *,
    security: Any = None,
    endpoint_url: str | None = None,
    interval: float = 1.0,
    target_duration: float = 5.0,
    scale_down_after: float = 10.0,
    threads_per_worker: int = 1,
    stop: threading.Event | None = None,
    on_ready: Callable[[Autoscaler], None] | None = None,
) -> Autoscaler:
    """Scale each region's ECS service on its backlog until ``stop`` is set (or SIGTERM/SIGINT in the main thread).

    Args:
        scheduler_address: The multi-region scheduler (``tls://`` in production).
        services: Each proximate region's ECS service.
        bounds: Each region's fewest and most workers (ECS tasks).
        security: ``distributed.Security`` for a ``tls://`` scheduler.
        endpoint_url: An ECS endpoint other than AWS's (a VPC interface endpoint; moto in the tests).
        interval: Seconds between steps.
        target_duration: A region gets enough workers to clear its backlog in this time.
        scale_down_after: How long a region must need fewer workers before one is retired.
        threads_per_worker: Threads of each worker task (the policy counts tasks, ECS counts workers).
        stop: Set to end the loop.
        on_ready: Called with the autoscaler once it is connected (tests, status reporting).

    Returns:
        The autoscaler, its ``history`` (workers per region over the run), ``errors`` and the backend's ``updates``.
    """
    import boto3
    from distributed import Client

    def ecs_client(aws_region: str) -> Any:
        return boto3.client("ecs", region_name=aws_region, endpoint_url=endpoint_url)

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    policy = AdaptivePolicy(
        dict(bounds),
        target_duration=target_duration,
        scale_down_after=scale_down_after,
        threads_per_worker=threads_per_worker,
    )
    backend = ECSBackend(services, client_factory=ecs_client, bounds=bounds)
    client_kwargs: dict[str, Any] = {"timeout": 60, "set_as_default": False}
    if security is not None:
        client_kwargs["security"] = security
    with Client(scheduler_address, **client_kwargs) as client:
        scaler = Autoscaler(ClientSchedulerView(client), backend, policy, interval=interval)
        logger.info(
            "autoscale: %s on %s", ", ".join(f"{r} {b.minimum}..{b.maximum}" for r, b in bounds.items()),
            scheduler_address,
        )  # fmt: skip
        if on_ready is not None:
            on_ready(scaler)
        while not stop.wait(interval):
            scaler.step()
    return scaler
