"""Tables of two regions in one Dask graph (#32): merges, concatenations, group-bys and set_index route task by task,
every read in its table's region; results equal pandas on the same rows."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import futures_of

import proximate
from proximate import tables
from proximate.client import worker_regions
from proximate.datasets import RegionPath
from proximate.locality_report import locality
from proximate.testing import synthetic

LEFT = "tables32/left.parquet"  # region a, 4 row groups
RIGHT = "tables32/right.parquet"  # region b, 4 row groups
STATIONS = "tables32/stations.parquet"  # region b, small: one row group
STATIONS_A = "tables32/stations_a.parquet"  # region a, one row group
ROWS = 40_000
KEYS = 2_000
STATION_ROWS = 20_000


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "k": rng.integers(0, KEYS, rows).astype("int64"),
            "v": rng.normal(0.0, 1.0, rows),
            "w": rng.integers(0, 100, rows).astype("int64"),
        }
    )


@pytest.fixture(scope="module")
def frames(region_roots) -> dict[str, pd.DataFrame]:
    """The tables' rows, written as Parquet in their regions; the oracle works on these frames directly."""
    left, right = _frame(ROWS, 321), _frame(ROWS, 654)
    # Bigger than a partition of the large side, so that "most input bytes" alone would join in the wrong region.
    stations = pd.DataFrame({"k": np.arange(STATION_ROWS, dtype="int64"), "elevation": np.arange(STATION_ROWS) * 1.5})
    synthetic.write_parquet(left, region_roots["a"] / LEFT, row_group_size=ROWS // 4)
    synthetic.write_parquet(right, region_roots["b"] / RIGHT, row_group_size=ROWS // 4)
    synthetic.write_parquet(stations, region_roots["b"] / STATIONS, row_group_size=STATION_ROWS)
    synthetic.write_parquet(stations, region_roots["a"] / STATIONS_A, row_group_size=STATION_ROWS)
    return {"left": left, "right": right, "stations": stations}


def _start_reads() -> None:
    from proximate.io import start_read_log

    start_read_log()


def _stop_reads() -> list[str]:
    from proximate.io import stop_read_log

    return [str(where) for where in stop_read_log()]


class Reads:
    """Which region's workers read which table files (the workers' read logs) during the block."""

    def __init__(self, client) -> None:
        self.client = client
        self.by_region: dict[str, list[str]] = {}

    def __enter__(self) -> Reads:
        self.client.run(_start_reads)
        return self

    def __exit__(self, *exc) -> None:
        regions = worker_regions(self.client)
        for address, paths in self.client.run(_stop_reads).items():
            self.by_region.setdefault(regions[address], []).extend(paths)

    def assert_in_place(self) -> None:
        """Reads happened, and every one ran in the region its file belongs to."""
        assert any(self.by_region.values()), self.by_region
        for region, paths in self.by_region.items():
            stray = [p for p in paths if not p.startswith(f"{region}:")]
            assert not stray, f"region {region} read {stray}"


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns)).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("shuffle_method", ["p2p", "tasks"])
def test_a_merge_of_two_regions_tables_equals_pandas_reading_in_place(client, frames, shuffle_method):
    left = tables.open_table("a", LEFT, client=client)
    right = tables.open_table("b", RIGHT, client=client)
    merged = left.merge(right, on="k", shuffle_method=shuffle_method)
    with Reads(client) as reads, locality(client) as report:
        got = merged.compute()
    reads.assert_in_place()
    expected = frames["left"].merge(frames["right"], on="k")
    pd.testing.assert_frame_equal(_sorted(got), _sorted(expected))
    print(shuffle_method, report.bytes_between, report.tasks_by_region)


def _between_regions(report) -> int:
    return report.bytes_between.get(("a", "b"), 0) + report.bytes_between.get(("b", "a"), 0)


def _merged_sum(client, shuffle_method: str):
    """The two regions' tables, and the sums of both value columns of their merge on ``k`` (lazy)."""
    left = tables.open_table("a", LEFT, client=client)
    right = tables.open_table("b", RIGHT, client=client)
    return left, right, left.merge(right, on="k", shuffle_method=shuffle_method)[["v_x", "v_y"]].sum()


def _computed_in_place_equal_to_pandas(client, frames, total):
    """Compute the merged sums, check every read ran in its region and the answer is pandas', and return the
    locality report of the computation."""
    with Reads(client) as reads, locality(client) as report:
        got = total.compute()
    reads.assert_in_place()
    expected = frames["left"].merge(frames["right"], on="k")[["v_x", "v_y"]].sum()
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9)
    return report


@pytest.mark.slow
@pytest.mark.parametrize("shuffle_method", ["p2p", "tasks"])
def test_a_shuffle_between_regions_is_reported_by_the_locality_report(client, frames, shuffle_method):
    """A reduced result (one number) after a shuffled merge: what crosses between regions is the shuffle's shards,
    about half of each side (each output partition lands on one of the four workers, two per region)."""
    left, right, total = _merged_sum(client, shuffle_method)
    report = _computed_in_place_equal_to_pandas(client, frames, total)
    sides = int(frames["left"].memory_usage(index=False).sum() + frames["right"].memory_usage(index=False).sum())
    crossed = _between_regions(report)
    regions = worker_regions(client).values()
    expected_cross = tables.choose_merge(left, right, client=client).shuffle_cross_bytes(
        {r: sum(1 for x in regions if x == r) for r in set(regions)}
    )
    print(shuffle_method, "crossed", crossed, "of", sides, "expected", expected_cross, report.bytes_between)
    # Measured: p2p 1,030,096 B and tasks 972,095 B against 960,000 B expected (half of each side's 960,000 B).
    # Without P2PSendLog the p2p figure was 4,454 B (measured): the shards travel outside Dask's transfer log.
    assert abs(crossed - expected_cross) <= 0.3 * expected_cross, (crossed, expected_cross, report.bytes_between)


@pytest.mark.slow
@pytest.mark.parametrize("shuffle_method", ["p2p", "tasks"])
def test_the_plan_of_a_shuffle_between_regions_bounds_and_expects_what_crosses(client, frames, shuffle_method):
    """proximate.plan sizes a shuffled merge of two regions' tables before it runs (from the Parquet footers): its
    upper bound (every shuffled byte leaves its region) holds, and its expected value (outputs spread evenly over
    the four workers) is within 25% of what the locality report then measures between the regions."""
    from proximate.egress import plan_markdown

    _, _, total = _merged_sum(client, shuffle_method)
    egress = proximate.plan(total)  # workers per region from the default client: two in each region
    regions = list(worker_regions(client).values())
    assert proximate.plan(total, workers_by_region={r: regions.count(r) for r in set(regions)}).to_dict() == (
        egress.to_dict()
    )
    report = _computed_in_place_equal_to_pandas(client, frames, total)
    # The oracle of the bound: both sides' rows as pandas holds them (all three columns enter the shuffle).
    sides = int(frames["left"].memory_usage(index=False).sum() + frames["right"].memory_usage(index=False).sum())
    upper = egress.bytes_between.get(("a", "b"), 0) + egress.bytes_between.get(("b", "a"), 0)
    expected_cross = egress.expected_bytes_between.get(("a", "b"), 0) + egress.expected_bytes_between.get(("b", "a"), 0)
    crossed = _between_regions(report)
    print(shuffle_method, "measured", crossed, "upper", upper, "expected", expected_cross, egress.to_dict())
    assert upper == sides, egress.to_dict()
    assert expected_cross == sides // 2, egress.to_dict()  # two workers of four in each region
    assert not egress.exact and egress.bounds, egress.to_dict()
    assert "An upper bound" in plan_markdown(egress) and f"Expected in total: {expected_cross:,}" in plan_markdown(
        egress
    )
    assert crossed <= upper, (crossed, upper, report.bytes_between)
    assert abs(crossed - expected_cross) <= 0.25 * crossed, (crossed, expected_cross, report.bytes_between)


@pytest.mark.slow
def test_a_broadcast_join_moves_the_small_table_once(client, frames):
    large = tables.open_table("a", LEFT, client=client)
    small = tables.open_table("b", STATIONS, client=client)
    joined, choice = tables.merge(large, small, on="k")
    assert choice.strategy == "broadcast" and choice.small_side == "right", choice
    result = joined[["v", "elevation"]].sum()
    with Reads(client) as reads, locality(client) as report:
        got = result.compute()
    reads.assert_in_place()
    expected = frames["left"].merge(frames["stations"], on="k")[["v", "elevation"]].sum()
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9)
    # The oracle: the small table's rows as pandas holds them, and the result's, computed here from the frames.
    small_bytes = int(frames["stations"].memory_usage(index=False).sum())
    result_bytes = int(expected.memory_usage(index=True))
    crossed = report.cross_region_bytes
    print("broadcast", crossed, small_bytes, result_bytes, report.bytes_between, choice)
    assert abs(crossed - (small_bytes + result_bytes)) <= 0.1 * (small_bytes + result_bytes), report.bytes_between
    assert abs(choice.predicted_cross_bytes - small_bytes) <= 0.1 * small_bytes, choice
    # proximate.plan predicts the same crossing before anything runs: the small side from b into a, reads in place.
    egress = proximate.plan(result)
    assert abs(egress.bytes_between.get(("b", "a"), 0) - small_bytes) <= 0.1 * small_bytes, egress.to_dict()
    assert egress.bytes_between.get(("a", "b"), 0) == 0, egress.to_dict()


@pytest.mark.slow
def test_concat_then_groupby_split_out_equals_pandas(client, frames):
    left = tables.open_table("a", LEFT, client=client)
    right = tables.open_table("b", RIGHT, client=client)
    means = dd.concat([left, right]).groupby("k").v.mean(split_out=4)
    egress = proximate.plan(means)
    with Reads(client) as reads, locality(client) as report:
        got = means.compute()
    reads.assert_in_place()
    expected = pd.concat([frames["left"], frames["right"]]).groupby("k").v.mean()
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)
    print("concat-groupby", report.bytes_between, egress.to_dict())
    # The plan sizes the shuffle of the partial means by the rows they derive from: a loose bound, but one.
    upper = egress.bytes_between.get(("a", "b"), 0) + egress.bytes_between.get(("b", "a"), 0)
    assert egress.bounds and 0 < _between_regions(report) <= upper, (report.bytes_between, egress.to_dict())


@pytest.mark.slow
def test_set_index_across_regions_equals_pandas(client, frames):
    left = tables.open_table("a", LEFT, client=client)
    right = tables.open_table("b", RIGHT, client=client)
    indexed = dd.concat([left, right]).set_index("k")
    egress = proximate.plan(indexed)  # computes the divisions (dask-expr does, to build the graph), as compute does
    with Reads(client) as reads, locality(client) as report:
        got = indexed.compute()
    reads.assert_in_place()
    expected = pd.concat([frames["left"], frames["right"]]).set_index("k")
    assert got.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(
        got.reset_index().sort_values(["k", "v", "w"]).reset_index(drop=True),
        expected.reset_index().sort_values(["k", "v", "w"]).reset_index(drop=True),
    )
    print("set_index", report.bytes_between, egress.to_dict())
    # The plan bounds the shuffle by both tables' rows (the oracle: pandas' own sizes of the frames written). What
    # follows it (the sorted partitions gathered into one worker for the client) depends on the data and is not
    # counted, so the measured total (2,554,028 B measured, with the gather) may exceed the bound.
    sides = int(frames["left"].memory_usage(index=False).sum() + frames["right"].memory_usage(index=False).sum())
    upper = egress.bytes_between.get(("a", "b"), 0) + egress.bytes_between.get(("b", "a"), 0)
    assert egress.bounds and not egress.exact and upper == sides, egress.to_dict()


def test_a_read_annotated_for_the_wrong_region_runs_in_its_own(client, frames):
    """Rule 1 beats annotations: a table read submitted with the other region's pool reads in its own region."""
    part = tables.TablePart(RegionPath("a", LEFT), 0)
    with Reads(client) as reads:
        got = client.submit(tables.read_part, part, resources={"pool-b": 0}, pure=False).result()
    assert reads.by_region.get("a") == [f"a:{LEFT}"] and not reads.by_region.get("b"), reads.by_region
    pd.testing.assert_frame_equal(got, frames["left"].iloc[: ROWS // 4])


def test_regions_read_finds_the_table_part_inside_a_fused_task():
    """Dask fuses a read with what follows it into one task whose subgraph holds the read's TablePart."""
    from dask._task_spec import convert_legacy_graph

    from proximate.placement import regions_read

    parts = [tables.TablePart(RegionPath("a", LEFT), i) for i in range(2)]
    frame = dd.from_map(tables.read_part, parts, meta=_frame(0, 0), label="read-table-a", enforce_metadata=False)
    graph = convert_legacy_graph(dict((frame.v + 1).sum().optimize().__dask_graph__()))
    fused = {key: regions_read(task) for key, task in graph.items() if "fused" in str(key)}
    assert fused and set(fused.values()) == {frozenset({"a"})}, fused
    assert all(not regions_read(task) for key, task in graph.items() if key not in fused)


def _read_pair(pair: tuple[tables.TablePart, tables.TablePart]) -> pd.DataFrame:
    """A reader that reads a file of each region in one task: what no region can run."""
    return pd.concat([tables.read_part(part) for part in pair], ignore_index=True)


def test_one_task_reading_two_regions_is_refused_naming_operation_and_regions(client, frames):
    """A task that reads files of two regions cannot run anywhere: refused before anything runs on the client
    (tables.check_reads), and on the scheduler (a plain compute or persist) it fails naming the operation and the
    regions, never a misrouted read."""
    from proximate.errors import CrossRegionReadError

    pair = (tables.TablePart(RegionPath("a", STATIONS_A), 0), tables.TablePart(RegionPath("b", STATIONS), 0))
    paired = dd.from_map(_read_pair, [pair], meta=frames["stations"].iloc[:0], label="read-pair")
    with pytest.raises(CrossRegionReadError, match=r"read-pair reads data of regions a, b in one task"):
        tables.check_reads(paired, "read-pair")
    with pytest.raises(CrossRegionReadError, match=r"read-pair reads data of regions a, b in one task"):
        proximate.plan(paired)
    single_a = tables.open_table("a", STATIONS_A, client=client)
    single_b = tables.open_table("b", STATIONS, client=client)
    with Reads(client) as reads:
        with pytest.raises(CrossRegionReadError, match=r"read-pair reads data of regions a, b in one task"):
            paired.compute()
        with pytest.raises(CrossRegionReadError, match=r"read-pair reads data of regions a, b in one task"):
            client.gather(futures_of(client.persist(paired)))
    assert not any(reads.by_region.values()), reads.by_region  # refused before any read
    # Two one-partition tables of two regions, outer-joined (no side may be broadcast): the helper moves the
    # smaller side once and joins where the other is, so no optimisation can fuse both reads into one task.
    joined, choice = tables.merge(single_a, single_b, on="k", how="outer", suffixes=("_a", "_b"))
    assert choice.strategy == "shuffle", choice
    with Reads(client) as reads:
        got = client.persist(joined).compute()
    reads.assert_in_place()
    expected = frames["stations"].merge(frames["stations"], on="k", how="outer", suffixes=("_a", "_b"))
    pd.testing.assert_frame_equal(_sorted(got), _sorted(expected))
