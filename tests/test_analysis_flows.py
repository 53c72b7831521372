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
            return {a.key: a for a in arts}

    return asyncio.run(read())


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
