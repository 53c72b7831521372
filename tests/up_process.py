"""A running ``proximate up`` for tests (``python -m deployments.up``, what ``proximate up`` runs): started in a
temporary folder with a user's environment, awaited until its ``up.json`` appears, stopped by Ctrl-C and then by
PID. Shared by tests/test_ui.py and tests/test_prefect_postgres.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[1]
#: A loaded 2-core machine is slow, not broken.
UP_TIMEOUT = 900.0


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log ("" if it does not exist)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class Up:
    """A running ``python -m deployments.up`` (what ``proximate up`` runs), as the tests see it."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, log: Path, state: dict[str, Any]) -> None:
        self.proc = proc
        self.workdir = workdir
        self.log = log
        self.state = state

    @property
    def ui(self) -> str:
        return self.state["ui"]

    def logs(self) -> str:
        """The tails of up's output and of the worker's log (where a flow run's traceback is)."""
        return f"--- up:\n{tail(self.log)}\n--- worker:\n{tail(self.workdir / 'logs' / 'prefect-worker.log', 120)}"


@contextlib.contextmanager
def running_up(root: Path, args: Sequence[str] = ()) -> Iterator[Up]:
    """``proximate up --workdir <root>/demo [args]``, its output in ``<root>/up.log``, until the block ends (or a
    test stopped it); whatever outlives its Ctrl-C is killed by PID.

    Args:
        root: a fresh folder.
        args: more options of ``up`` (``--prefect-database URL``).
    """
    workdir = root / "demo"
    log = root / "up.log"
    # Its own Prefect state, not the session's test harness: as a user's shell would have it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH")) if p)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployments.up", "--workdir", str(workdir), *args],
            cwd=PROJECT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state_file = workdir / "up.json"
    running = None
    try:
        deadline = time.monotonic() + UP_TIMEOUT
        while not state_file.exists():
            if proc.poll() is not None:
                pytest.fail(f"proximate up exited with code {proc.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"proximate up was not ready within {UP_TIMEOUT:.0f} s:\n{tail(log)}")
            time.sleep(1)
        running = Up(proc, workdir, log, json.loads(state_file.read_text()))
        yield running
    finally:
        pids = running.state["pids"].values() if running is not None else ()
        if proc.poll() is None:  # the test did not stop it: stop it the way a user does
            os.kill(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=120)
        for pid in [proc.pid, *pids]:  # whatever outlived that, by PID
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        proc.wait(timeout=30)


def seasonal_means_at_once(up: Up, count: int, prefix: str, timeout: float) -> list[str]:
    """``count`` seasonal-mean runs created in one burst through the REST API (as the UI and Prefect's clients
    call it), each writing its own ``<prefix>/seasonal-mean-<i>.nc``; asserts every create is accepted (201, no
    503) and every run Completed within ``timeout`` s, with its file under the results.

    Returns:
        The flow runs' ids.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    api = up.state["api"]
    deployment = httpx.get(f"{api}/deployments/name/seasonal-mean/seasonal-mean", timeout=60).json()
    # Threads, not asyncio: Playwright's sync API holds an event loop in the UI test's thread. The barrier
    # releases all the requests together.
    start = threading.Barrier(count)

    def create(i: int) -> httpx.Response:
        body = {
            "name": f"{prefix}-{i}",
            "parameters": {
                "query": {"text": "synthetic daily temperature"},
                "variable": "tas",
                "output": f"{prefix}/seasonal-mean-{i}.nc",
            },
        }
        with httpx.Client(timeout=180) as client:
            start.wait()
            return client.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json=body)

    with ThreadPoolExecutor(count) as pool:
        created = list(pool.map(create, range(count)))
    assert [r.status_code for r in created] == [201] * count, [r.text[:200] for r in created]
    ids = [r.json()["id"] for r in created]
    deadline = time.monotonic() + timeout
    while True:
        runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"id": {"any_": ids}}}, timeout=60).json()
        states = sorted(r["state_type"] for r in runs)
        if states == ["COMPLETED"] * count:
            break
        failed = [r["name"] for r in runs if r["state_type"] in ("FAILED", "CRASHED", "CANCELLED")]
        assert not failed and time.monotonic() < deadline, f"{states}; failed {failed}\n{up.logs()}"
        time.sleep(2)
    results = up.workdir / "results" / prefix
    assert all((results / f"seasonal-mean-{i}.nc").is_file() for i in range(count)), sorted(results.glob("*"))
    return ids
