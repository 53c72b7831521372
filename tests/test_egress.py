"""The egress plan against what the cluster then measures, and budgets that refuse before anything is submitted.

Oracle: :func:`proximate.locality` (the workers' own transfer logs) on the same computation, run on the real
two-region cluster. Tolerance 10% plus 64 KiB: the measurement counts each transfer's serialized size (pickle
and Dask's framing headers, a few hundred bytes per transfer) and the plan counts raw array bytes; a region's
second worker fetching the same input again is also counted by the measurement (once per worker) and not by the
plan (once per region).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from test_routing import OBS, PRED, metoffice  # noqa: F401 - the session fixture writing the Met Office files

import proximate
from proximate.analysis import combine_seasonal, seasonal_partials
from proximate.egress import EgressBudgetError, EgressPlan, plan
from proximate.pools import pool
from proximate.testing import synthetic

SLACK = 64 * 1024


def close_to(predicted: int, measured: int) -> bool:
    return abs(predicted - measured) <= 0.1 * measured + SLACK


def measured(client, obj):
    """Compute ``obj`` on the cluster; returns (result, locality report)."""
    with proximate.locality() as report:
        result = obj.compute()
    # For the record (pytest -s): what the plan said beside what crossed.
    print(f"\nmeasured {report.cross_region_bytes:,} bytes: {report.bytes_between}")
    return result, report


def planned(obj):
    egress = plan(obj)
    print(f"\npredicted {egress.cross_region_bytes:,} bytes: {egress.bytes_between}")
    return egress


def crossing_pairs(bytes_between: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    """The directions in which more than the slack crossed."""
    return {pair for pair, n in bytes_between.items() if pair[0] != pair[1] and n > SLACK}


def scheduler_task_keys(dask_scheduler) -> list[str]:
    return [str(k) for k in dask_scheduler.tasks]


# -- the workloads: prediction beside measurement -----------------------------------------------------------------


@pytest.mark.usefixtures("metoffice")
def test_metoffice_compare_prediction_matches_measurement(client):
    predictions = proximate.open_dataset("a", PRED, chunks={"realization": 1, "height": 4})
    observations = proximate.open_dataset("b", OBS)
    difference = predictions.air_temperature.mean("realization").isel(height=10) - observations.air_temperature

    egress = planned(difference)
    result, report = measured(client, difference)

    assert close_to(egress.cross_region_bytes, report.cross_region_bytes), (egress.bytes_between, report.bytes_between)
    assert crossing_pairs(egress.bytes_between) == crossing_pairs(report.bytes_between)
    # The operands of the subtraction are the same size (one 180 x 360 float32 field each): one of them crosses
    # (the rule's tie-break decides which), then the result goes to the client.
    between_regions = egress.bytes_between.get(("a", "b"), 0) + egress.bytes_between.get(("b", "a"), 0)
    assert between_regions == observations.air_temperature.nbytes
    assert sum(n for (_, dst), n in egress.bytes_between.items() if dst == "client") == result.nbytes
    biggest = egress.biggest_crossing()
    assert {biggest.source, biggest.destination} == {"a", "b"}, egress.crossings  # named before the result
    assert set(egress.tasks_by_region) == set(report.tasks_by_region) == {"a", "b"}


@pytest.mark.usefixtures("metoffice")
def test_single_region_reduction_only_the_result_crosses(client):
    predictions = proximate.open_dataset("a", PRED, chunks={"realization": 1, "height": 4})
    field_mean = predictions.air_temperature.mean(["realization", "height"])

    egress = planned(field_mean)
    result, report = measured(client, field_mean)

    assert egress.bytes_between == {("a", "client"): result.nbytes}
    assert close_to(egress.cross_region_bytes, report.cross_region_bytes), report.bytes_between
    assert set(egress.tasks_by_region) == set(report.tasks_by_region) == {"a"}


@pytest.fixture(scope="module")
def two_years(region_roots):
    """Daily temperature for 2024 in region a and 2025 in region b (this module's own files)."""
    for region, year, seed in (("a", 2024, 7), ("b", 2025, 8)):
        path = region_roots[region] / "egress" / f"tas_{year}.nc"
        if not path.exists():
            days = 366 if year == 2024 else 365
            synthetic.write_netcdf(synthetic.daily_temperature(start=f"{year}-01-01", days=days, seed=seed), path)
    return {"a": "egress/tas_2024.nc", "b": "egress/tas_2025.nc"}


def test_seasonal_mean_across_two_regions_prediction_matches_measurement(client, two_years):
    partials = [
        seasonal_partials(proximate.open_dataset(region, path, chunks={"time": 92}), "tas", valid_min=200.0)
        for region, path in two_years.items()
    ]
    mean = combine_seasonal(partials)

    egress = planned(mean)
    result, report = measured(client, mean)

    assert close_to(egress.cross_region_bytes, report.cross_region_bytes), (egress.bytes_between, report.bytes_between)
    assert crossing_pairs(egress.bytes_between) == crossing_pairs(report.bytes_between)
    assert egress.result_bytes == result.nbytes


def test_full_field_product_keeps_the_larger_side_in_place(client):
    """A graph the plan was not tuned to: a 32 MB field in a times a 16 kB profile in b, then a column sum."""
    with pool("a"):
        field = da.random.default_rng(1).random((2000, 2000), chunks=(1000, 2000))
    with pool("b"):
        profile = da.linspace(0.0, 1.0, 2000, chunks=2000)
    product = (field * profile).sum(axis=0)

    egress = planned(product)
    result, report = measured(client, product)

    np.testing.assert_allclose(result, field.compute().sum(axis=0) * np.linspace(0.0, 1.0, 2000))
    assert egress.bytes_between[("b", "a")] == profile.nbytes  # once into region a, not once per chunk
    assert ("a", "b") not in egress.bytes_between
    assert close_to(egress.cross_region_bytes, report.cross_region_bytes), (egress.bytes_between, report.bytes_between)


def test_join_of_two_regions_zonal_means(client, two_years):
    """Another graph it was not tuned to: each region's zonal mean, then their difference."""
    a = proximate.open_dataset("a", two_years["a"], chunks={"time": 92}).tas.mean(["time", "longitude"])
    b = proximate.open_dataset("b", two_years["b"], chunks={"time": 92}).tas.mean(["time", "longitude"])
    difference = a - b

    egress = planned(difference)
    result, report = measured(client, difference)

    assert close_to(egress.cross_region_bytes, report.cross_region_bytes), (egress.bytes_between, report.bytes_between)
    assert egress.cross_region_bytes >= 2 * result.nbytes  # one zonal mean crosses, then the result


# -- budgets ---------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("metoffice")
def test_budget_below_the_prediction_refuses_and_submits_nothing(client):
    predictions = proximate.open_dataset("a", PRED, chunks={"realization": 1, "height": 4})
    observations = proximate.open_dataset("b", OBS)
    difference = predictions.air_temperature.mean("realization").isel(height=10) - observations.air_temperature
    predicted = plan(difference).cross_region_bytes

    with proximate.locality() as report:
        with pytest.raises(EgressBudgetError) as refused:
            proximate.compute(difference, max_cross_region_bytes=predicted // 2)
        with pytest.raises(EgressBudgetError) as refused_in_block, proximate.egress_budget(max_bytes=predicted - 1):
            proximate.compute(difference)

    for error in (refused.value, refused_in_block.value):
        message = str(error)
        assert f"predicted {predicted:,} bytes" in message, message
        assert "budget max" in message and "nothing submitted" in message
        biggest = error.plan.biggest_crossing()
        assert f"the biggest crossing is {biggest.name!r}: {biggest.nbytes:,} bytes" in message, message
        assert f"from {biggest.source!r} to {biggest.destination!r}" in message, message
    assert report.tasks == [] and report.tasks_by_region == {}
    names = {str(k[0]) if isinstance(k, tuple) else str(k) for k in difference.data.__dask_graph__()}
    on_scheduler = client.run_on_scheduler(scheduler_task_keys)
    assert not any(name in key for key in on_scheduler for name in names), on_scheduler


@pytest.mark.usefixtures("metoffice")
def test_budget_above_the_prediction_runs(client):
    predictions = proximate.open_dataset("a", PRED, chunks={"realization": 1, "height": 4})
    observations = proximate.open_dataset("b", OBS)
    difference = predictions.air_temperature.mean("realization").isel(height=10) - observations.air_temperature
    egress = planned(difference)

    with proximate.egress_budget(max_bytes=2 * egress.cross_region_bytes, max_usd=1.0), proximate.locality() as report:
        result = proximate.compute(difference, max_cross_region_bytes=2 * egress.cross_region_bytes)

    xr.testing.assert_allclose(result, difference.compute())
    assert report.tasks_by_region.get("a", 0) > 0 and report.cross_region_bytes <= 2 * egress.cross_region_bytes


def test_cost_budget_with_a_price_table_override_refuses(client):
    with pool("a"):
        big = da.ones((1000, 1000), chunks=500)  # 8 MB to the client
    egress = planned(big)
    assert egress.bytes_between == {("a", "client"): 8_000_000}
    assert egress.cost() == pytest.approx(0.008 * 0.09)
    assert egress.cost({("a", "client"): 1000.0}) == pytest.approx(8.0)
    with proximate.egress_budget(max_usd=1.0):
        assert proximate.compute(big).sum() == 10**6  # at the default internet price: far below $1
        refused = pytest.raises(EgressBudgetError, match=r"predicted \$8\.0+ for 8,000,000 bytes.*budget max \$1")
        with refused, proximate.egress_budget(max_usd=1.0, prices={("a", "client"): 1000.0}):
            proximate.compute(big)


def test_price_lookup_order_and_bad_budgets():
    egress = EgressPlan(bytes_between={("a", "b"): 10**9, ("b", "client"): 10**9, ("a", "a"): 10**9})
    assert egress.cost() == pytest.approx(0.02 + 0.09)  # same-region bytes are free
    assert egress.cost({("a", "*"): 0.05}) == pytest.approx(0.05 + 0.09)
    assert egress.cost({("*", "*"): 0.0, ("*", "client"): 0.0}) == 0.0
    with pytest.raises(ValueError, match="max_bytes"), proximate.egress_budget(max_bytes=-1):
        pass


def test_dataframe_plan_is_a_stated_lower_bound():
    """DataFrame partitions have no size in the graph: the plan places them but says it cannot size them."""
    import dask.dataframe as dd
    import pandas as pd

    from proximate.egress import plan_markdown

    frame = dd.from_pandas(pd.DataFrame({"g": [1, 2] * 50, "x": range(100)}), npartitions=4)
    egress = plan(frame.groupby("g").x.sum(), region="a")
    assert set(egress.tasks_by_region) == {"a"} and egress.unsized_tasks > 0 and not egress.exact
    assert "A lower bound" in plan_markdown(egress)


def test_plan_sizes_every_array_task_after_culling():
    """Culling renames and rebuilds layers; every array chunk must still be sized (no cluster needed)."""
    with pool("a"):
        field = da.random.default_rng(1).random((2000, 2000), chunks=(1000, 2000))
    with pool("b"):
        profile = da.linspace(0.0, 1.0, 2000, chunks=2000)
    egress = plan((field * profile).sum(axis=0)[:5])
    assert egress.exact and egress.unsized_tasks == 0
    assert egress.bytes_between == {("b", "a"): profile.nbytes, ("a", "client"): 5 * 8}
