"""Coarse Prefect tasks for the analysis flows: open a dataset in its region, compute a graph with locality.

Each runs on the multi-region Dask cluster (DaskTaskRunner); the fine-grained work happens inside through
``get_dask_client()``, whose tasks the scheduler routes by region.
"""

from __future__ import annotations

from typing import Any

import xarray as xr
from prefect import task
from prefect_dask import get_dask_client

from proximate.datasets import RegionPath
from proximate.io import open_dataset
from proximate.locality_report import LocalityReport, locality


@task(name="open-dataset", task_run_name="open {where}")
def open_dataset_task(where: RegionPath, xarray_kwargs: dict[str, Any] | None = None) -> xr.Dataset:
    """Open one dataset on a worker of its region (lazy; reads pinned there)."""
    with get_dask_client() as client:
        return open_dataset(where, client=client, **(xarray_kwargs or {}))


@task(name="compute-in-regions")
def compute_task(lazy: xr.DataArray | xr.Dataset) -> tuple[xr.DataArray | xr.Dataset, LocalityReport]:
    """Compute a lazy result on the cluster and measure what crossed regions."""
    with get_dask_client() as client, locality(client) as report:
        result = client.compute(lazy).result()
    return result, report
