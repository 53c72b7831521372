"""Acceptance: a region's backlog scales that region alone, on a cluster of separate processes started by
``proximate cluster up --min-workers 1 --max-workers 3``, and scaling down loses neither tasks nor data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, wait

import proximate
from proximate.locality_report import workers_markdown
from proximate.scheduler_plugin import retire_in_region, scheduler_backlog

# slow: its one test runs `proximate cluster up` with autoscaling through two bursts (about 100 s under load)
pytestmark = pytest.mark.slow

PROXIMATE = str(Path(sys.executable).with_name("proximate"))
TASKS = 40


def one_second(i: int, runs: str) -> int:
    """A one-second task that leaves a mark per execution, so a rerun would show."""
    with open(os.path.join(runs, str(i)), "a") as fh:
        fh.write(os.environ["PROXIMATE_REGION"] + "\n")
    time.sleep(1.0)
    return i


def _counts(client: Client) -> dict[str, int]:
    out = {"a": 0, "b": 0}
    for w in client.scheduler_info(n_workers=-1)["workers"].values():
        for resource in w["resources"]:
            out[resource.removeprefix("pool-")] += 1
    return out


def test_a_backlog_in_region_a_scales_a_alone_and_back_without_losing_a_task_or_data(tmp_path):
    for name in ("A", "B", "runs"):
        (tmp_path / name).mkdir()
    runs = str(tmp_path / "runs")
    proc = subprocess.Popen(
        [
            *(PROXIMATE, "cluster", "up", "--region", f"a={tmp_path / 'A'}", "--region", f"b={tmp_path / 'B'}"),
            *("--min-workers", "1", "--max-workers", "3"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), proc.stderr.read() if proc.poll() is not None else address
        with Client(address, timeout=30) as client:
            assert _counts(client) == {"a": 1, "b": 1}  # each region starts at its minimum
            assert {"a", "b"} <= {v for v in client.run(lambda: os.environ["PROXIMATE_REGION"]).values()}
            measuring = proximate.locality(client)  # the analysis flows' report: workers per region over the run
            locality = measuring.__enter__()
            t0 = time.monotonic()
            futures = [client.submit(one_second, i, runs, resources={"pool-a": 0}, pure=False) for i in range(TASKS)]
            # the backlog as the scheduler reports it: all of it a's, with expected seconds
            deadline = time.monotonic() + 10
            report = client.run_on_scheduler(scheduler_backlog)["regions"]
            while report["a"]["tasks"] < TASKS - 5 and time.monotonic() < deadline:  # the graph is on its way
                time.sleep(0.1)
                report = client.run_on_scheduler(scheduler_backlog)["regions"]
            assert report["a"]["tasks"] >= TASKS - 5 and report["a"]["seconds"] > 0, report
            assert report["b"]["tasks"] == 0 and len(report["b"]["workers"]) == 1, report
            samples: list[tuple[float, dict[str, int]]] = []
            reached_max = None
            while not all(f.done() for f in futures):
                samples.append((time.monotonic() - t0, _counts(client)))
                if reached_max is None and samples[-1][1]["a"] == 3:
                    reached_max = samples[-1][0]
                assert time.monotonic() - t0 < 120, samples[-1]
                time.sleep(0.5)
            drained = time.monotonic() - t0
            holders = client.who_has(futures)
            wait(futures)
            back_to_min = None
            while back_to_min is None:
                samples.append((time.monotonic() - t0, _counts(client)))
                if samples[-1][1]["a"] == 1:
                    back_to_min = samples[-1][0] - drained
                assert time.monotonic() - t0 < drained + 90, samples[-1]
                time.sleep(0.5)
            measuring.__exit__(None, None, None)
            print(
                f"a at 3 workers after {reached_max} s, drained at {drained:.1f} s, back to 1 after {back_to_min:.1f} s"
            )
            print([(round(t, 1), c["a"]) for t, c in samples])
            assert reached_max is not None and reached_max <= 30, samples
            assert all(c["b"] == 1 for _, c in samples), samples  # b never moved
            assert max(c["a"] for _, c in samples) == 3  # never above the maximum
            assert back_to_min <= 60, samples
            a_over_run = [n for _, n in locality.workers_by_region["a"]]
            assert (a_over_run[0], max(a_over_run), a_over_run[-1]) == (1, 3, 1), locality.workers_by_region
            assert {n for _, n in locality.workers_by_region["b"]} == {1}
            assert "| a | 1 | 1 | 3 | 1 |" in workers_markdown(locality)

            # every task ran exactly once, in region a
            marks = {p.name: p.read_text().splitlines() for p in (tmp_path / "runs").iterdir()}
            assert sorted(marks, key=int) == [str(i) for i in range(TASKS)]
            assert all(m == ["a"] for m in marks.values()), marks
            # data the retired workers held is still there, now on a's remaining worker
            live = {w: info for w, info in client.scheduler_info(n_workers=-1)["workers"].items()}
            retired_keys = [k for k, ws in holders.items() if not set(ws) & set(live)]
            assert retired_keys, "the retired workers held some results"
            assert client.gather(futures) == list(range(TASKS))
            for key, ws in client.who_has(futures).items():
                assert ws and all("pool-a" in live[w]["resources"] for w in ws), (key, ws)
            # the scheduler side refuses to retire a region's last holder of data, whoever asks
            (last,) = [w for w, info in live.items() if "pool-a" in info["resources"]]
            answer = client.run_on_scheduler(retire_in_region, workers=[last])
            assert answer["retired"] == [] and "holds the only copy of 40 key(s)" in answer["kept"][last], answer
            assert client.gather(futures) == list(range(TASKS))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
