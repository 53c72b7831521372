"""Derived-column expressions as an attacker writes them: refused before any work when their cost is unbounded, and,
when a runaway passes every static check, stopped in its own child process so the region's worker keeps its event
loop and heartbeats and only the runaway's own run fails."""

from __future__ import annotations

import operator
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import psutil
import pytest

from proximate import sandbox, tables
from proximate.client import worker_regions
from proximate.datasets import RegionPath
from proximate.testing import synthetic

# -- refused before any work ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression, message",
    [
        ("a + 10**10**10", r"'a \+ 10\*\*10\*\*10' raises to the power 10000000000, beyond the limit of 100"),
        ("9**9**8", r"'9\*\*9\*\*8' raises to the power 43046721, beyond the limit of 100"),
        ("a ** 1000", "raises to the power 1000, beyond the limit of 100"),
        ("a * 7**99", r"computes '7 \*\* 99', larger than 2\*\*63"),
        ("a * (2**40 * 2**40)", r"computes '2 \*\* 40 \* 2 \*\* 40', larger than 2\*\*63"),
        ("a + 99999999999999999999999", r"holds a number larger than 2\*\*63"),
        ("a + 1e300 ** 2", "computes a number too large for a float"),
        ("a + (-8) ** 0.5", "computes a complex number"),
        ("a + 1 / 0", "divides by zero in '1 / 0'"),
        ("-" * 900 + "a", "is nested deeper than 32 levels"),
        ("a + " * 250 + "a", "is longer than 1000 characters"),
        ("+".join(["(a*a)"] * 60), "is nested deeper than 32 levels|has more than 200 parts"),
        ("+".join(f"({'+'.join(['a'] * 20)})" for _ in range(12)), "has more than 200 parts"),
    ],
)
def test_an_expression_of_unbounded_cost_is_refused_naming_it_and_the_limit(expression, message):
    started = time.monotonic()
    with pytest.raises(tables.TableInputError, match=message) as refused:
        tables.Derivations({"x": expression})
    assert "derived column 'x'" in str(refused.value)
    assert expression[:40] in str(refused.value)  # the expression itself (shortened when long) is named
    assert time.monotonic() - started < 5  # refused by the check, not after computing anything


def test_a_deeply_nested_expression_is_a_table_input_error_not_a_recursion_error():
    for expression in ("-" * 100_000 + "a", "(" * 100_000 + "a" + ")" * 100_000, "a" + "+a" * 100_000):
        with pytest.raises(tables.TableInputError, match="derived column 'x'"):
            tables.Derivations({"x": expression})


def test_a_text_that_is_not_an_expression_or_too_many_columns_are_refused():
    with pytest.raises(tables.TableInputError, match=r"derived column 'x': 12 is not an expression"):
        tables.Derivations({"x": 12})
    with pytest.raises(tables.TableInputError, match="65 derived columns: at most 64"):
        tables.Derivations({f"c{i}": "a + 1" for i in range(65)})


def test_bounded_constants_still_fold_to_what_pandas_computes():
    frame = pd.DataFrame({"a": np.arange(10, dtype="float64")})
    got = tables.derive_columns(frame, {"x": "a * 10**6 + 2**62 * 2 / 3", "y": "a ** 2 - -(3 % 2)"})
    pd.testing.assert_series_equal(got.x, frame.a * 10**6 + 2**62 * 2 / 3, check_names=False)
    pd.testing.assert_series_equal(got.y, frame.a**2 + 1, check_names=False)


# -- the sandbox ---------------------------------------------------------------------------------------------------


def test_a_bounded_call_past_its_cpu_memory_or_wall_limit_fails_and_the_next_call_works():
    with pytest.raises(sandbox.LimitExceeded, match="more than 2 s of CPU time") as cpu:
        sandbox.run_bounded(operator.pow, 9, 9**8, limits=sandbox.Limits(cpu_seconds=2, wall_seconds=120))
    assert cpu.value.limit == "cpu"
    with pytest.raises(MemoryError):
        sandbox.run_bounded(operator.mul, "x" * 1000, 10**8, limits=sandbox.Limits(memory_bytes=2**30))
    with pytest.raises(sandbox.LimitExceeded, match="longer than 1 s of wall-clock time"):
        sandbox.run_bounded(time.sleep, 60, limits=sandbox.Limits(wall_seconds=1))
    with pytest.raises(ValueError, match="invalid literal"):
        sandbox.run_bounded(int, "x", limits=sandbox.Limits())
    assert sandbox.run_bounded(sum, [1, 2, 3], limits=sandbox.Limits()) == 6


def test_limits_from_the_environment_are_checked():
    limits = sandbox.Limits.from_env({sandbox.CPU_ENV: "30", sandbox.MEMORY_ENV: "512", sandbox.WALL_ENV: ""})
    assert (limits.cpu_seconds, limits.memory_bytes, limits.wall_seconds) == (30.0, 512 * 2**20, 900.0)
    with pytest.raises(ValueError, match="PROXIMATE_PARTIAL_CPU_SECONDS='lots' is not a number"):
        sandbox.Limits.from_env({sandbox.CPU_ENV: "lots"})
    with pytest.raises(ValueError, match="PROXIMATE_PARTIAL_MEMORY_MB='-1' must be positive"):
        sandbox.Limits.from_env({sandbox.MEMORY_ENV: "-1"})


# -- a runaway on a real two-region cluster ------------------------------------------------------------------------

#: Passes every static check (a column times 99), yet on a text column each step repeats every string 99 times:
#: 30 characters become 29 million at the third step and 2.9 billion at the fourth, per row.
RUNAWAY = {"x": "s * 99", "y": "x * 99", "z": "y * 99", "w": "z * 99"}


@pytest.mark.slow
def test_a_runaway_derive_fails_its_own_run_while_its_worker_and_another_region_keep_working(client, region_roots):
    runaway_csv = region_roots["a"] / "runaway" / "text.csv"
    runaway_csv.parent.mkdir(parents=True, exist_ok=True)
    runaway_csv.write_text("s\n" + "\n".join(f"row {i:04d} of a harmless text col" for i in range(20)) + "\n")
    trips = synthetic.trips(5_000, seed=21)
    synthetic.write_parquet(trips, region_roots["b"] / "runaway" / "trips.parquet", row_group_size=2_500)
    regions = worker_regions(client)
    workers_a = sorted(w for w, r in regions.items() if r == "a")
    pids_a = client.run(lambda: __import__("os").getpid(), workers=workers_a)

    limits = sandbox.Limits(cpu_seconds=120, memory_bytes=2 * 2**30, wall_seconds=300)
    runaway = tables.TableQuestion("describe", ("w",), derive=tables.Derivations(RUNAWAY), limits=limits)
    normal = tables.TableQuestion("describe", ("fare_amount",), derive=tables.Derivations({"f2": "fare_amount * 2"}))
    before = _sandbox_cpu(pids_a.values())  # children kept idle from earlier calls, and their CPU time
    with ThreadPoolExecutor(2) as pool:
        run_a = pool.submit(tables.region_partial, client, [RegionPath("a", "runaway/text.csv")], runaway)
        # Wait until the runaway computes: a bounded-call child of a worker of region a burning CPU.
        deadline = time.monotonic() + 120
        while not (busy := [pid for pid, cpu in _sandbox_cpu(pids_a.values()).items() if cpu > before.get(pid, 0) + 1]):
            assert time.monotonic() < deadline and not run_a.done(), "the runaway never started computing"
            time.sleep(0.2)
        # While it computes, every worker of region a still answers (its event loop is free)...
        probe = pool.submit(client.run, lambda: "alive", workers=workers_a)
        assert probe.result(timeout=60) == dict.fromkeys(workers_a, "alive")
        assert psutil.pid_exists(busy[0]), "the runaway ended before the probe: the probe proved nothing"
        # ...and a run in region b completes, equal to pandas.
        run_b = tables.region_partial(client, [RegionPath("b", "runaway/trips.parquet")], normal)
        got = tables.answer(normal, run_b)["columns"]["fare_amount"]
        assert got["count"] == len(trips)
        np.testing.assert_allclose(got["mean"], trips.fare_amount.mean(), rtol=1e-9)
        # The runaway fails its own run, naming the expressions and the limit.
        with pytest.raises(
            tables.TableInputError, match=r"'w': 'z \* 99'.*on 20 rows ran out of its 2147483648 B memory"
        ):
            run_a.result(timeout=240)
    # Afterwards region a's workers are the same processes (none was restarted) and answer.
    assert client.run(lambda: __import__("os").getpid(), workers=workers_a) == pids_a
    assert not psutil.pid_exists(busy[0]) or psutil.Process(busy[0]).status() == psutil.STATUS_ZOMBIE


def _sandbox_cpu(worker_pids) -> dict[int, float]:
    """CPU seconds used by each bounded-call child (``python -m proximate.sandbox``) of the given workers."""
    found = {}
    for pid in worker_pids:
        try:
            for child in psutil.Process(pid).children():
                with child.oneshot():
                    if "proximate.sandbox" in " ".join(child.cmdline()):
                        times = child.cpu_times()
                        found[child.pid] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)  # a Prefect server and a cluster to start on a loaded machine, then two flow runs
def test_the_describe_table_flow_fails_naming_a_runaway_expression_and_the_next_run_completes(
    prefect_server, cluster, client, region_roots, tmp_path, monkeypatch
):
    """The flow path, with the workers' own limits (the environment's defaults): the runaway's flow run fails
    with a TableInputError naming the expression; region a's workers are the same processes afterwards, and a
    run over both regions completes."""
    monkeypatch.setenv("PROXIMATE_OUTPUT_ROOTS", str(tmp_path))  # its outputs are absolute, under tmp_path
    from flows.tabular import describe_table

    runaway_csv = region_roots["a"] / "runaway-flow" / "text.csv"
    runaway_csv.parent.mkdir(parents=True, exist_ok=True)
    runaway_csv.write_text("s\n" + "\n".join(f"row {i:04d} of a harmless text col" for i in range(20)) + "\n")
    trips = synthetic.trips(4_000, seed=22)
    synthetic.write_parquet(trips, region_roots["b"] / "runaway-flow" / "trips.parquet")
    workers_a = sorted(w for w, r in worker_regions(client).items() if r == "a")
    pids_a = client.run(lambda: __import__("os").getpid(), workers=workers_a)

    with pytest.raises(tables.TableInputError, match=r"'w': 'z \* 99'.*on 20 rows ran out of its \d+ B memory"):
        describe_table(datasets=["a:runaway-flow/text.csv"], columns=["w"], derive=RUNAWAY,
                       output=str(tmp_path / "runaway.json"), scheduler_address=cluster.address)  # fmt: skip
    assert not (tmp_path / "runaway.json").exists()
    assert client.run(lambda: __import__("os").getpid(), workers=workers_a) == pids_a
    res = describe_table(datasets=["b:runaway-flow/trips.parquet"], columns=["fare_amount"],
                         output=str(tmp_path / "b.json"), scheduler_address=cluster.address)  # fmt: skip
    assert res["columns"]["fare_amount"]["count"] == len(trips)
    np.testing.assert_allclose(res["columns"]["fare_amount"]["mean"], trips.fare_amount.mean(), rtol=1e-9)
