"""Analysis flows through a real Prefect server on the two-region cluster: results, artifacts, locality."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import xarray as xr

from flows.analysis import compare_forecast_to_observations
from proximate.analysis import AnalysisInputError, ByteBudget
from proximate.testing import synthetic

FC = "flows/forecast.nc"
OBS_SAME = "flows/obs_same_grid.nc"
OBS_COARSE = "flows/obs_coarse_grid.nc"
OBS_KELVIN_OFF = "flows/obs_celsius.nc"


@pytest.fixture(autouse=True)
def outputs_under_tmp_path(tmp_path, monkeypatch):
    """These tests write their results to absolute paths under ``tmp_path``: allow that root (empty by default)."""
    monkeypatch.setenv("PROXIMATE_OUTPUT_ROOTS", str(tmp_path))


@pytest.fixture(scope="module")
def flow_data(region_roots):
    fc = synthetic.forecast(realizations=6, heights=8, nlat=60, nlon=120, seed=3)
    synthetic.write_netcdf(fc, region_roots["a"] / FC, chunks={"realization": 1, "height": 2})
    synthetic.write_netcdf(synthetic.observations(nlat=60, nlon=120, seed=4), region_roots["b"] / OBS_SAME)
    synthetic.write_netcdf(synthetic.observations(nlat=30, nlon=60, seed=5), region_roots["b"] / OBS_COARSE)
    celsius = synthetic.observations(nlat=60, nlon=120, seed=6)
    celsius.air_temperature.attrs["units"] = "degC"
    synthetic.write_netcdf(celsius, region_roots["b"] / OBS_KELVIN_OFF)
    return region_roots


def _artifacts(prefix: str) -> dict[str, object]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as c:
            arts = await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=prefix)))
            # The latest of each key: a key's older versions (an earlier run's) come back too, in no set order.
            return {a.key: a for a in sorted(arts, key=lambda a: a.created)}

    return asyncio.run(read())


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_compare_flow_matches_plain_xarray_publishes_artifacts_and_moves_the_minimum(
    prefect_server, cluster, flow_data, tmp_path
):
    out = tmp_path / "diff.nc"
    res = compare_forecast_to_observations(
        forecast=f"a:{FC}",
        observations=f"b:{OBS_SAME}",
        height_index=3,
        output=str(out),
        scheduler_address=cluster.address,
    )
    with xr.open_dataset(flow_data["a"] / FC) as f, xr.open_dataset(flow_data["b"] / OBS_SAME) as o:
        expected = f.air_temperature.mean("realization").isel(height=3) - o.air_temperature
        # what must cross at least: the smaller operand of the subtraction, then the result to the client
        minimum = min(f.air_temperature.isel(realization=0, height=3).nbytes, o.air_temperature.nbytes)
        centralised = f.air_temperature.isel(height=3).nbytes + o.air_temperature.nbytes
    got = xr.open_dataset(out)
    got_var = got[next(iter(got.data_vars))]
    np.testing.assert_allclose(got_var.values, expected.values, rtol=1e-5, atol=1e-4)
    minimum += got_var.nbytes
    assert res.budget == ByteBudget(minimum=minimum, centralised=centralised)
    assert res.cross_region_bytes <= 1.1 * minimum
    assert centralised >= 3 * res.cross_region_bytes  # 6 realizations + obs vs 2 fields
    assert set(res.tasks_by_region) >= {"a", "b"}
    arts = _artifacts("compare-%")
    assert {"compare-locality", "compare-plot", "compare-statistics"} <= set(arts)
    assert "physical minimum" in arts["compare-locality"].data
    assert "data:image/png;base64," in arts["compare-plot"].data


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_compare_flow_interpolates_observations_on_a_different_grid(prefect_server, cluster, flow_data, tmp_path):
    out = tmp_path / "diff_coarse.nc"
    res = compare_forecast_to_observations(
        forecast=f"a:{FC}",
        observations=f"b:{OBS_COARSE}",
        height=2000.0,
        output=str(out),
        scheduler_address=cluster.address,
    )
    with xr.open_dataset(flow_data["a"] / FC) as f, xr.open_dataset(flow_data["b"] / OBS_COARSE) as o:
        level = f.air_temperature.mean("realization").sel(height=2000.0, method="nearest")
        obs = o.air_temperature.interp(latitude=level.latitude.values, longitude=level.longitude.values)
        expected = level - obs
        raw_obs = o.air_temperature.nbytes
        assert raw_obs < level.nbytes  # so the coarse observations are what must cross
    got = xr.open_dataset(out)
    got_var = got[next(iter(got.data_vars))]
    np.testing.assert_allclose(got_var.values, expected.values, rtol=1e-5, atol=1e-4)
    # the coarse observations cross raw and are interpolated beside the forecast
    minimum = raw_obs + got_var.nbytes
    assert res.budget.minimum == minimum
    assert res.cross_region_bytes <= 1.1 * minimum, res


@pytest.mark.slow  # needs the module's two-region cluster (about 20 s to start): kept out of the fast tier
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variable": "precipitation"}, "variable 'precipitation' is not in the forecast; available: air_temperature"),
        ({"observations": f"b:{OBS_KELVIN_OFF}"}, "units differ"),
        ({"height_index": 99}, "height_index 99 is out of range"),
    ],
)
def test_compare_flow_bad_input_fails_clearly_and_writes_nothing(
    prefect_server, cluster, flow_data, tmp_path, kwargs, message
):
    out = tmp_path / "never.nc"
    args = {
        "forecast": f"a:{FC}",
        "observations": f"b:{OBS_SAME}",
        "output": str(out),
        "scheduler_address": cluster.address,
        **kwargs,
    }
    with pytest.raises(AnalysisInputError, match=message):
        compare_forecast_to_observations(**args)
    assert list(tmp_path.iterdir()) == []


def test_compare_flow_rejects_escaping_reference_before_starting(prefect_server, tmp_path):
    from proximate.regions import RegionPathError

    with pytest.raises(RegionPathError):
        compare_forecast_to_observations(
            forecast="a:../b/x.nc",
            observations="b:y.nc",
            output=str(tmp_path / "o.nc"),
            scheduler_address="tcp://127.0.0.1:1",
        )


# -- flows over catalog queries ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seasonal_catalog(prefect_server, cluster, region_roots, tmp_path_factory):
    """Daily temperature for 2024 in region a and 2025 in region b, indexed into a SQLite catalog block."""
    from blocks.catalog import CatalogConfig
    from flows.catalog import index_region

    synthetic.write_netcdf(
        synthetic.daily_temperature(start="2024-01-01", days=366, seed=7),
        region_roots["a"] / "seasonal" / "tas_2024.nc",
    )
    synthetic.write_netcdf(
        synthetic.daily_temperature(start="2025-01-01", days=365, seed=8),
        region_roots["b"] / "seasonal" / "tas_2025.nc",
    )
    db = tmp_path_factory.mktemp("catalog") / "catalog.sqlite"
    CatalogConfig(backend="sqlite", sqlite_path=str(db)).save("test-seasonal-catalog", overwrite=True)
    for region in ("a", "b"):
        index_region(region, catalog="test-seasonal-catalog", scheduler_address=cluster.address)
    return region_roots


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_seasonal_mean_flow_combines_regions_with_count_weights(cluster, seasonal_catalog, tmp_path):
    from flows.analysis import seasonal_mean
    from proximate.catalog.query import DatasetQuery

    out = tmp_path / "seasonal.nc"
    res = seasonal_mean(
        query=DatasetQuery(text="synthetic daily temperature"),
        variable="tas",
        valid_min=200.0,
        output=str(out),
        catalog="test-seasonal-catalog",
        scheduler_address=cluster.address,
    )
    assert sorted(map(str, res.datasets)) == ["a:seasonal/tas_2024.nc", "b:seasonal/tas_2025.nc"]
    files = [seasonal_catalog["a"] / "seasonal/tas_2024.nc", seasonal_catalog["b"] / "seasonal/tas_2025.nc"]
    with xr.open_mfdataset(files, combine="by_coords") as both:
        tas = both.tas.where(both.tas >= 200.0)
        expected = tas.groupby("time.season").mean().load()
    got = xr.open_dataset(out)
    got_var = got[next(iter(got.data_vars))]
    np.testing.assert_allclose(got_var.sel(season=expected.season).values, expected.values, rtol=1e-5, atol=1e-4)
    # one year per region: the smaller region's per-season sums and counts cross, then the result
    minimum = min(_seasonal_partial_bytes(f, 200.0) for f in files) + got_var.nbytes
    assert res.budget.minimum == minimum
    assert res.cross_region_bytes <= 1.1 * minimum, res
    assert set(res.tasks_by_region) >= {"a", "b"}
    assert {"seasonal-mean-locality", "seasonal-mean-plot", "seasonal-mean-statistics"} <= set(
        _artifacts("seasonal-mean-%")
    )


def _seasonal_partial_bytes(path, valid_min: float) -> int:
    """Bytes of one dataset's masked per-season sums and counts, computed here with plain xarray."""
    with xr.open_dataset(path) as ds:
        seasons = ds.tas.where(ds.tas >= valid_min).groupby("time.season")
        return seasons.sum().nbytes + seasons.count().nbytes


@pytest.mark.slow  # needs the module's two-region cluster (about 20 s to start): kept out of the fast tier
def test_summarize_flow_reduces_each_dataset_in_place(cluster, seasonal_catalog, tmp_path):
    from flows.analysis import summarize
    from proximate.catalog.query import DatasetQuery

    res = summarize(
        query=DatasetQuery(text="synthetic daily temperature", region="b"),
        variables=["tas"],
        dims=["time"],
        statistics=["mean", "max"],
        output=str(tmp_path / "sums"),
        catalog="test-seasonal-catalog",
        scheduler_address=cluster.address,
    )
    assert list(map(str, res.datasets)) == ["b:seasonal/tas_2025.nc"]
    (path,) = res.outputs
    got = xr.open_dataset(path)
    with xr.open_dataset(seasonal_catalog["b"] / "seasonal/tas_2025.nc") as src:
        np.testing.assert_allclose(got.tas_mean.values, src.tas.mean("time").values, rtol=1e-5)
        np.testing.assert_allclose(got.tas_max.values, src.tas.max("time").values)


@pytest.mark.slow  # needs the module's two-region cluster (about 20 s to start): kept out of the fast tier
def test_query_flows_fail_clearly_before_heavy_work(cluster, seasonal_catalog, tmp_path):
    from flows.analysis import seasonal_mean
    from proximate.catalog.query import DatasetQuery

    with pytest.raises(ValueError, match=r"matched no datasets: text='no such words anywhere'"):
        seasonal_mean(
            query=DatasetQuery(text="no such words anywhere"),
            variable="tas",
            output=str(tmp_path / "x.nc"),
            catalog="test-seasonal-catalog",
            scheduler_address=cluster.address,
        )
    with pytest.raises(AnalysisInputError, match=r"variable 'pr' is not in .*available there: tas"):
        seasonal_mean(
            query=DatasetQuery(text="synthetic daily temperature"),
            variable="pr",
            output=str(tmp_path / "x.nc"),
            catalog="test-seasonal-catalog",
            scheduler_address=cluster.address,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_compare_flow_takes_catalog_ids_and_looks_them_up_in_the_flow_process(
    cluster, flow_data, seasonal_catalog, tmp_path
):
    from flows.catalog import index_region
    from proximate.catalog.records import record_id
    from proximate.datasets import RegionPath

    index_region("a", changed=[FC], catalog="test-seasonal-catalog", scheduler_address=cluster.address)
    index_region("b", changed=[OBS_SAME], catalog="test-seasonal-catalog", scheduler_address=cluster.address)
    by_id = tmp_path / "by-id.nc"
    res = compare_forecast_to_observations(
        forecast=record_id("a", FC),
        observations=record_id("b", OBS_SAME),
        height_index=3,
        output=str(by_id),
        catalog="test-seasonal-catalog",
        scheduler_address=cluster.address,
    )
    assert res.datasets == [RegionPath("a", FC), RegionPath("b", OBS_SAME)]
    with xr.open_dataset(flow_data["a"] / FC) as f, xr.open_dataset(flow_data["b"] / OBS_SAME) as o:
        expected = f.air_temperature.mean("realization").isel(height=3) - o.air_temperature
    with xr.open_dataset(by_id) as got:
        np.testing.assert_allclose(got[next(iter(got.data_vars))].values, expected.values, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="no dataset with id 'not-an-id'"):
        compare_forecast_to_observations(
            forecast="not-an-id",
            observations=f"b:{OBS_SAME}",
            output=str(tmp_path / "never.nc"),
            catalog="test-seasonal-catalog",
            scheduler_address="tcp://127.0.0.1:1",  # never reached: the id fails first
        )
    assert not (tmp_path / "never.nc").exists()


# -- the same result from catalog ids and region:path references -------------------------------------------------


def _values(path) -> np.ndarray:
    with xr.open_dataset(path) as ds:
        return ds[next(iter(ds.data_vars))].values


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_each_analysis_flow_gets_the_same_result_from_catalog_ids_and_region_paths(
    cluster, flow_data, seasonal_catalog, tmp_path
):
    from flows.analysis import seasonal_mean, summarize
    from flows.catalog import index_region
    from proximate.catalog.records import record_id

    index_region("a", changed=[FC], catalog="test-seasonal-catalog", scheduler_address=cluster.address)
    index_region("b", changed=[OBS_SAME], catalog="test-seasonal-catalog", scheduler_address=cluster.address)
    common = {"catalog": "test-seasonal-catalog", "scheduler_address": cluster.address}
    paths = {"a": f"a:{FC}", "b": f"b:{OBS_SAME}"}
    ids = {"a": record_id("a", FC), "b": record_id("b", OBS_SAME)}
    compared = {
        kind: compare_forecast_to_observations(
            forecast=refs["a"],
            observations=refs["b"],
            height_index=3,
            output=str(tmp_path / f"cmp-{kind}.nc"),
            **common,
        )
        for kind, refs in (("paths", paths), ("ids", ids))
    }
    assert compared["paths"].datasets == compared["ids"].datasets
    np.testing.assert_array_equal(_values(compared["paths"].output), _values(compared["ids"].output))

    years = ["a:seasonal/tas_2024.nc", "b:seasonal/tas_2025.nc"]
    year_ids = [record_id("a", "seasonal/tas_2024.nc"), record_id("b", "seasonal/tas_2025.nc")]
    seasonal = {
        kind: seasonal_mean(datasets=refs, variable="tas", output=str(tmp_path / f"seas-{kind}.nc"), **common)
        for kind, refs in (("paths", years), ("ids", year_ids))
    }
    assert seasonal["paths"].datasets == seasonal["ids"].datasets
    np.testing.assert_array_equal(_values(seasonal["paths"].output), _values(seasonal["ids"].output))

    summaries = {
        kind: summarize(datasets=refs, variables=["tas"], dims=["time"], output=str(tmp_path / f"sum-{kind}"), **common)
        for kind, refs in (("paths", years), ("ids", year_ids))
    }
    assert summaries["paths"].datasets == summaries["ids"].datasets
    for by_path, by_id in zip(summaries["paths"].outputs, summaries["ids"].outputs, strict=True):
        with xr.open_dataset(by_path) as p, xr.open_dataset(by_id) as i:
            xr.testing.assert_identical(p, i)
    # and the reductions are those of the files, computed here with plain xarray
    with (
        xr.open_dataset(seasonal_catalog["a"] / "seasonal/tas_2024.nc") as src,
        xr.open_dataset(summaries["ids"].outputs[0]) as got,
    ):
        np.testing.assert_allclose(got.tas_mean.values, src.tas.mean("time").values, rtol=1e-5)


# -- parameters: checked before any cluster work, errors naming the parameter ---------------------------------------


@pytest.fixture
def no_cluster_starts(monkeypatch):
    """A 'local' cluster block whose cluster must never start: starting it fails the test."""
    from blocks.cluster import RegionalCluster
    from proximate import cluster as cluster_module

    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started for a parameter error")

    monkeypatch.setattr(cluster_module.LocalRegionalCluster, "__init__", refuse)
    RegionalCluster(address="local", regions=["a", "b"]).save("test-local-cluster", overwrite=True)
    return "test-local-cluster"


@pytest.mark.parametrize(
    "flow_name, kwargs, parameter, message",
    [
        ("seasonal_mean", {"query": {"text": "no such words anywhere"}}, "query", "matched no datasets"),
        ("seasonal_mean", {"variable": "pr"}, "variable", r"variable 'pr' is not in .*available there: tas"),
        ("summarize", {"variables": ["pr"]}, "variables", r"variable 'pr' is not in"),
        (
            "seasonal_mean",
            {"cluster": "no-such-cluster"},
            "cluster",
            "no RegionalCluster block named 'no-such-cluster'",
        ),
        ("seasonal_mean", {"output": "result.csv"}, "output", r"'result.csv' must end in .nc"),
        ("summarize", {"output": "sums.nc"}, "output", "is a folder"),
        ("summarize", {"statistics": ["median"]}, "statistics", "unknown statistics"),
        ("seasonal_mean", {"query": None, "datasets": ["not-an-id"]}, "datasets", "no dataset with id 'not-an-id'"),
        ("compare", {"observations": "no-such-id"}, "observations", "no dataset with id 'no-such-id'"),
        ("compare", {"variable": "precipitation"}, "variable", r"variable 'precipitation' is not in"),
        ("compare", {"output": "diff.txt"}, "output", "must end in .nc"),
        ("compare", {"catalog": "no-such-catalog"}, "catalog", "no CatalogConfig block named 'no-such-catalog'"),
    ],
)
def test_bad_parameters_fail_within_seconds_naming_the_value_and_start_no_cluster(
    seasonal_catalog, no_cluster_starts, flow_name, kwargs, parameter, message, tmp_path
):
    import time

    from flows.analysis import seasonal_mean, summarize
    from proximate.analysis import ParameterError
    from proximate.catalog.query import DatasetQuery
    from proximate.catalog.records import record_id

    kwargs = dict(kwargs)
    if isinstance(kwargs.get("query"), dict):
        kwargs["query"] = DatasetQuery(**kwargs["query"])
    base = {"catalog": "test-seasonal-catalog", "cluster": no_cluster_starts}
    if flow_name == "compare":
        run = compare_forecast_to_observations
        base |= {
            "forecast": record_id("a", "seasonal/tas_2024.nc"),
            "observations": record_id("b", "seasonal/tas_2025.nc"),
        }
        base |= {"variable": "tas", "output": str(tmp_path / "x.nc")}
    elif flow_name == "seasonal_mean":
        run = seasonal_mean
        base |= {"query": DatasetQuery(text="synthetic daily temperature"), "output": str(tmp_path / "x.nc")}
    else:
        run = summarize
        base |= {"query": DatasetQuery(text="synthetic daily temperature"), "variables": ["tas"]}
        base |= {"output": str(tmp_path / "sums")}
    started = time.perf_counter()
    with pytest.raises(ParameterError, match=message) as err:
        run(**{**base, **kwargs})
    assert err.value.parameter == parameter
    assert str(err.value).startswith(parameter)
    assert time.perf_counter() - started < 20  # seconds, on a loaded 2-core machine: no cluster, no data read
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # needs the module's two-region cluster (about 20 s to start): kept out of the fast tier
def test_a_dataset_in_a_region_the_cluster_lacks_fails_fast_naming_it(cluster, seasonal_catalog, tmp_path):
    from proximate.analysis import ParameterError

    with pytest.raises(ParameterError, match=r"observations: c:obs.nc is in region 'c', which this cluster does not"):
        compare_forecast_to_observations(
            forecast=f"a:{FC}",
            observations="c:obs.nc",
            output=str(tmp_path / "x.nc"),
            scheduler_address=cluster.address,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # needs the module's two-region cluster (about 20 s to start): kept out of the fast tier
def test_relative_outputs_go_under_the_results_root_of_the_flows_process(
    cluster, flow_data, seasonal_catalog, tmp_path, monkeypatch
):
    import logging

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    monkeypatch.setenv("PROXIMATE_RESULTS", str(tmp_path / "results-root"))
    run_logger, keep = logging.getLogger("prefect.flow_runs"), Keep()
    level = run_logger.level
    run_logger.addHandler(keep)
    run_logger.setLevel(logging.INFO)  # the session runs at WARNING
    try:
        res = compare_forecast_to_observations(
            forecast=f"a:{FC}", observations=f"b:{OBS_SAME}", height_index=3, scheduler_address=cluster.address
        )
    finally:
        run_logger.removeHandler(keep)
        run_logger.setLevel(level)
    assert res.output == str(tmp_path / "results-root" / "forecast-minus-observations.nc")
    assert (tmp_path / "results-root" / "forecast-minus-observations.nc").is_file()
    # what the run page shows: what was read, where each part ran, what crossed, where the result went
    logged = "\n".join(keep.messages)
    assert f"forecast a:{FC}, observations b:{OBS_SAME}" in logged
    assert "opened in region a: forecast" in logged and "opened in region b: observations" in logged
    assert "ran in region a:" in logged and "ran in region b:" in logged
    assert f"crossed regions: {res.cross_region_bytes:,} B" in logged
    assert f"result written to {res.output}" in logged


# -- the core's pieces the artifacts show -------------------------------------------------------------------------


def test_resolve_output_checks_the_value_and_roots_relative_paths(tmp_path):
    from proximate.analysis import ParameterError
    from proximate.outputs import resolve_output, results_root

    env = {"PROXIMATE_HOME": str(tmp_path / "home"), "PROXIMATE_OUTPUT_ROOTS": str(tmp_path)}
    assert results_root(env) == tmp_path / "home" / "results"
    assert results_root({"PROXIMATE_RESULTS": str(tmp_path / "r"), **env}) == tmp_path / "r"
    assert resolve_output("sub/x.nc", environ=env) == str(tmp_path / "home" / "results" / "sub" / "x.nc")
    assert resolve_output(str(tmp_path / "abs.zarr"), environ=env) == str(tmp_path / "abs.zarr")
    assert resolve_output("s3://bucket/x.nc", environ={**env, "PROXIMATE_OUTPUT_ROOTS": "s3://bucket"}) == (
        "s3://bucket/x.nc"
    )
    assert resolve_output("sums", folder=True, environ=env) == str(tmp_path / "home" / "results" / "sums")
    for bad, message in [
        ("", "is empty"),
        ("x.csv", "must end in .nc"),
        ("x", "must end in .nc"),
        ("s3://bucket/x.zarr", "Zarr cannot be written to S3"),
        ("gs://bucket/x.nc", "not a local path or an s3:// URL"),
    ]:
        with pytest.raises(ParameterError, match=message) as err:
            resolve_output(bad, environ=env)
        assert err.value.parameter == "output"


def test_seasons_come_in_calendar_order_and_keep_the_datas_type():
    from proximate import analysis

    ds = synthetic.daily_temperature(start="2024-01-01", days=366, nlat=4, nlon=8)
    mean = analysis.combine_seasonal([analysis.seasonal_partials(ds, "tas")])
    assert list(mean.season.values) == ["DJF", "MAM", "JJA", "SON"]
    assert mean.dtype == np.float32
    expected = ds.tas.groupby("time.season").mean()
    np.testing.assert_allclose(mean.values, expected.sel(season=mean.season).values, rtol=1e-5)
    assert mean.attrs["units"] == "K"
    assert (mean.attrs["time_coverage_start"], mean.attrs["time_coverage_end"]) == ("2024-01-01", "2024-12-31")


def test_statistics_are_rounded_to_the_precision_of_the_data():
    from proximate.analysis import statistics_row

    values = np.array([[288.123456789, 280.987654321], [np.nan, 270.5]])
    row32 = statistics_row(xr.DataArray(values.astype(np.float32), name="t", attrs={"units": "K"}))
    row64 = statistics_row(xr.DataArray(values, name="t"))
    mean = np.nanmean(values.astype(np.float32).astype("f8"))
    assert row32["mean"] == float(f"{mean:.6g}") and len(repr(row32["mean"]).replace(".", "")) <= 6
    assert row32["count"] == 3 and row32["units"] == "K"
    assert row64["max"] == float(f"{288.123456789:.15g}")


def test_observations_at_a_level_are_compared_with_the_forecast_at_that_level():
    from proximate import analysis
    from proximate.plots import title_of

    fc = synthetic.forecast(realizations=2, heights=4, nlat=6, nlon=12, seed=1)  # heights 10, 3340, 6670, 10000 m
    obs = synthetic.observations(nlat=6, nlon=12, seed=2, height=10.0)
    diff = analysis.forecast_minus_observations(fc, obs, "air_temperature")
    expected = fc.air_temperature.mean("realization").sel(height=10.0) - obs.air_temperature
    np.testing.assert_allclose(diff.values, expected.values)
    assert abs(float(diff.mean())) < 1.0  # the forecast's error, not the lapse rate between two levels
    title = title_of(diff)
    assert "Air temperature, ensemble mean minus observations [K]" in title
    assert "height 10 m" in title and "2026-06-01 00:00" in title
    with pytest.raises(AnalysisInputError, match="observations are at height 10 m but the forecast level asked is"):
        analysis.forecast_minus_observations(fc, obs, "air_temperature", height_index=2)
    budget = analysis.compare_budget(fc, obs, "air_temperature", diff)
    level = fc.air_temperature.isel(realization=0, height=0)
    assert budget == ByteBudget(
        minimum=min(level.nbytes, obs.air_temperature.nbytes) + diff.nbytes,
        centralised=level.nbytes * 2 + obs.air_temperature.nbytes,
    )


# -- errors once, logs once ---------------------------------------------------------------------------------------


@pytest.fixture
def run_page_logs():
    """Let the flow runs' INFO records reach the Prefect API (the session runs at WARNING); yields a reader of a
    flow run's logs as the run page shows them, (level, message) in order, after flushing what is queued."""
    import logging

    from prefect.logging.handlers import APILogHandler

    run_logger = logging.getLogger("prefect.flow_runs")
    level = run_logger.level
    run_logger.setLevel(logging.INFO)

    def read(flow_run_id) -> list[tuple[int, str]]:
        from prefect import get_client
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import LogSort

        APILogHandler().flush()

        async def fetch():
            async with get_client() as c:
                return await c.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC
                )

        return [(log.level, log.message) for log in asyncio.run(fetch())]

    try:
        yield read
    finally:
        run_logger.setLevel(level)


def _run_record(flow_run_id):
    from prefect import get_client

    async def fetch():
        async with get_client() as c:
            return await c.read_flow_run(flow_run_id)

    return asyncio.run(fetch())


@pytest.mark.slow  # needs the module's two-region cluster (about 20 s to start): kept out of the fast tier
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"query": {"text": "no such words anywhere"}}, "query matched no datasets: text='no such words anywhere'"),
        ({"query": {"text": "synthetic daily temperature"}, "variable": "pr"}, "variable 'pr' is not in"),
        ({"datasets": ["a:seasonal/tas_2024.nc"], "max_egress_gb": -1.0}, "max_egress_gb: must be a number of GB"),
    ],
    ids=["query-matches-nothing", "misspelt-variable", "bad-parameter"],
)
def test_an_input_error_fails_the_run_once_without_a_traceback_before_any_work(
    cluster, seasonal_catalog, run_page_logs, tmp_path, parameters, message
):
    """What the run page shows for a user's mistake: the message once at ERROR (not again in Prefect's closing
    line), no traceback at INFO or above, the run Failed with that message, and soon (the checks come before the
    cluster and the datasets)."""
    import logging

    from flows.analysis import seasonal_mean
    from flows.common import INPUT_ERROR_CLOSING_LINE
    from proximate.catalog.query import DatasetQuery

    if "query" in parameters:
        parameters = {**parameters, "query": DatasetQuery(**parameters["query"])}
    state = seasonal_mean(
        **parameters,
        output=str(tmp_path / "x.nc"),
        catalog="test-seasonal-catalog",
        scheduler_address=cluster.address,
        return_state=True,
    )
    assert state.is_failed()
    assert message in state.message
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):  # Python callers still get it
        state.result()
    run = _run_record(state.state_details.flow_run_id)
    assert run.state.is_failed() and message in run.state.message

    logs = run_page_logs(state.state_details.flow_run_id)
    errors = [text for level, text in logs if level >= logging.ERROR]
    assert len(errors) == 1 and message in errors[0], logs
    assert not [text for level, text in logs if level >= logging.INFO and "Traceback" in text], logs
    assert not [text for _, text in logs if "Encountered exception" in text], logs
    # Only that line carries the message: Prefect's own closing line says the run failed on it, without repeating it
    assert [text for _, text in logs if message in text] == [errors[0]], logs
    assert [text for _, text in logs if text.startswith("Finished in state")] == [INPUT_ERROR_CLOSING_LINE], logs
    # a generous bound, for the property only: nothing slow (cluster attach, dataset opens) before the checks
    assert (run.end_time - run.start_time).total_seconds() < 5, (run.start_time, run.end_time)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # needs the module's two-region cluster (about 20 s to start): kept out of the fast tier
def test_seasonal_mean_logs_each_opened_path_once(cluster, seasonal_catalog, run_page_logs, tmp_path):
    from flows.analysis import seasonal_mean

    state = seasonal_mean(
        datasets=["a:seasonal/tas_2024.nc", "b:seasonal/tas_2025.nc"],
        output=str(tmp_path / "x.nc"),
        catalog="test-seasonal-catalog",
        scheduler_address=cluster.address,
        dry_run=True,
        return_state=True,
    )
    assert state.is_completed()
    opened = [text for _, text in run_page_logs(state.state_details.flow_run_id) if text.startswith("opened in")]
    assert sorted(opened) == [
        "opened in region a: a:seasonal/tas_2024.nc",
        "opened in region b: b:seasonal/tas_2025.nc",
    ]
