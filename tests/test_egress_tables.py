"""The table flows' egress parameters through a real Prefect server on the two-region cluster: ``dry_run`` reads
the tables' metadata only and writes the plan artifact, ``max_egress_gb`` refuses before any region task, and the
plan's bytes are those the run then carries.

Oracles: the Parquet footers read here with pyarrow (what each region reads), the flow's own ``minimum_bytes``
(each region task's state as it came back, pickled) and the locality report (the bytes the workers wrote) of the
same run. The plan predicts the bytes written (the state in Dask's reply message), so it sits between the two.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from test_analysis_flows import _artifacts
from test_tables import DURATION, TRIPS_A, TRIPS_B, trips  # noqa: F401 - the fixture writing the tables

from proximate.analysis import ParameterError
from proximate.egress import EgressBudgetError, EgressPlan
from proximate.locality_report import locality

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "trips")]  # flow runs: > 10 s under load

COLUMNS = ["passenger_count", "trip_distance"]


@pytest.fixture(autouse=True)
def outputs_under_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXIMATE_OUTPUT_ROOTS", str(tmp_path))


def _describe(cluster, out, **kwargs):
    from flows.tabular import describe_table

    return describe_table(
        datasets=[f"a:{TRIPS_A}", f"b:{TRIPS_B}"],
        columns=COLUMNS,
        output=str(out),
        scheduler_address=cluster.address,
        **kwargs,
    )


def _fit(cluster, out, **kwargs):
    from flows.tabular import fit_linear_regression

    return fit_linear_regression(
        datasets=[f"a:{TRIPS_A}", f"b:{TRIPS_B}"],
        target="trip_dur_secs",
        features=COLUMNS,
        derive=DURATION,
        output=str(out),
        scheduler_address=cluster.address,
        **kwargs,
    )


def _region_tasks(report) -> list[str]:
    """Names of the tasks that read or reduced rows (anything but the metadata plan)."""
    return [name for name, _, _ in report.tasks if name.startswith(("read-table", "reduce-region", "combine"))]


def test_dry_run_reads_metadata_only_writes_the_plan_artifact_and_sizes_reads_from_parquet_footers(
    cluster, client, region_roots, tmp_path
):
    out = tmp_path / "describe.json"
    with locality(client) as report:
        planned = _describe(cluster, out, dry_run=True)

    assert isinstance(planned, EgressPlan)
    assert not out.exists()
    assert _region_tasks(report) == [], report.tasks  # no row read, no partial reduced
    dry = _artifacts("describe-table-egress-plan")["describe-table-egress-plan"].data
    assert "predicted bytes" in dry and "measured bytes" not in dry, dry
    assert f"**{planned.cross_region_bytes:,}**" in dry
    # Region a's single Parquet file: the columns read, uncompressed, by its own footer.
    footer = pq.ParquetFile(region_roots["a"] / TRIPS_A).metadata
    expected = sum(
        footer.row_group(i).column(j).total_uncompressed_size
        for i in range(footer.num_row_groups)
        for j in range(footer.num_columns)
        if footer.row_group(i).column(j).path_in_schema in COLUMNS
    )
    assert planned.read_bytes["a"] == expected
    assert planned.tasks_by_region == {"a": 4, "b": 2}  # 4 row groups; 1 row group + 1 CSV file
    assert set(planned.bytes_between) == {("a", "client"), ("b", "client")}
    assert planned.bounds == []  # no group_by: the partials' size does not depend on the data


def test_max_egress_gb_below_the_plan_refuses_before_any_region_task(cluster, client, tmp_path):
    out = tmp_path / "refused.json"
    refused = r"nothing submitted: predicted [\d,]+ bytes .* budget max 1 bytes"
    with locality(client) as report, pytest.raises(EgressBudgetError, match=refused):
        _fit(cluster, out, max_egress_gb=1e-9)
    assert _region_tasks(report) == [], report.tasks
    assert not out.exists()
    with pytest.raises(ParameterError, match="max_egress_gb"):
        _fit(cluster, out, max_egress_gb=-1.0)


def test_plan_predicts_the_partials_the_run_carries_within_10_percent(cluster, tmp_path):
    planned = _fit(cluster, tmp_path / "never.json", dry_run=True)
    res = _fit(cluster, tmp_path / "fit.json", max_egress_gb=1.0)
    print(f"\npredicted {planned.cross_region_bytes:,} B, minimum {res['minimum_bytes']:,} B, "
          f"measured {res['cross_region_bytes']:,} B")  # fmt: skip
    # The run plans again: the same sizes, but for a byte or two of the states' timestamps as pickled.
    assert abs(res["predicted_bytes"] - planned.cross_region_bytes) <= 16, (res["predicted_bytes"], planned)
    assert abs(planned.cross_region_bytes - res["minimum_bytes"]) <= 0.1 * res["minimum_bytes"], res
    ran = _artifacts("linear-regression-egress-plan")["linear-regression-egress-plan"].data
    assert "measured bytes" in ran, ran
    locality_md = _artifacts("linear-regression-locality")["linear-regression-locality"].data
    assert "Predicted before the run, beside measured" in locality_md


def test_a_group_by_plan_is_a_bound_from_the_parquet_statistics_and_holds(cluster, tmp_path):
    planned = _describe(cluster, tmp_path / "never.json", group_by="VendorID", dry_run=True)
    # Region a is Parquet only: its VendorID statistics bound the groups; region b has a CSV file: its rows do.
    assert any("a: the partial holds up to 2 'VendorID' groups" in b for b in planned.bounds), planned.bounds
    assert any(b.startswith("b:") and "one group per row" in b for b in planned.bounds), planned.bounds
    res = _describe(cluster, tmp_path / "grouped.json", group_by="VendorID")
    # Region a's bound is tight (2 vendors); b's is loose, but the sum holds.
    assert planned.cross_region_bytes >= res["minimum_bytes"]


def test_plan_is_within_10_percent_of_the_measured_table_flow(cluster, tmp_path):
    planned = _fit(cluster, tmp_path / "never.json", dry_run=True)
    res = _fit(cluster, tmp_path / "fit.json")
    assert abs(planned.cross_region_bytes - res["cross_region_bytes"]) <= 0.1 * res["cross_region_bytes"], res
