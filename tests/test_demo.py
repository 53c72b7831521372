"""README command (a) runs in CI so it cannot rot: the whole demo, in-process against the test server."""

from __future__ import annotations

import xarray as xr


def test_end_to_end_demo(prefect_server, tmp_path, capsys):
    from flows.demo import run_demo

    results = run_demo(tmp_path / "demo", workers_per_region=1)
    out = capsys.readouterr().out
    assert "ecmwf: synced" in out and "gcp: synced" in out
    for name in ("compare", "seasonal"):
        res = results[name]
        assert res["cross_region_bytes"] <= 1.1 * res["minimum_bytes"], (name, res)
        with xr.open_dataset(res["output"]) as ds:
            assert ds[next(iter(ds.data_vars))].notnull().any()
        assert (tmp_path / "demo" / "results" / f"{res['output'].rsplit('/', 1)[1][:-3]}.png").stat().st_size > 1000
    assert len(results["seasonal"]["datasets"]) == 2  # one year in each region
