"""Prefect tasks through a DaskTaskRunner: routed by pool(), and orchestrating tasks never deadlock."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import xarray as xr
from prefect import flow, task
from prefect_dask import get_dask_client

import proximate
from blocks.cluster import ClusterTaskRunner  # prefect-dask's DaskTaskRunner, for a scheduler without a dashboard
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
    @flow(task_runner=ClusterTaskRunner(address=cluster.address))
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

    @flow(task_runner=ClusterTaskRunner(address=cluster.address))
    def nested() -> list[float]:
        with pool("a"):
            pinned = [orchestrate.submit(SMALL) for _ in range(2)]
        free = orchestrate.submit(SMALL)
        return [f.result() for f in [*pinned, free]]

    results = nested()
    np.testing.assert_allclose(results, [expected] * 3, rtol=1e-6)


@task
def worker_pid() -> int:
    return os.getpid()


@pytest.mark.slow
def test_a_local_cluster_block_lives_exactly_as_long_as_the_flow_run(prefect_server, region_roots):
    """The flows' one way to a cluster (RegionalTaskRunner) with a 'local' block: the run starts the cluster, its
    Prefect tasks run on it, and the cluster's processes are gone once the run is over."""
    from blocks.cluster import RegionalCluster
    from blocks.region import Region
    from flows.common import RegionalTaskRunner, cluster_block, run_regions_on_cluster
    from proximate.processes import Supervised, proc_start

    Region(name="a", root=str(region_roots["a"])).save("a", overwrite=True)
    RegionalCluster(address="local", regions=["a"], workers_per_region=1).save("test-run-local", overwrite=True)

    @flow(task_runner=RegionalTaskRunner())
    def on_local_cluster() -> tuple[str, list[int]]:
        client = run_regions_on_cluster(cluster_block("test-run-local"), "region", ["a"])
        with pool("a"):
            pids = [worker_pid.submit().result()]
        return client.scheduler.address, pids + list(client.run(os.getpid).values())

    address, pids = on_local_cluster()
    assert address.startswith("tcp://127.0.0.1:")
    assert len(set(pids)) == 1 and pids[0] != os.getpid()  # the one worker of region a ran the task
    worker = Supervised("worker", pids[0], proc_start(pids[0]))
    deadline = time.monotonic() + 60
    while worker.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not worker.running(), "the run's local cluster outlived the run"
