"""How long an egress plan takes beside the graph's own construction, on a graph of about N tasks in 4 regions.

No cluster: the plan runs on the client before anything is submitted. Printed: the graph's construction (the
collection), its materialisation (what computing it costs before the scheduler sees a task) and the plan. Each
region holds one pinned field; the fields are combined pairwise and reduced, so derived tasks take inputs from two
regions.

    python bench/plan_speed.py --tasks 100000
"""

from __future__ import annotations

import argparse
import math
import time

import dask.array as da

from proximate.egress import plan
from proximate.pools import pool

REGIONS = ("r0", "r1", "r2", "r3")


def build(tasks: int) -> da.Array:
    """About ``tasks`` tasks: 4 pinned fields of n x n chunks, two sums across regions, their product's mean."""
    # per field: n*n reads; 2 adds + 1 multiply over n*n chunks; the mean's tree adds about n*n more
    n = max(1, int(math.sqrt(tasks / 8)))
    fields = []
    for i, region in enumerate(REGIONS):
        with pool(region):
            fields.append(da.random.default_rng(i).random((n * 10, n * 10), chunks=10))
    return ((fields[0] + fields[1]) * (fields[2] + fields[3])).mean(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    started = time.perf_counter()
    graph = build(args.tasks)
    built = time.perf_counter()
    ntasks = len(dict(graph.__dask_graph__()))  # the graph's own materialisation, as the scheduler does it
    materialised = time.perf_counter()
    egress = plan(graph)
    planned = time.perf_counter()
    print(
        f"{ntasks:,} tasks: construction {built - started:.2f} s, materialisation {materialised - built:.2f} s, "
        f"plan {planned - materialised:.2f} s (walks the layers, never materialises); predicted "
        f"{egress.cross_region_bytes:,} bytes, tasks by region {egress.tasks_by_region}"
    )


if __name__ == "__main__":
    main()
