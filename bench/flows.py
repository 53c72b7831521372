"""Prefect overhead of each analysis flow on a running cluster, beside the Dask compute time and beside a trivial
one-task Prefect flow on the same machine (the floor any Prefect flow pays here).

Prepares the demo's data once (S3 on loopback, sync, index: ``run_demo``; an existing ``--workdir`` holding it is
reused), starts a local two-region cluster, then runs each flow once to warm the workers (their first Prefect
task imports Prefect; shown as "first run") and --repeat more times, against a temporary Prefect server. Compute
time is what the flow's locality block measured around the Dask computation; overhead is wall time minus
compute, everything else the run does (Prefect, opening, checks, writing, artifacts).

    python bench/flows.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# `python bench/flows.py` puts bench/ first on sys.path, where this file would shadow the `flows` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

GOAL_SECONDS = 2.0


def _timed(run, repeat: int) -> tuple[float, list[float], list[float]]:
    t0 = time.perf_counter()
    res = run()
    first = time.perf_counter() - t0
    walls, computes = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = run()
        walls.append(time.perf_counter() - t0)
        computes.append(getattr(res, "compute_seconds", 0.0))
    return first, walls, computes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per flow after the warm-up run")
    parser.add_argument("--workdir", help="default: a temp folder; one from an earlier run skips the data setup")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="proximate-bench-flows-")).resolve()

    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        from prefect import flow, task

        from blocks.catalog import CatalogConfig
        from blocks.cluster import ClusterTaskRunner
        from deployments.demo import FORECAST_REGION, OBSERVATIONS_REGION, run_demo
        from flows.analysis import compare_forecast_to_observations, seasonal_mean, summarize
        from proximate.catalog.query import DatasetQuery
        from proximate.cluster import LocalRegionalCluster

        catalog_db = workdir / "catalog" / "proximate.sqlite"
        if not catalog_db.exists():
            run_demo(workdir, workers_per_region=2)  # data synced and indexed
        CatalogConfig(backend="sqlite", sqlite_path=str(catalog_db)).save("demo-catalog", overwrite=True)
        roots = {r: workdir / "regions" / r for r in (FORECAST_REGION, OBSERVATIONS_REGION)}
        query = DatasetQuery(text="synthetic daily temperature")
        out = workdir / "bench"
        os.environ["PROXIMATE_OUTPUT_ROOTS"] = str(out)  # absolute outputs go only under roots allowed

        @task
        def one() -> int:
            return 1

        @flow
        def trivial() -> int:
            return one.submit().result()

        flows = {
            "compare-forecast-to-observations": lambda addr: compare_forecast_to_observations(
                forecast=f"{FORECAST_REGION}:forecast/air_temperature.nc",
                observations=f"{OBSERVATIONS_REGION}:observations/air_temperature.nc",
                height=10.0,  # the observations' level (the demo's observations say so; older data may not)
                output=str(out / "compare.nc"),
                overwrite=True,  # the bench's own scratch results, rerun after rerun
                scheduler_address=addr,
            ),
            "seasonal-mean": lambda addr: seasonal_mean(
                query=query,
                variable="tas",
                output=str(out / "seasonal.nc"),
                overwrite=True,  # the bench's own scratch results, rerun after rerun
                catalog="demo-catalog",
                scheduler_address=addr,
            ),
            "summarize": lambda addr: summarize(
                query=query,
                variables=["tas"],
                dims=["time"],
                statistics=["mean", "std"],
                output=str(out / "summaries"),
                overwrite=True,  # the bench's own scratch results, rerun after rerun
                catalog="demo-catalog",
                scheduler_address=addr,
            ),
        }
        with LocalRegionalCluster(roots, workers_per_region=2) as cluster:
            floors = {
                "trivial flow, 1 task (thread pool)": lambda: trivial(),
                "trivial flow, 1 task on the cluster (DaskTaskRunner)": lambda: trivial.with_options(
                    task_runner=ClusterTaskRunner(address=cluster.address)
                )(),
            }
            floor_rows = []
            for name, run in floors.items():
                first, walls, _ = _timed(run, args.repeat)
                floor_rows.append((name, first, statistics.median(walls)))
            rows = []
            for name, run in flows.items():
                first, walls, computes = _timed(lambda run=run: run(cluster.address), args.repeat)
                wall, compute = statistics.median(walls), statistics.median(computes)
                rows.append((name, first, wall, compute, wall - compute))
    floor = floor_rows[-1][2]
    print(f"\nlocal two-region cluster (2 workers per region); medians of {args.repeat} runs after one warm-up run\n")
    print("| flow | first run s | wall s | Dask compute s | overhead s | overhead beyond the trivial flow s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, first, wall in floor_rows:
        print(f"| {name} | {first:.2f} | {wall:.2f} | | {wall:.2f} | |")
    for name, first, wall, compute, overhead in rows:
        print(f"| {name} | {first:.2f} | {wall:.2f} | {compute:.2f} | **{overhead:.2f}** | {overhead - floor:.2f} |")
    met = all(overhead <= GOAL_SECONDS for *_, overhead in rows)
    worst = max(overhead for *_, overhead in rows)
    print(f"\ngoal: at most {GOAL_SECONDS:.0f} s of overhead per analysis flow: {'met' if met else 'NOT met'} "
          f"(worst {worst:.2f} s; the trivial flow on the cluster takes {floor:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
