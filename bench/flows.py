"""Prefect overhead of each analysis flow: total wall time minus the Dask compute time, next to the compute time.

Runs the demo's data preparation (S3 on loopback, sync, index) once, then each flow --repeat times on a local
two-region cluster against a temporary Prefect server. Compute time is what the flow's locality block measured
around the Dask computation.

    python bench/flows.py --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# `python bench/flows.py` puts bench/ first on sys.path, where this file would shadow the `flows` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", help="default: a temp folder")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="proximate-bench-flows-"))

    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        from flows.analysis import compare_forecast_to_observations, seasonal_mean, summarize
        from flows.demo import FORECAST_REGION, OBSERVATIONS_REGION, run_demo
        from proximate.catalog.query import DatasetQuery
        from proximate.cluster import LocalRegionalCluster

        run_demo(workdir, workers_per_region=2)  # data synced and indexed, demo-catalog block saved
        roots = {r: workdir / "regions" / r for r in (FORECAST_REGION, OBSERVATIONS_REGION)}
        query = DatasetQuery(text="synthetic daily temperature")
        flows = {
            "compare-forecast-to-observations": lambda addr: compare_forecast_to_observations(
                forecast=f"{FORECAST_REGION}:forecast/air_temperature.nc",
                observations=f"{OBSERVATIONS_REGION}:observations/air_temperature.nc",
                height_index=10,
                output=str(workdir / "bench" / "compare.nc"),
                scheduler_address=addr,
            ),
            "seasonal-mean": lambda addr: seasonal_mean(
                query=query,
                variable="tas",
                output=str(workdir / "bench" / "seasonal.nc"),
                catalog="demo-catalog",
                scheduler_address=addr,
            ),
            "summarize": lambda addr: summarize(
                query=query,
                variables=["tas"],
                dims=["time"],
                statistics=["mean", "std"],
                output=str(workdir / "bench" / "summaries"),
                catalog="demo-catalog",
                scheduler_address=addr,
            ),
        }
        rows = []
        with LocalRegionalCluster(roots, workers_per_region=2) as cluster:
            for name, run in flows.items():
                walls, computes = [], []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    res = run(cluster.address)
                    walls.append(time.perf_counter() - t0)
                    computes.append(res.compute_seconds)
                wall, compute = statistics.median(walls), statistics.median(computes)
                rows.append((name, wall, compute, wall - compute))
    print(f"\nmedian of {args.repeat} runs per flow, local two-region cluster (2 workers per region)\n")
    print("| flow | wall s | Dask compute s | Prefect overhead s | overhead share |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, wall, compute, overhead in rows:
        print(f"| {name} | {wall:.1f} | {compute:.2f} | {overhead:.1f} | {overhead / wall:.0%} |")


if __name__ == "__main__":
    main()
