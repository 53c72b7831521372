"""The router's cost at scale: scheduler CPU per task with the proximate router against plain Dask, same graph.

Two real clusters in turn, each a ``dask scheduler`` process and one ``dask worker`` per region with its
``pool-<region>`` resource (:class:`proximate.cluster.LocalRegionalCluster`): one with ``--preload
proximate.scheduler_plugin`` (the router), one without (plain Dask: the pinned reads still go to their pools by
their annotations, derived tasks wherever Dask puts them). Each computes the same graph of about ``--tasks`` tasks
over 4 regions (:func:`plan_speed.build`: a pinned field per region, sums across regions, their product's mean).
The scheduler's CPU (utime + stime from ``/proc/<pid>/stat``) is read just before the submission and after the
result, so start-up is not counted (the client's materialisation is the client's CPU, in the wall time only); a
small computation first warms both schedulers.

    python bench/scale.py --tasks 100000   # the issue's size; minutes on a quiet 2-core machine
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import dask

sys.path.insert(0, str(Path(__file__).parent))
from plan_speed import REGIONS, build

from proximate.cluster import LocalRegionalCluster


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of process ``pid`` so far, from ``/proc/<pid>/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), counted from 1
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def run(router: bool, tasks: int, roots: dict[str, Path]) -> dict[str, float]:
    """Compute the graph on a fresh cluster (with or without the router); its scheduler's CPU and wall time."""
    with (
        LocalRegionalCluster(roots, workers_per_region=1, router=router) as cluster,
        cluster.client() as client,
        dask.config.set({"optimization.fuse.active": False}),  # the tasks as built: the same count both ways
    ):
        build(800).compute()  # warm-up: imports and first connections, not counted
        graph = build(tasks)
        # What the scheduler receives: the graph after the client's optimisation (blockwise layers merged).
        ntasks = len(dict(graph.__dask_optimize__(graph.__dask_graph__(), graph.__dask_keys__())))
        pid = cluster.processes["scheduler"].pid
        before, started = cpu_seconds(pid), time.perf_counter()
        # Counted from before the submission: the scheduler's handling of the graph (update_graph) is its work too.
        client.compute(graph).result()
        after, wall = cpu_seconds(pid), time.perf_counter() - started
    return {"tasks": ntasks, "cpu": after - before, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="about this many tasks (default 100,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="proximate-scale-") as tmp:
        roots = {r: Path(tmp) / r for r in REGIONS}
        for root in roots.values():
            root.mkdir()
        load = os.getloadavg()[0]
        plain = run(False, args.tasks, roots)
        ours = run(True, args.tasks, roots)
    for name, r in (("plain Dask", plain), ("proximate router", ours)):
        print(
            f"{name:17s} {r['tasks']:,} tasks: scheduler CPU {r['cpu']:.2f} s, "
            f"{r['cpu'] / r['tasks'] * 1e6:.0f} us/task, wall {r['wall']:.1f} s"
        )
    ratio = (ours["cpu"] / ours["tasks"]) / (plain["cpu"] / plain["tasks"])
    print(f"router/plain scheduler CPU per task: {ratio:.2f}x (goal <= 1.3x); 1-min load average at start {load:.1f}")


if __name__ == "__main__":
    main()
