"""Region-pinned execution on a scheduler in its own process: the Met Office scenario and its failure modes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import proximate
from proximate.client import worker_regions
from proximate.cluster import LocalRegionalCluster
from proximate.datasets import RegionPath
from proximate.errors import RegionUnavailableError
from proximate.io import open_local
from proximate.pools import pool, propagate_pools
from proximate.scheduler_plugin import scheduler_regions
from proximate.testing import synthetic

PRED = "metoffice/predictions.nc"
OBS = "metoffice/observations.nc"
NLAT, NLON, HEIGHTS = 180, 360, 16


@pytest.fixture(scope="session")
def metoffice(region_roots) -> dict[str, Path]:
    """At least 200 MB of float32 predictions in region a; observations in region b."""
    realizations = synthetic.forecast_shape_for_bytes(200 * 10**6, heights=HEIGHTS, nlat=NLAT, nlon=NLON)
    pred = region_roots["a"] / PRED
    obs = region_roots["b"] / OBS
    if not pred.exists():
        fc = synthetic.forecast(realizations=realizations, heights=HEIGHTS, nlat=NLAT, nlon=NLON)
        assert fc.air_temperature.nbytes >= 200 * 10**6
        synthetic.write_netcdf(fc, pred, chunks={"realization": 1, "height": 4})
        synthetic.write_netcdf(synthetic.observations(nlat=NLAT, nlon=NLON), obs)
    return {"predictions": pred, "observations": obs}


def expected_difference(files: dict[str, Path], height: int = 10) -> xr.DataArray:
    """The plain single-process xarray result on the same files."""
    with xr.open_dataset(files["predictions"]) as p, xr.open_dataset(files["observations"]) as o:
        return (p.air_temperature.mean("realization").isel(height=height) - o.air_temperature).load()


#: Opens recorded by the plain-xarray opener below, in whichever worker process ran them.
PLAIN_OPENS: list[str] = []


def _recording_netcdf_open(path: str, mode: str = "r", **kwargs):
    import netCDF4

    PLAIN_OPENS.append(path)
    return netCDF4.Dataset(path, mode=mode, **kwargs)


def plain_open(path: Path, **kwargs) -> xr.Dataset:
    """``xr.open_dataset(path)`` exactly as the 2022 recipe does, with opens recorded where they happen."""
    from xarray.backends.file_manager import CachingFileManager
    from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK, NetCDF4DataStore

    manager = CachingFileManager(_recording_netcdf_open, str(path), mode="r", kwargs={}, lock=NETCDF4_PYTHON_LOCK)
    return xr.open_dataset(NetCDF4DataStore(manager, lock=NETCDF4_PYTHON_LOCK), **kwargs)


def _plain_opens() -> list[str]:
    return list(PLAIN_OPENS)


def _clear_opens() -> None:
    from proximate.io import start_read_log

    start_read_log()
    PLAIN_OPENS.clear()


def _proximate_opens() -> list[str]:
    from proximate.io import stop_read_log

    return [where.path for where in stop_read_log()]


def reads_by_region(client, name: str, recorder=_proximate_opens) -> dict[str, int]:
    """How many times workers of each region opened a file whose name contains ``name``."""
    regions = worker_regions(client)
    out: dict[str, int] = {}
    for addr, paths in client.run(recorder).items():
        n = sum(name in p for p in paths)
        if n:
            out[regions[addr]] = out.get(regions[addr], 0) + n
    return out


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_metoffice_scenario_reads_in_place_and_moves_only_the_minimum(client, metoffice):
    client.run(_clear_opens)
    predictions = proximate.open_dataset("a", PRED, chunks={"realization": 1, "height": 4})
    observations = proximate.open_dataset("b", OBS)
    assert predictions.air_temperature.nbytes >= 200 * 10**6
    with propagate_pools(), proximate.locality() as report:
        mean = predictions.air_temperature.mean("realization").isel(height=10)
        result = (mean - observations.air_temperature).compute()

    xr.testing.assert_allclose(result, expected_difference(metoffice))
    # every read in its own region (the workers' open-file caches), and reads did happen
    pred_reads = reads_by_region(client, "predictions.nc")
    assert set(pred_reads) == {"a"}, pred_reads
    assert set(reads_by_region(client, "observations.nc")) == {"b"}
    assert set(report.tasks_by_region) <= {"a", "b"} and report.tasks_by_region["a"] > 10
    # physical minimum: the smaller operand of the subtraction crosses once, the result goes to the client
    minimum = min(mean.nbytes, observations.air_temperature.nbytes) + result.nbytes
    assert report.cross_region_bytes <= 1.1 * minimum, report.bytes_between
    assert report.bytes_between.get(("a", "b"), 0) + report.bytes_between.get(("b", "a"), 0) > 0
    assert report.egress_cost(usd_per_gb=0.02) == pytest.approx(report.cross_region_bytes / 1e9 * 0.02)


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_plain_dask_annotate_on_default_scheduler_misroutes_reads(region_roots, metoffice):
    """The 2022 recipe (dask.annotate + client-side fusion off) on a default scheduler: reads stray."""
    with LocalRegionalCluster(region_roots, workers_per_region=2, router=False) as plain, plain.client() as c:
        with pool("a"):
            predictions = plain_open(metoffice["predictions"], chunks={"realization": 1, "height": 4})
        with pool("b"):
            observations = plain_open(metoffice["observations"], chunks={})
        with propagate_pools():
            mean = predictions.air_temperature.mean("realization").isel(height=10)
            result = (mean - observations.air_temperature).compute()
        xr.testing.assert_allclose(result, expected_difference(metoffice))
        pred_reads = reads_by_region(c, "predictions.nc", _plain_opens)
        obs_reads = reads_by_region(c, "observations.nc", _plain_opens)
    assert pred_reads and obs_reads  # the reads were observed...
    assert "b" in pred_reads or "a" in obs_reads, (pred_reads, obs_reads)  # ...and some ran in the wrong region


def test_combining_task_runs_where_most_input_bytes_are(client):
    """Static placement cannot know sizes; the router re-pins once inputs are measured."""
    before = client.run_on_scheduler(scheduler_regions)["repinned"]
    with pool("a"):
        big = da.random.default_rng(0).random((2000, 2000), chunks=(2000, 2000))  # 32 MB in a
    with pool("b"):
        small = da.arange(2000, chunks=2000, dtype="f8")  # 16 kB in b
    with proximate.locality() as report:
        total = (big + small).sum().compute()
    assert total == pytest.approx(big.sum().compute() + 2000 * small.sum().compute())
    assert report.cross_region_bytes < 100_000, report.bytes_between
    # only the pinned arange ran in b; everything derived, the combining task included, ran in a
    assert [k for k, r, _ in report.tasks if r == "b"] == [small.name], report.tasks
    assert client.run_on_scheduler(scheduler_regions)["repinned"] > before


def _slow_inc(x: int) -> int:
    time.sleep(0.2)
    return x + 1


def _big_block(seed: int) -> np.ndarray:
    return np.full(10, seed)


def test_stealing_stays_inside_the_region(client):
    info = client.scheduler_info(n_workers=-1)["workers"]
    a0 = next(addr for addr, w in info.items() if w["name"] == "a-0")
    seed = client.submit(_big_block, 1, workers=[a0], resources={"pool-a": 0}, pure=False)
    futures = [client.submit(lambda arr, i: _slow_inc(int(arr[0]) + i), seed, i, pure=False) for i in range(24)]
    client.gather(futures)
    stream = client.get_task_stream(count=200)
    regions = worker_regions(client)
    ran = [r["worker"] for r in stream if str(r["key"]).startswith("lambda")][-24:]
    assert {regions[w] for w in ran} == {"a"}  # derived from a-pinned data: never left region a
    assert len(set(ran)) == 2  # ...but both a workers shared it: stealing inside the region still works
    assert client.run_on_scheduler(lambda dask_scheduler: "stealing" in dask_scheduler.extensions)


def test_task_in_wrong_region_fails_loudly_naming_region_and_path(client, metoffice):
    """Forced onto a worker of region b by name (a pool annotation no longer can: the router pins a task to the
    region of the RegionPath it reads, #32), a read of region a's file fails naming region and path."""
    worker_b = next(address for address, region in worker_regions(client).items() if region == "b")
    future = client.submit(open_local, RegionPath("a", PRED), workers=[worker_b], pure=False)
    with pytest.raises(FileNotFoundError, match=r"region 'a' is not reachable from region 'b'"):
        future.result(timeout=60)


def test_unknown_region_is_refused_before_anything_runs(client):
    with pytest.raises(RegionUnavailableError, match=r"unknown region 'nowhere'.*regions a, b"):
        proximate.open_dataset("nowhere", "x.nc")
    with pytest.raises(RegionUnavailableError, match="unknown region 'nowhere'"):
        proximate.compute(da.ones(3), region="nowhere")


def test_open_dataset_rejects_escaping_paths_without_submitting(client):
    from proximate.regions import RegionPathError

    for bad in ("../b/metoffice/observations.nc", "/etc/passwd", "a\x00b"):
        with pytest.raises(RegionPathError):
            proximate.open_dataset("a", bad)


def test_dataframe_computation_pinned_whole_to_a_region(client):
    import dask.dataframe as dd
    import pandas as pd

    pdf = pd.DataFrame({"x": np.arange(1000), "g": np.arange(1000) % 7})
    df = dd.from_pandas(pdf, npartitions=8)
    with proximate.locality() as report:
        got = proximate.compute(df.groupby("g").x.sum(), region="b")
    pd.testing.assert_series_equal(got.sort_index(), pdf.groupby("g").x.sum().sort_index())
    assert set(report.tasks_by_region) == {"b"} and report.tasks_by_region["b"] >= 8


# -- a region without workers, a worker lost mid-run ------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """Region x with two workers, region y declared but with none; a short no-workers bound."""
    base = tmp_path_factory.mktemp("faulty")
    roots = {"x": base / "x", "y": base / "y"}
    for root in roots.values():
        root.mkdir()
    arr = xr.Dataset(
        {"v": (("t", "y"), np.arange(40 * 500, dtype="f8").reshape(40, 500))},
        coords={"t": np.arange(40), "y": np.arange(500)},
    )
    synthetic.write_netcdf(arr, roots["x"] / "v.nc", chunks={"t": 1})
    synthetic.write_netcdf(arr, roots["y"] / "v.nc")
    with LocalRegionalCluster(roots, workers_per_region={"x": 2, "y": 0}, no_workers_timeout=3.0) as c:
        yield c


def _inc(x: int) -> int:
    return x + 1


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_region_without_workers_errs_within_the_bound_naming_it(faulty):
    with faulty.client() as c:
        start = time.monotonic()
        with pytest.raises(RegionUnavailableError, match=r"region 'y' has no live workers"):
            c.submit(_inc, 1, resources={"pool-y": 0}).result(timeout=120)
        assert time.monotonic() - start < 3.0 + 15.0
        # a computation mixing regions fails the same way instead of hanging
        with pool("x"):
            xs = da.ones(10, chunks=5)
        with pool("y"):
            ys = da.ones(10, chunks=5)
        with pytest.raises(RegionUnavailableError, match="region 'y'"):
            (xs + ys).sum().compute()
        with pytest.raises(RegionUnavailableError, match="region 'y'"):
            proximate.open_dataset("y", "v.nc", client=c)


def _slow_block(block: np.ndarray) -> np.ndarray:
    time.sleep(0.3)
    return block * 2


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_worker_killed_mid_run_completes_in_the_same_region(faulty):
    with faulty.client() as c:
        ds = proximate.open_dataset("x", "v.nc", client=c, chunks={"t": 1})
        doubled = ds.v.data.map_blocks(_slow_block, dtype="f8")
        with proximate.locality(c) as report:
            future = c.compute(doubled.sum())
            deadline = time.monotonic() + 60
            while len(c.get_task_stream(count=1000)) < 8:  # well under way (40 slow blocks in all)
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert not future.done()
            faulty.kill_worker("x-0")
            total = future.result(timeout=120)
        assert total == pytest.approx(2 * np.arange(40 * 500, dtype="f8").sum())
        assert set(report.tasks_by_region) == {"x"}, report.tasks_by_region
        assert [w["name"] for w in c.scheduler_info(n_workers=-1)["workers"].values()] == ["x-1"]
        assert os.path.basename(faulty.regions[0].root) == "x"


def test_a_fetch_inside_a_region_stays_there_and_transfers_count_the_bytes_written(client):
    """A task's own client on a worker of region a fetching what it had another worker of a make (as a table flow's
    region task gathers its table plan): the transfer stays in a (Dask logs a client's fetch without saying whose;
    the worker plugin names the requester's region). The same data fetched by this process, outside every region,
    crosses to the client. Both count what the worker wrote, the pickled object, not Dask's in-memory guess of a
    Python object's size (about 12 times more here)."""
    import pickle

    from distributed import worker_client

    [holder, fetcher, *_] = sorted(w for w, r in worker_regions(client).items() if r == "a")

    def rows() -> dict:
        return {"rows": list(range(20_000))}

    def fetch(holder: str) -> int:
        with worker_client() as c:
            return len(c.submit(rows, workers=[holder], pure=False).result()["rows"])

    written = len(pickle.dumps(rows(), protocol=5))
    with proximate.locality(client) as inside:
        assert client.submit(fetch, holder, workers=[fetcher], pure=False).result() == 20_000
    assert written <= inside.bytes_between.get(("a", "a"), 0) < written + 2_048, inside.bytes_between
    assert inside.cross_region_bytes < 1_024, inside.bytes_between  # the count of rows, not the rows

    held = client.submit(rows, workers=[holder], pure=False)
    with proximate.locality(client) as outside:
        assert len(held.result()["rows"]) == 20_000
    assert written <= outside.bytes_between[("a", "client")] < written + 2_048, outside.bytes_between
