"""Tables in two regions: read where they live, reduced there, only partials cross; results equal pandas/numpy on
the concatenated rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from proximate import tables
from proximate.datasets import RegionPath
from proximate.locality_report import locality
from proximate.testing import synthetic

TRIPS_A = "tables/trips_a.parquet"
TRIPS_B = "tables/trips_b"  # a folder: one Parquet file and one CSV file
DURATION = {"trip_dur_secs": "(tpep_dropoff_datetime - tpep_pickup_datetime).dt.total_seconds()"}


@pytest.fixture(autouse=True)
def outputs_under_tmp_path(tmp_path, monkeypatch):
    """These tests write their results to absolute paths under ``tmp_path``: allow that root (empty by default)."""
    monkeypatch.setenv("PROXIMATE_OUTPUT_ROOTS", str(tmp_path))


@pytest.fixture(scope="module")
def trips(region_roots):
    """80,000 trips in region a (4 row groups) and 60,000 in region b (Parquet + CSV); returns all rows."""
    a = synthetic.trips(80_000, seed=11)
    b = synthetic.trips(60_000, start="2024-02-01", seed=12)
    synthetic.write_parquet(a, region_roots["a"] / TRIPS_A, row_group_size=20_000)
    synthetic.write_parquet(b.iloc[:40_000], region_roots["b"] / TRIPS_B / "part-0.parquet")
    b.iloc[40_000:].to_csv(region_roots["b"] / TRIPS_B / "part-1.csv", index=False)
    both = pd.concat([a, b], ignore_index=True)
    assert both.memory_usage().sum() > 10 * 2**20  # megabytes of rows, against partials of kilobytes
    return both


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_region_partials_read_in_their_region_and_combine_to_pandas(client, trips):
    question = tables.TableQuestion("describe", ("trip_distance", "fare_amount", "trip_dur_secs"), "VendorID",
                                    derive=tables.Derivations(DURATION))  # fmt: skip
    parts = []
    for where, partitions in ((RegionPath("a", TRIPS_A), 4), (RegionPath("b", TRIPS_B), 2)):
        with locality(client) as report:
            parts.append(tables.region_partial(client, [where], question))
        reads = [region for name, region, _ in report.tasks if name.startswith("read-")]
        assert reads == [where.region] * partitions, report.tasks  # one read per row group or CSV, all in place
    result = tables.answer(question, tables.combine(parts))

    rows = trips.assign(trip_dur_secs=(trips.tpep_dropoff_datetime - trips.tpep_pickup_datetime).dt.total_seconds())
    for column in ("trip_distance", "fare_amount", "trip_dur_secs"):
        expected = rows[column].describe()
        got = result["columns"][column]
        assert got["count"] == expected["count"]
        np.testing.assert_allclose([got[k] for k in ("mean", "std", "min", "max")],
                                   [expected[k] for k in ("mean", "std", "min", "max")], rtol=1e-9)  # fmt: skip
    groups = rows.groupby("VendorID")["fare_amount"].agg(["count", "sum", "mean"])
    for vendor, expected in groups.iterrows():
        got = result["groups"][str(vendor)]["fare_amount"]
        np.testing.assert_allclose([got["count"], got["sum"], got["mean"]], expected.values, rtol=1e-9)


def test_a_persisted_table_stays_in_its_region_and_answers_again_without_reads(client, trips):
    import proximate

    frame = tables.open_table("a", TRIPS_A, client=client, persist=True)
    with locality(client) as report:
        total = proximate.compute(frame.fare_amount.sum(), region="a", client=client)
    assert np.isclose(total, trips.fare_amount.iloc[:80_000].sum())
    assert not [name for name, _, _ in report.tasks if name.startswith("read-")]  # answered from memory
    from distributed import futures_of

    from proximate.client import worker_regions

    held = client.who_has(futures_of(frame))
    assert {worker_regions(client)[w] for ws in held.values() for w in ws} == {"a"}, held  # every partition in a


def test_a_read_outside_its_region_fails_naming_region_and_path(client, trips):
    """A read forced onto a worker of the wrong region by name (the router pins reads by their file over any pool
    annotation, #32, but leaves a task placed on a named worker alone) fails naming region and path."""
    from proximate.client import worker_regions

    part = tables.TablePart(RegionPath("a", TRIPS_A), 0)
    worker_b = next(address for address, region in worker_regions(client).items() if region == "b")
    future = client.submit(tables.read_part, part, workers=[worker_b], pure=False)
    with pytest.raises(FileNotFoundError, match="region 'a' is not reachable from region 'b'"):
        future.result()


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_describe_table_flow_equals_pandas_and_moves_only_partials(prefect_server, cluster, trips, tmp_path):
    from flows.tabular import describe_table

    res = describe_table(
        datasets=[f"a:{TRIPS_A}", f"b:{TRIPS_B}"],
        columns=["passenger_count", "trip_dur_secs"],
        group_by="VendorID",
        derive=DURATION,
        output=str(tmp_path / "describe.json"),
        scheduler_address=cluster.address,
    )
    rows = trips.assign(trip_dur_secs=(trips.tpep_dropoff_datetime - trips.tpep_pickup_datetime).dt.total_seconds())
    expected = rows["trip_dur_secs"].describe()
    np.testing.assert_allclose(res["columns"]["trip_dur_secs"]["mean"], expected["mean"], rtol=1e-9)
    np.testing.assert_allclose(res["columns"]["trip_dur_secs"]["std"], expected["std"], rtol=1e-9)
    assert res["groups"]["1"]["passenger_count"]["count"] == (rows.VendorID == 1).sum()
    # What a region sends: 5 moments and 2 group sums per column, 8 bytes each, for 2 vendors and 2 columns,
    # plus pickling and Prefect's state around them: kilobytes, never the megabytes of rows.
    partial_floats = 2 * (5 * 2 + 2 * 2 * 2) * 8
    assert partial_floats < res["cross_region_bytes"] < 64 * 2**10, res["cross_region_bytes"]
    assert (tmp_path / "describe.json").stat().st_size > 100
    # The run page shows the per-group answer a group_by asks for, not only the overall statistics.
    grouped = _table_artifact("describe-table-groups")
    counts = {(r["VendorID"], r["column"]): r["count"] for r in grouped}
    assert counts[("1", "passenger_count")] == (rows.VendorID == 1).sum()
    assert counts[("2", "trip_dur_secs")] == (rows.VendorID == 2).sum()


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_fit_linear_regression_flow_equals_numpy_lstsq(prefect_server, cluster, trips, tmp_path):
    from flows.tabular import fit_linear_regression

    res = fit_linear_regression(
        datasets=[f"a:{TRIPS_A}", f"b:{TRIPS_B}"],
        target="trip_dur_secs",
        features=["trip_distance", "passenger_count"],
        derive=DURATION,
        output=str(tmp_path / "fit.json"),
        scheduler_address=cluster.address,
    )
    y = (trips.tpep_dropoff_datetime - trips.tpep_pickup_datetime).dt.total_seconds().to_numpy()
    x = np.column_stack([np.ones(len(trips)), trips.trip_distance, trips.passenger_count])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    r2 = 1 - ((y - x @ beta) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    np.testing.assert_allclose([res["intercept"], res["coefficients"]["trip_distance"],
                                res["coefficients"]["passenger_count"], res["r2"]], [*beta, r2], rtol=1e-7)  # fmt: skip
    assert res["n"] == len(trips)
    assert res["cross_region_bytes"] < 64 * 2**10
    # The artifact says how many rows the fit used and rounds to what the data supports (six significant digits).
    terms = {r["term"]: r["value"] for r in _table_artifact("linear-regression-statistics")}
    assert terms["n (rows used)"] == len(trips)
    assert terms["intercept"] == float(f"{beta[0]:.6g}") and terms["r2"] == float(f"{r2:.6g}")


def _table_artifact(key: str) -> list[dict]:
    """The rows of the latest table artifact ``key``, as the Prefect server stores them."""
    import asyncio
    import json

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as c:
            return await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    [artifact, *_] = sorted(asyncio.run(read()), key=lambda a: a.created, reverse=True)
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


@pytest.mark.parametrize(
    "expression, message",
    [
        ("__import__('os').system('true')", "is not allowed"),
        ("fare_amount.__class__", "is not allowed"),
        ("fare_amount +", "is not an expression"),
        ("fare_amount + 10**10**10", "raises to the power 10000000000, beyond the limit of 100"),
        ("9**9**8", "raises to the power 43046721, beyond the limit of 100"),
    ],
)
def test_derived_columns_outside_the_language_are_refused_before_any_cluster_work(
    prefect_server, tmp_path, expression, message
):
    from flows.tabular import describe_table

    with pytest.raises(tables.TableInputError, match=message):
        describe_table(datasets=["a:t.parquet"], derive={"x": expression}, output=str(tmp_path / "x.json"),
                       scheduler_address="tcp://127.0.0.1:1")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_derived_columns_compute_what_pandas_computes():
    frame = synthetic.trips(500, seed=5)
    expressions = {**DURATION, "per_mile": "fare_amount / trip_distance", "hour": "tpep_pickup_datetime.dt.hour",
                   "neg": "-fare_amount ** 2 % 7"}  # fmt: skip
    got = tables.derive_columns(frame, expressions)
    pd.testing.assert_series_equal(
        got.trip_dur_secs, (frame.tpep_dropoff_datetime - frame.tpep_pickup_datetime).dt.total_seconds(),
        check_names=False,
    )  # fmt: skip
    pd.testing.assert_series_equal(got.per_mile, frame.fare_amount / frame.trip_distance, check_names=False)
    pd.testing.assert_series_equal(got.hour, frame.tpep_pickup_datetime.dt.hour, check_names=False)
    pd.testing.assert_series_equal(got.neg, -(frame.fare_amount**2) % 7, check_names=False)


def test_bad_columns_constant_targets_and_no_rows_fail_clearly(client, trips, region_roots):
    with pytest.raises(tables.TableInputError, match=r"no column\(s\) \['tip'\].*it has VendorID"):
        tables.region_partial(client, [RegionPath("a", TRIPS_A)], tables.TableQuestion("describe", ("tip",)))
    constant = tables.TableQuestion("regression", ("trip_distance",), target="one",
                                    derive=tables.Derivations({"one": "VendorID * 0 + 1"}))  # fmt: skip
    with pytest.raises(tables.TableInputError, match="the target is constant"):
        tables.answer(constant, tables.region_partial(client, [RegionPath("a", TRIPS_A)], constant))
    empty = tables.NormalEquations.of(pd.DataFrame({"y": [np.nan], "x": [1.0]}), "y", ["x"])
    with pytest.raises(tables.TableInputError, match="no rows to fit"):
        empty.solve(["x"])


def test_tables_are_catalogued_with_columns_rows_time_span_and_bbox(tmp_path):
    from proximate.catalog.extract import extract

    frame = synthetic.trips(3_000, seed=8)
    synthetic.write_parquet(frame, tmp_path / "trips.parquet", row_group_size=1_000)
    frame.to_csv(tmp_path / "trips.data", index=False)  # a CSV by its content, whatever its name
    (tmp_path / "notes.txt").write_text("not a table\njust, some text\n")
    expected_bbox = [frame.pickup_longitude.min(), frame.pickup_latitude.min(), frame.pickup_longitude.max(),
                     frame.pickup_latitude.max()]  # fmt: skip
    for name, fmt in (("trips.parquet", "parquet"), ("trips.data", "csv")):
        record = extract(tmp_path / name, region="a", rel_path=name)
        assert (record.status, record.format, record.dimensions) == ("ok", fmt, {"rows": 3_000})
        assert {v.name: v.dtype for v in record.variables}["tpep_pickup_datetime"].startswith("datetime64")
        assert set(record.variable_names) == set(frame.columns)
        np.testing.assert_allclose(record.bbox, expected_bbox)
        assert pd.Timestamp(record.time_start) == frame.tpep_pickup_datetime.min()
        assert pd.Timestamp(record.time_end) == frame.tpep_dropoff_datetime.max()
    from proximate.formats import detect_format

    assert detect_format(tmp_path / "notes.txt") == "unknown"


# -- a table flow's minimum and measured bytes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_run(prefect_server, cluster, trips, tmp_path_factory, region_roots):
    """One fit-linear-regression run on the two regions, and each region's partial as pickled alone (computed here,
    through a plain client, not by the flow)."""
    import pickle

    from distributed import Client

    from flows.tabular import fit_linear_regression

    out = tmp_path_factory.mktemp("fit")
    question = tables.TableQuestion(
        "regression", ("trip_distance", "passenger_count"), target="trip_dur_secs", derive=tables.Derivations(DURATION)
    )
    with pytest.MonkeyPatch.context() as mp:  # the autouse fixture is per test; this run is per module
        mp.setenv("PROXIMATE_OUTPUT_ROOTS", str(out))
        res = fit_linear_regression(
            datasets=[f"a:{TRIPS_A}", f"b:{TRIPS_B}"],
            target="trip_dur_secs",
            features=["trip_distance", "passenger_count"],
            derive=DURATION,
            output=str(out / "fit.json"),
            scheduler_address=cluster.address,
        )
    with Client(cluster.address, set_as_default=False) as c:
        alone = [
            len(pickle.dumps(tables.region_partial(c, [RegionPath(r, p)], question), protocol=5))
            for r, p in (("a", TRIPS_A), ("b", TRIPS_B))
        ]
    return res, alone


@pytest.mark.slow  # a flow run and two region reductions: over 10 s under load
def test_table_flow_minimum_counts_the_partials_as_prefect_carries_them(regression_run):
    res, alone = regression_run
    # Prefect's task state around each partial is counted now (the minimum was the partials alone: 20x below
    # what was measured), and it stays kilobytes: the state, not rows.
    assert res["minimum_bytes"] > sum(alone) + 2 * 512, (res["minimum_bytes"], alone)
    assert res["minimum_bytes"] < 2 * 8 * 2**10, res["minimum_bytes"]
    assert res["minimum_bytes"] <= res["cross_region_bytes"], res


@pytest.mark.slow  # shares the flow run above
def test_table_flow_measured_bytes_are_near_the_minimum(regression_run):
    res, _ = regression_run
    assert 0.8 <= res["cross_region_bytes"] / res["minimum_bytes"] <= 1.5, res
