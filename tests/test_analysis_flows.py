"""Analysis flows through a real Prefect server on the two-region cluster: results, artifacts, locality."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import xarray as xr

from flows.analysis import compare_forecast_to_observations
from proximate import synthetic
from proximate.analysis import AnalysisInputError

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
    compare_forecast_to_observations(
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
