"""``pool()`` and ``propagate_pools()``: the Met Office / dask-worker-pools vocabulary, made to hold.

``pool(region)`` restricts what is created inside it to that region's workers with a resource requirement
of 0, which restricts placement without consuming a slot. Propagation to derived tasks happens on the
scheduler (see :mod:`proximate.scheduler_plugin`), so ``propagate_pools()`` only keeps client-side
optimisation from fusing pinned layers when the graph is optimised in this process (a LocalCluster).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dask

from proximate.regions import pool_resource


@contextlib.contextmanager
def pool(region: str) -> Iterator[None]:
    """Pin every Dask task created inside the block to ``region``.

    Args:
        region: The region whose workers (those offering the resource ``pool-<region>``) run the tasks.

    Examples:
        Code written for dask-worker-pools runs unchanged:

        >>> with proximate.pool("ecmwf"):
        ...     forecast = xr.open_dataset("/fsx/ecmwf/forecast.nc", chunks={})
        >>> with proximate.propagate_pools():
        ...     anomaly = (forecast.tas - forecast.tas.mean("time")).compute()  # runs in ecmwf
    """
    with dask.annotate(resources={pool_resource(region): 0}):
        yield


@contextlib.contextmanager
def propagate_pools() -> Iterator[None]:
    """Run what derives from pinned data where that data is.

    On a proximate scheduler this is always on; the context stays for code written against
    dask-worker-pools, and switches off client-side fusion for in-process clusters.

    Examples:
        >>> with proximate.propagate_pools():
        ...     result = (forecast.tas.mean("realization") - observations.tas).compute()
    """
    with dask.config.set({"optimization.fuse.active": False, "optimization.annotations.fuse": False}):
        yield


def compute(*collections: Any, region: str, client: Any = None, **kwargs: Any) -> Any:
    """Compute whole collections inside one region: every task of their graphs is pinned to ``region``.

    This is the way to route DataFrames: dask-expr drops task annotations, but a restriction given at
    compute time applies to the whole materialised graph.

    Args:
        *collections: Dask collections (DataFrames, arrays, delayed) to compute.
        region: The region every task of their graphs runs in.
        client: The Dask client; the default one otherwise.
        **kwargs: Passed to ``Client.compute``.

    Returns:
        The computed values (a tuple for several).

    Raises:
        RegionUnavailableError: ``region`` is not one the cluster knows.

    Examples:
        >>> trips = proximate.open_table("ecmwf", "trips/")
        >>> mean_distance = proximate.compute(trips.trip_distance.mean(), region="ecmwf")
    """
    from proximate.client import client_context, require_region

    with client_context(client) as c:
        require_region(c, region)
        futures = c.compute(list(collections), resources={pool_resource(region): 0}, **kwargs)
        results = c.gather(futures)
    return results[0] if len(results) == 1 else tuple(results)
