"""The analysis flows' Prefect task: one per region, opening that region's datasets where they live.

Submitted inside ``proximate.pool(region)`` on the flow's DaskTaskRunner, it runs on a worker of the region,
which can see the region's files: the datasets are opened right there (no Dask submit per dataset) and come
back lazy, their reads pinned to the region. One task per region, not per dataset: each Prefect task costs
a few tenths of a second of orchestration before its function runs, and the regions' tasks run side by side.
"""

from __future__ import annotations

from typing import Any

import xarray as xr
from prefect import task

from proximate.datasets import RegionPath
from proximate.io import open_local


@task(name="open-in-region", task_run_name="open {region}: {names}")
def open_in_region_task(
    region: str, names: list[str], datasets: list[RegionPath], xarray_kwargs: list[dict[str, Any]]
) -> list[xr.Dataset]:
    """Open ``datasets`` (all in ``region``) in this worker of that region; lazy, reads pinned there.

    Args:
        region: The region, for the task's name in the UI (every dataset is in it).
        names: What each dataset is to the flow (a parameter name or its path), for the task's name.
        datasets: Where each dataset lives.
        xarray_kwargs: Per dataset, passed to ``xarray.open_dataset`` / ``open_zarr``.
    """
    return [open_local(where, **kwargs) for where, kwargs in zip(datasets, xarray_kwargs, strict=True)]
