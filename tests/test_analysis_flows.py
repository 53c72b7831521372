"""Analysis flows through a real Prefect server on the two-region cluster: results, artifacts, locality."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import xarray as xr

from flows.analysis import compare_forecast_to_observations
from proximate.analysis import AnalysisInputError
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
    got = xr.open_dataset(out)
    np.testing.assert_allclose(got[next(iter(got.data_vars))].values, expected.values, rtol=1e-5, atol=1e-4)
    assert res["cross_region_bytes"] <= 1.1 * res["minimum_bytes"]
    assert res["centralised_bytes"] >= 3 * res["cross_region_bytes"]  # 6 realizations + obs vs 2 fields
    assert set(res["tasks_by_region"]) >= {"a", "b"}
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
    got = xr.open_dataset(out)
    np.testing.assert_allclose(got[next(iter(got.data_vars))].values, expected.values, rtol=1e-5, atol=1e-4)
    # the coarse observations cross raw and are interpolated beside the forecast
    assert res["cross_region_bytes"] <= 1.1 * res["minimum_bytes"], res


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
    assert sorted(res["datasets"]) == ["a:seasonal/tas_2024.nc", "b:seasonal/tas_2025.nc"]
    with xr.open_mfdataset(
        [seasonal_catalog["a"] / "seasonal/tas_2024.nc", seasonal_catalog["b"] / "seasonal/tas_2025.nc"],
        combine="by_coords",
    ) as both:
        tas = both.tas.where(both.tas >= 200.0)
        expected = tas.groupby("time.season").mean().load()
    got = xr.open_dataset(out)
    got_var = got[next(iter(got.data_vars))]
    np.testing.assert_allclose(got_var.sel(season=expected.season).values, expected.values, rtol=1e-5, atol=1e-4)
    assert res["cross_region_bytes"] <= 1.1 * res["minimum_bytes"], res
    assert set(res["tasks_by_region"]) >= {"a", "b"}
    assert {"seasonal-mean-locality", "seasonal-mean-plot", "seasonal-mean-statistics"} <= set(
        _artifacts("seasonal-mean-%")
    )


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
    assert res["datasets"] == ["b:seasonal/tas_2025.nc"]
    (path,) = res["outputs"]
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
