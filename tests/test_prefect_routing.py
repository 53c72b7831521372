"""Prefect tasks through a DaskTaskRunner: routed by pool(), and orchestrating tasks never deadlock."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
from prefect import flow, task
from prefect_dask import DaskTaskRunner, get_dask_client

import proximate
from proximate.pools import pool
from proximate.testing import synthetic

SMALL = "prefect/small_forecast.nc"


@pytest.fixture(scope="module")
def small_forecast(region_roots):
    path = region_roots["a"] / SMALL
    if not path.exists():
        synthetic.write_netcdf(
            synthetic.forecast(realizations=4, heights=4, nlat=30, nlon=60), path, chunks={"realization": 1}
        )
    return path


@task
def region_here() -> str:
    return os.environ.get("PROXIMATE_REGION", "none")


@task
def orchestrate(path: str) -> float:
    """A coarse task that runs a fine-grained Dask computation on region a's data."""
    with get_dask_client() as client:
        ds = proximate.open_dataset("a", path, client=client, chunks={"realization": 1})
        return float(ds.air_temperature.mean().compute())


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_prefect_task_submitted_inside_pool_runs_in_that_region(prefect_server, cluster):
    @flow(task_runner=DaskTaskRunner(address=cluster.address))
    def routed() -> tuple[list[str], list[str]]:
        with pool("b"):
            in_b = [region_here.submit() for _ in range(3)]
        with pool("a"):
            in_a = [region_here.submit() for _ in range(3)]
        return [f.result() for f in in_a], [f.result() for f in in_b]

    in_a, in_b = routed()
    assert in_a == ["a"] * 3 and in_b == ["b"] * 3


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_orchestrating_tasks_do_not_deadlock_even_when_pinned(prefect_server, cluster, small_forecast):
    """Two pinned orchestrators hold both single-thread workers of region a while they wait for work that
    only region a can do: with a slot-consuming requirement this deadlocks; with ours it completes."""
    expected = float(xr.open_dataset(small_forecast).air_temperature.mean())

    @flow(task_runner=DaskTaskRunner(address=cluster.address))
    def nested() -> list[float]:
        with pool("a"):
            pinned = [orchestrate.submit(SMALL) for _ in range(2)]
        free = orchestrate.submit(SMALL)
        return [f.result() for f in [*pinned, free]]

    results = nested()
    np.testing.assert_allclose(results, [expected] * 3, rtol=1e-6)
