"""Per-region autoscaling against fixed workers at the maximum, on a bursty workload, in one run.

A burst of ``--tasks`` tasks of ``--seconds`` each pinned to region a; when it has drained and ``--gap`` seconds
passed, the same burst in region b. Run twice, each on a fresh two-region cluster of separate processes:

(i)  autoscaled: each region starts at ``--min-workers`` and scales on its own backlog up to ``--max-workers``;
(ii) fixed: ``--max-workers`` workers in every region for the whole run.

Worker-seconds are the workers per region (registered with the scheduler, or for the autoscaled run asked for and
still starting or stopping, whichever is more), sampled every 0.25 s and integrated from the first submission to
the last result (what the workers would be billed for over the workload; a fixed cluster
also pays for every idle hour outside it, which is not counted). Makespan is that same window. The goal: the
autoscaled run uses at most 60% of the fixed run's worker-seconds for at most 1.3x its makespan.

Worker start-up (a ``dask worker`` process with its nanny, importing xarray) is on the autoscaled run's critical
path; the script prints how long this machine took, since on a loaded machine it decides the makespan.

    python bench/autoscale.py                       # 60 one-second tasks per burst, 60 s apart, 1..3 workers
    python bench/autoscale.py --gap 15              # less idle time between the bursts
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from distributed import wait

from proximate.autoscale import autoscaled, parse_bounds
from proximate.cluster import LocalRegionalCluster

REGIONS = ("a", "b")


def busy(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


class Sampler:
    """Registered workers per region, every ``interval`` s, in a thread of its own."""

    def __init__(self, client, interval: float = 0.25, backend=None) -> None:
        self.client, self.interval, self.backend = client, interval, backend
        #: (time, workers paid for per region): registered, or asked for and still starting/stopping.
        self.samples: list[tuple[float, dict[str, int]]] = []
        #: (time, registered workers per region).
        self.registered: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            counts = dict.fromkeys(REGIONS, 0)
            for w in self.client.scheduler_info(n_workers=-1)["workers"].values():
                for resource in w["resources"]:
                    counts[resource.removeprefix("pool-")] += 1
            now = time.monotonic()
            self.registered.append((now, counts))
            if self.backend is not None:  # a worker still starting or stopping is paid for too
                counts = {r: max(n, self.backend.requested(r)) for r, n in counts.items()}
            self.samples.append((now, counts))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def worker_seconds(self, t0: float, t1: float) -> float:
        total = 0.0
        for (ta, ca), (tb, _) in zip(self.samples, self.samples[1:], strict=False):
            lo, hi = max(ta, t0), min(tb, t1)
            if hi > lo:
                total += (hi - lo) * sum(ca.values())
        return total


def workload(client, tasks: int, seconds: float, gap: float, bursts: list) -> tuple[float, float]:
    """The bursts; returns (start, end) monotonic times and appends each burst's (region, start, end)."""
    t0 = time.monotonic()
    for n, region in enumerate(REGIONS):
        tb = time.monotonic()
        futures = [client.submit(busy, i, seconds, resources={f"pool-{region}": 0}, pure=False) for i in range(tasks)]
        wait(futures)
        assert client.gather(futures) == list(range(tasks))
        del futures
        bursts.append((region, tb, time.monotonic()))
        if n < len(REGIONS) - 1:
            time.sleep(gap)
    return t0, time.monotonic()


def run(roots: dict[str, Path], args: argparse.Namespace, scaled: bool) -> dict:
    bounds = parse_bounds(list(REGIONS), [str(args.min_workers)], [str(args.max_workers)])
    start = args.min_workers if scaled else args.max_workers
    t_start = time.monotonic()
    bursts: list[tuple[str, float, float]] = []
    with LocalRegionalCluster(roots, workers_per_region=start) as cluster, cluster.client() as client:
        boot = time.monotonic() - t_start
        if scaled:
            with (
                autoscaled(cluster, bounds, scale_down_after=args.scale_down_after) as scaler,
                Sampler(client, backend=scaler.backend) as sampler,
            ):
                t0, t1 = workload(client, args.tasks, args.seconds, args.gap, bursts)
            errors = scaler.errors + [str(e) for e in scaler.backend.errors]
        else:
            with Sampler(client) as sampler:
                t0, t1 = workload(client, args.tasks, args.seconds, args.gap, bursts)
            errors = []
        peak = {r: max(c[r] for _, c in sampler.samples) for r in REGIONS}
        # the first time a region exceeded its start count: how long scaling up took to register a worker
        first_up = next((t - t0 for t, c in sampler.registered if t >= t0 and c["a"] > start), None)
        phases = []
        for region, tb, te in bursts:
            at_max = next((t - tb for t, c in sampler.registered if t >= tb and c[region] >= args.max_workers), None)
            phases.append((region, te - tb, at_max))
        return {
            "phases": phases,
            "makespan": t1 - t0,
            "worker_seconds": sampler.worker_seconds(t0, t1),
            "peak": peak,
            "boot": boot,
            "first_extra_worker": first_up,
            "errors": errors,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=60, help="tasks per burst")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per task")
    parser.add_argument("--gap", type=float, default=60.0, help="seconds between the bursts")
    parser.add_argument("--min-workers", type=int, default=1)
    parser.add_argument("--max-workers", type=int, default=3)
    parser.add_argument("--scale-down-after", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="proximate-bench-autoscale-") as tmp:
        roots = {r: Path(tmp) / r for r in REGIONS}
        for root in roots.values():
            root.mkdir()
        fixed = run(roots, args, scaled=False)
        scaled = run(roots, args, scaled=True)
    ws = scaled["worker_seconds"] / fixed["worker_seconds"]
    ms = scaled["makespan"] / fixed["makespan"]
    print(
        f"bursts of {args.tasks} x {args.seconds:g} s tasks in a, then b ({args.gap:g} s apart);"
        f" {args.min_workers}..{args.max_workers} workers per region"
    )
    print("| run | makespan s | worker-seconds | peak workers a, b |\n| --- | ---: | ---: | ---: |")
    for name, r in (("fixed at the maximum", fixed), ("autoscaled", scaled)):
        print(f"| {name} | {r['makespan']:.1f} | {r['worker_seconds']:.0f} | {r['peak']['a']}, {r['peak']['b']} |")
    print(
        f"autoscaled/fixed: worker-seconds {ws:.2f} (goal <= 0.60: {'met' if ws <= 0.6 else 'not met'}),"
        f" makespan {ms:.2f}x (goal <= 1.3x: {'met' if ms <= 1.3 else 'not met'})"
    )
    first = scaled["first_extra_worker"]
    print(
        f"first extra worker registered {'never' if first is None else f'{first:.1f} s'} after the first burst began;"
        f" cluster start-up {fixed['boot']:.1f} s (fixed, {2 * args.max_workers} workers),"
        f" {scaled['boot']:.1f} s (autoscaled, {2 * args.min_workers})"
    )
    for name, r in (("fixed", fixed), ("autoscaled", scaled)):
        print(
            f"{name}: "
            + "; ".join(
                f"burst {reg} {d:.1f} s" + ("" if m is None else f", at {args.max_workers} workers after {m:.1f} s")
                for reg, d, m in r["phases"]
            )
        )
    if scaled["errors"]:
        print("autoscaler errors:", scaled["errors"])


if __name__ == "__main__":
    main()
