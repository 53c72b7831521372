"""Client-side helpers: which client to use, which regions exist, which worker is in which region."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from proximate.errors import RegionUnavailableError
from proximate.regions import region_of_resource, validate_region_name


@contextlib.contextmanager
def client_context(client: Any = None) -> Iterator[Any]:
    """The client to use here: the one given; inside a task on a worker (a Prefect task under a
    DaskTaskRunner), a worker client that secedes while it waits so it never holds a thread another task
    of its region needs; else the default client."""
    from distributed import default_client, get_worker, worker_client

    if client is not None:
        yield client
        return
    try:
        get_worker()
    except ValueError:
        yield default_client()
        return
    with worker_client() as wc:
        yield wc


@contextlib.contextmanager
def connect(address: str, **client_kwargs: Any) -> Iterator[Any]:
    """A Dask client on the scheduler at ``address`` for the length of the block, not made the default.

    Args:
        address: The scheduler, ``tcp://`` or ``tls://``.
        **client_kwargs: Passed to ``distributed.Client`` (``security=`` for a TLS cluster).
    """
    from distributed import Client

    client_kwargs = {"timeout": 60, **client_kwargs, "set_as_default": False}
    with Client(address, **client_kwargs) as client:
        yield client


def worker_regions(client: Any) -> dict[str, str]:
    """Worker address to region, read from the ``pool-<region>`` resources the workers advertise."""
    out: dict[str, str] = {}
    for addr, info in client.scheduler_info(n_workers=-1)["workers"].items():
        for resource in info.get("resources", {}):
            region = region_of_resource(resource)
            if region:
                out[addr] = region
    return out


def cluster_regions(client: Any) -> dict[str, Any]:
    """What the scheduler's router knows: declared and seen regions, live workers per region."""
    from proximate.scheduler_plugin import scheduler_regions

    info = client.run_on_scheduler(scheduler_regions)
    if not info["router"]:  # a plain Dask scheduler: fall back to what the workers advertise
        live: dict[str, int] = {}
        for region in worker_regions(client).values():
            live[region] = live.get(region, 0) + 1
        info = {"router": False, "known": sorted(live), "live": live}
    return info


def require_region(client: Any, region: str) -> None:
    """Refuse a region the cluster has never heard of, at once; a known region without workers errs later,
    after the scheduler's bound, in case workers are on their way."""
    validate_region_name(region)
    info = cluster_regions(client)
    if region not in info["known"]:
        raise RegionUnavailableError(region, "(not submitted)", 0.0, tuple(info["known"]))
