"""README command (a) runs in CI so it cannot rot: the whole demo, in-process against the test server."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
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
    if name == "scenarios":  # one run's 2070-2099 mean (one year's field) crosses, then the result
        with xr.open_dataset(regions / "gcp" / "real" / "E1_north_america.nc") as e1:
            return e1.air_temperature.isel(time=0).nbytes + result.nbytes
    partials = []  # seasonal: one year per region; the smaller region's sums and counts cross, then the result
    for path in (regions / "ecmwf" / "daily" / "tas_2024.nc", regions / "gcp" / "daily" / "tas_2025.nc"):
        with xr.open_dataset(path) as ds:
            seasons = ds.tas.where(ds.tas >= 150.0).groupby("time.season")
            partials.append(seasons.sum().nbytes + seasons.count().nbytes)
    return min(partials) + result.nbytes


@pytest.mark.slow  # the whole demo: data, S3, a two-region cluster, every flow (about 2 min)
def test_end_to_end_demo(prefect_server, tmp_path, capsys):
    from flows.demo import run_demo

    results = run_demo(tmp_path / "demo", workers_per_region=1)
    out = capsys.readouterr().out
    print(out)  # the demo's own report, shown when the test fails (and with -rP)
    assert "ecmwf: synced" in out and "gcp: synced" in out
    for name in ("compare", "seasonal", "scenarios"):
        res = results[name]
        with xr.open_dataset(res.output) as ds:
            result = ds[next(iter(ds.data_vars))]
            assert result.notnull().any()
            minimum = _expected_minimum(name, tmp_path / "demo" / "regions", result)
        assert res.budget.minimum == minimum, (name, res)
        # What the workers wrote: each transfer's Dask message and the result's pickled coordinates ride on top of
        # the data, a few kB that only the 7 kB scenario difference notices (tests/test_scenarios.py).
        overhead = 4 * 2**10 if name == "scenarios" else 0
        assert res.cross_region_bytes <= 1.1 * minimum + overhead, (name, res)
        assert (tmp_path / "demo" / "results" / f"{res.output.rsplit('/', 1)[1][:-3]}.png").stat().st_size > 1000
    assert len(results["seasonal"].datasets) == 2  # one year in each region
    # The real runs: A1B (in ecmwf) warms North America more than E1 (in gcp) by 2070-2099, as the demo prints.
    assert [str(w) for w in results["scenarios"].datasets] == ["ecmwf:real/A1B_north_america.nc",
                                                                "gcp:real/E1_north_america.nc"]  # fmt: skip
    assert "Air temperature, A1B minus E1, 2070-2099 mean: mean +" in out
    check_tables(results, tmp_path / "demo" / "regions", out)


def check_tables(results, regions, out: str) -> None:
    """The table flows over the trips of both regions equal pandas and numpy on the files the demo generated
    (read here with pandas), and only kilobytes of partials crossed while the rows are megabytes."""
    from flows.demo import TRIPS

    files = [regions / region / path for region, (path, _start, _seed) in TRIPS.items()]
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    rows["trip_dur_secs"] = (rows.tpep_dropoff_datetime - rows.tpep_pickup_datetime).dt.total_seconds()
    describe, regression = results["describe"], results["regression"]
    assert describe["datasets"] == regression["datasets"] == [f"{r}:{p}" for r, (p, _, _) in TRIPS.items()]
    columns = ["passenger_count", "trip_distance", "fare_amount", "trip_dur_secs"]
    expected = rows[columns].describe()
    for column in columns:
        got = describe["columns"][column]
        assert got["count"] == len(rows)
        stats = ["mean", "std", "min", "max"]
        np.testing.assert_allclose([got[k] for k in stats], expected.loc[stats, column].to_numpy(), rtol=1e-9)
    by_vendor = rows.groupby("VendorID")["fare_amount"].agg(["count", "sum", "mean"])
    assert set(describe["groups"]) == {str(v) for v in by_vendor.index}
    for vendor, want in by_vendor.iterrows():
        got = describe["groups"][str(vendor)]["fare_amount"]
        np.testing.assert_allclose([got["count"], got["sum"], got["mean"]], want.to_numpy(), rtol=1e-9)

    y = rows.trip_dur_secs.to_numpy()
    x = np.column_stack([np.ones(len(rows)), rows.trip_distance, rows.passenger_count])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    r2 = 1 - ((y - x @ beta) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    np.testing.assert_allclose([regression["intercept"], regression["coefficients"]["trip_distance"],
                                regression["coefficients"]["passenger_count"], regression["r2"]], [*beta, r2],
                               rtol=1e-7)  # fmt: skip
    assert regression["n"] == len(rows)

    size = sum(f.stat().st_size for f in files)
    assert size > 2 * 2**20  # megabytes of rows in the two regions
    for res, floats in ((describe, 2 * (5 * 4 + 2 * 2 * 4)), (regression, 2 * (3 * 3 + 3))):
        # At least each region's sums (8 bytes a number), at most kilobytes: the partials, never the rows.
        assert floats * 8 < res["cross_region_bytes"] < 64 * 2**10, res
        assert res["minimum_bytes"] <= res["cross_region_bytes"] and res["rows_bytes"] > 100 * res["cross_region_bytes"]
        assert set(res["tasks_by_region"]) >= {"ecmwf", "gcp"}, res["tasks_by_region"]
    assert "describe-table: ecmwf:trips/" in out and "regression-table: " in out and "r2 " in out


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
