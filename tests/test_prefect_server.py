"""The embedded Prefect server (SQLite) accepts a burst of concurrent writes instead of answering 503.

Prefect 3.8's own ``prefect server start`` refused 11 of 12 flow runs created at once (SQLITE_BUSY_SNAPSHOT from a
deferred transaction; see deployments/prefect_server.py). This starts the server `proximate up` and the testbed run,
as its own process on a fresh database, and creates twelve runs at once, then moves each through its states.
"""

import asyncio
import os
import signal
import subprocess
import time

import httpx
import pytest

from deployments import prefect_server
from proximate.testing.local_s3 import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def server_api(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "PREFECT_API_URL": ""}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_UI_ENABLED="false")
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            prefect_server.command("--host", "127.0.0.1", "--port", str(port), "--no-services"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 240  # a fresh database migrates in about 35 s on 2 quiet cores
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not answer /health"
            time.sleep(0.5)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_twelve_flow_runs_created_at_once_are_all_accepted_and_move_through_their_states(server_api):
    async def burst():
        async with httpx.AsyncClient(base_url=server_api, timeout=120) as api:
            flow = (await api.post("/flows/", json={"name": "burst"})).json()

            async def create(i):
                return await api.post(
                    "/flow_runs/", json={"flow_id": flow["id"], "name": f"run-{i}", "state": {"type": "SCHEDULED"}}
                )

            created = await asyncio.gather(*(create(i) for i in range(12)))
            assert [r.status_code for r in created] == [201] * 12, [r.text for r in created]

            async def run_through(run_id):
                codes = []
                for state in ("PENDING", "RUNNING", "COMPLETED"):
                    r = await api.post(f"/flow_runs/{run_id}/set_state", json={"state": {"type": state}})
                    codes.append((r.status_code, r.json().get("status")))
                return codes

            moved = await asyncio.gather(*(run_through(r.json()["id"]) for r in created))
            assert all(codes == [(201, "ACCEPT")] * 3 for codes in moved), moved
            runs = (await api.post("/flow_runs/filter", json={})).json()
            assert sorted(r["state_type"] for r in runs) == ["COMPLETED"] * 12

    asyncio.run(burst())
