"""Table flows at scale: rows per second of describe-table and fit-linear-regression over generated taxi trips in
two regions, and the bytes that crossed regions beside the bytes of the rows (what a centralised run would move).

Generates ``--rows`` trips per region as Parquet (row groups of 500,000), starts a local two-region cluster and a
temporary Prefect server, and runs each flow ``--repeat`` times.

    python bench/tabular.py --rows 10000000 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# `python bench/tabular.py` puts bench/ first on sys.path, where this file would shadow the `flows` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

DURATION = {"trip_dur_secs": "(tpep_dropoff_datetime - tpep_pickup_datetime).dt.total_seconds()"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="trips per region")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers-per-region", type=int, default=2)
    parser.add_argument("--workdir", help="default: a temp folder")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="proximate-bench-tabular-"))

    from proximate.testing import synthetic

    roots = {r: workdir / "regions" / r for r in ("a", "b")}
    row_bytes = 0
    for i, (region, root) in enumerate(roots.items()):
        path = root / "trips.parquet"
        if not path.exists():
            t0 = time.perf_counter()
            trips = synthetic.trips(args.rows, seed=20 + i)
            synthetic.write_parquet(trips, path, row_group_size=500_000)
            print(f"generated {args.rows:,} trips in {region} in {time.perf_counter() - t0:.1f} s")
            row_bytes += int(trips.memory_usage(index=False).sum())
            del trips
        else:
            import pyarrow.parquet as pq

            row_bytes += pq.read_table(path).to_pandas().memory_usage(index=False).sum()

    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        from flows.tabular import describe_table, fit_linear_regression
        from proximate.cluster import LocalRegionalCluster

        datasets = ["a:trips.parquet", "b:trips.parquet"]
        os.environ["PROXIMATE_OUTPUT_ROOTS"] = str(workdir)  # absolute outputs go only under roots allowed
        flows = {
            "describe-table (by vendor, derived duration)": lambda addr: describe_table(
                datasets=datasets,
                columns=["trip_distance", "fare_amount", "trip_dur_secs"],
                group_by="VendorID",
                derive=DURATION,
                output=str(workdir / "describe.json"),
                overwrite=True,  # the bench's own scratch results, rerun after rerun
                scheduler_address=addr,
            ),
            "fit-linear-regression (duration on distance, passengers)": lambda addr: fit_linear_regression(
                datasets=datasets,
                target="trip_dur_secs",
                features=["trip_distance", "passenger_count"],
                derive=DURATION,
                output=str(workdir / "fit.json"),
                overwrite=True,  # the bench's own scratch results, rerun after rerun
                scheduler_address=addr,
            ),
        }
        rows = []
        with LocalRegionalCluster(roots, workers_per_region=args.workers_per_region) as cluster:
            for name, run in flows.items():
                walls, crossed = [], []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    res = run(cluster.address)
                    walls.append(time.perf_counter() - t0)
                    crossed.append(res["cross_region_bytes"])
                rows.append((name, statistics.median(walls), max(crossed)))
    total = 2 * args.rows
    print(f"\n{total:,} rows in two regions ({row_bytes / 2**20:,.0f} MiB in memory), median of {args.repeat} runs\n")
    print("| flow | wall s | rows/s | bytes crossing regions | rows' bytes / crossed |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, wall, cross in rows:
        print(f"| {name} | {wall:.1f} | {total / wall:,.0f} | {cross:,} | {row_bytes / max(cross, 1):,.0f}x |")


if __name__ == "__main__":
    main()
