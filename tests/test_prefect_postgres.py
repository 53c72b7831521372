"""Prefect on PostgreSQL (issue #28): ``proximate up --prefect-database postgresql+asyncpg://...`` against Debian's
PostgreSQL started on loopback for the module (tests/postgres_server.py), then the deploy-and-run path on it: the
work pool, prefect.yaml's deployments, a worker, and runs created at once, all Completed; the flow runs are rows
of PostgreSQL's ``flow_run`` table, and the password is printed nowhere.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from postgres_server import PostgreSQL, postgresql_server
from up_process import PROJECT, Up, running_up, seasonal_means_at_once

from deployments.stages import WORK_POOL

#: Seconds for one seasonal-mean run on the loaded 2-core machine (tests/test_ui.py measures the same).
RUN_TIMEOUT = 300.0
RUNS = 6


@pytest.fixture(scope="module")
def postgresql() -> Iterator[PostgreSQL]:
    with postgresql_server() as server:
        yield server


@pytest.fixture(scope="module")
def up_on_postgresql(postgresql: PostgreSQL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-pg"), ["--prefect-database", postgresql.url()]) as running:
        yield running


@pytest.mark.slow  # proximate up, then six flow runs: 254 s measured at load 5-10 on 2 cores
# pytest-timeout counts the module's fixtures (up's start, bounded at 900 s) in the first test: the bounds that
# decide are up's and the runs' own.
@pytest.mark.timeout(1800)
def test_runs_created_at_once_complete_on_a_prefect_server_backed_by_postgresql(up_on_postgresql, postgresql):
    up = up_on_postgresql
    ids = seasonal_means_at_once(up, RUNS, "pg-burst", timeout=RUNS * RUN_TIMEOUT / 3)

    # The server's database is PostgreSQL: what the API reported is there, not in a SQLite file of PREFECT_HOME.
    rows = postgresql.query(f"SELECT id::text, state_type::text FROM flow_run WHERE id::text IN ({_quoted(ids)})")
    assert sorted(rows) == sorted((i, "COMPLETED") for i in ids)
    pools = postgresql.query("SELECT name FROM work_pool")
    assert (WORK_POOL,) in pools
    deployments = {name for (name,) in postgresql.query("SELECT name FROM deployment")}
    assert set(up.state["deployments"]) <= deployments
    assert not list((up.workdir / "prefect").glob("*.db")), "the server wrote a SQLite database too"

    # Shown redacted, never in clear: up's output and every log it wrote.
    printed = up.log.read_text(errors="replace")
    assert f"Prefect database: postgresql+asyncpg://***@127.0.0.1:{postgresql.port}/{postgresql.database}" in printed
    for log in [up.log, *(up.workdir / "logs").glob("*.log")]:
        assert postgresql.password not in log.read_text(errors="replace"), log


def test_a_database_url_without_prefects_driver_is_refused_before_anything_starts(tmp_path):
    """``postgresql://`` (no asyncpg) would only fail in the server's log minutes later: up refuses it at once,
    naming the option, with the password redacted, and creates nothing."""
    workdir = tmp_path / "demo"
    url = "postgresql://prefect:hunter2@127.0.0.1:5432/prefect"
    done = subprocess.run(
        [sys.executable, "-m", "deployments.up", "--workdir", str(workdir), "--prefect-database", url],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "--prefect-database postgresql://***@127.0.0.1:5432/prefect: not a Prefect database URL" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert not workdir.exists()


def test_the_fixture_serves_only_loopback_as_the_prefect_role(postgresql):
    user, addr = postgresql.query("SELECT current_user, inet_server_addr()::text")[0]
    assert user == postgresql.user
    assert addr.startswith("127.0.0.1")


def _quoted(ids: list[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)
