"""README command (a) runs in CI so it cannot rot: the whole demo, in-process against the test server."""

from __future__ import annotations

import os

import xarray as xr


def _expected_minimum(name: str, regions, result: xr.DataArray) -> int:
    """What must cross regions at least, computed here from the files the demo generated."""
    if name == "compare":  # the smaller operand of forecast-mean-level minus observations, then the result
        with (
            xr.open_dataset(regions / "ecmwf" / "forecast" / "air_temperature.nc") as f,
            xr.open_dataset(regions / "gcp" / "observations" / "air_temperature.nc") as o,
        ):
            level = f.air_temperature.isel(realization=0, height=10).nbytes
            return min(level, o.air_temperature.nbytes) + result.nbytes
    partials = []  # seasonal: one year per region; the smaller region's sums and counts cross, then the result
    for path in (regions / "ecmwf" / "daily" / "tas_2024.nc", regions / "gcp" / "daily" / "tas_2025.nc"):
        with xr.open_dataset(path) as ds:
            seasons = ds.tas.where(ds.tas >= 150.0).groupby("time.season")
            partials.append(seasons.sum().nbytes + seasons.count().nbytes)
    return min(partials) + result.nbytes


def test_end_to_end_demo(prefect_server, tmp_path, capsys):
    from flows.demo import run_demo

    results = run_demo(tmp_path / "demo", workers_per_region=1)
    out = capsys.readouterr().out
    assert "ecmwf: synced" in out and "gcp: synced" in out
    for name in ("compare", "seasonal"):
        res = results[name]
        with xr.open_dataset(res.output) as ds:
            result = ds[next(iter(ds.data_vars))]
            assert result.notnull().any()
            minimum = _expected_minimum(name, tmp_path / "demo" / "regions", result)
        assert res.budget.minimum == minimum, (name, res)
        assert res.cross_region_bytes <= 1.1 * minimum, (name, res)
        assert (tmp_path / "demo" / "results" / f"{res.output.rsplit('/', 1)[1][:-3]}.png").stat().st_size > 1000
    assert len(results["seasonal"].datasets) == 2  # one year in each region


def test_demo_environment_is_one_explicit_dict_applied_for_the_demo_only(tmp_path, monkeypatch):
    from flows.demo import demo_environment, environment

    monkeypatch.setenv("DO_NOT_TRACK", "0")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    env = demo_environment(tmp_path, {"PREFECT_HOME": "/somewhere/else", "AWS_ACCESS_KEY_ID": "mine"})
    assert "PREFECT_HOME" not in env and "AWS_ACCESS_KEY_ID" not in env  # what the caller set stays
    assert env["DO_NOT_TRACK"] == "1" and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"  # never telemetry
    assert env["AWS_DEFAULT_REGION"] == "us-east-1" and env["AWS_SECRET_ACCESS_KEY"] == "demo-secret"
    assert demo_environment(tmp_path, {})["PREFECT_HOME"] == str(tmp_path / "prefect")
    before = dict(os.environ)
    with environment(env):
        assert os.environ["DO_NOT_TRACK"] == "1" and os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert dict(os.environ) == before  # changed values back, added ones gone
