"""The Prefect task of the table flows: reduce one region's tables to one partial, on that region's workers."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect_dask import get_dask_client

from proximate import tables
from proximate.datasets import RegionPath


@task(name="reduce-region-tables", task_run_name="reduce tables in {region}", cache_policy=NO_CACHE)
def region_partial_task(region: str, datasets: list[RegionPath], question: tables.TableQuestion) -> Any:
    """Read and reduce the region's tables where they live; only the partial comes back."""
    with get_dask_client() as client:
        return tables.region_partial(client, datasets, question)
