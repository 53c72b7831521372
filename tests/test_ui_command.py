"""``proximate up`` without starting anything: how the core finds it, what it deploys, the environment it gives
its processes. tests/test_ui.py runs it for real, in a browser."""

from __future__ import annotations

import signal
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import yaml

from deployments import up
from proximate import cli

PROJECT = Path(__file__).resolve().parents[1]


def _recorded(**kwargs):
    _recorded.calls.append(kwargs)


def test_the_up_command_runs_the_entry_point_with_its_arguments(tmp_path):
    _recorded.calls = []
    fake = [EntryPoint("up", f"{__name__}:_recorded", cli.COMMANDS_GROUP)]
    previous = signal.getsignal(signal.SIGTERM)  # up turns SIGTERM into SystemExit
    try:
        argv = ["up", "--workdir", str(tmp_path), "--workers-per-region", "3", "--port", "4321"]
        assert cli.main(argv, entry_points=fake) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert _recorded.calls == [
        {"workdir": tmp_path, "workers_per_region": 3, "port": 4321, "prefect_database": None, "catalog": "sqlite"}
    ]


def test_up_catalog_opensearch_is_passed_on_and_another_catalog_refused(tmp_path, capsys):
    _recorded.calls = []
    fake = [EntryPoint("up", f"{__name__}:_recorded", cli.COMMANDS_GROUP)]
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["up", "--workdir", str(tmp_path), "--catalog", "opensearch"], entry_points=fake) == 0
        with pytest.raises(SystemExit) as refused:
            cli.main(["up", "--workdir", str(tmp_path), "--catalog", "elasticsearch"], entry_points=fake)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [c["catalog"] for c in _recorded.calls] == ["opensearch"]
    assert refused.value.code == 2 and "--catalog: invalid choice: 'elasticsearch'" in capsys.readouterr().err


def test_pyproject_registers_up_as_a_command_living_in_deployments():
    declared = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["entry-points"][cli.COMMANDS_GROUP]
    entry_points = [EntryPoint(name, value, cli.COMMANDS_GROUP) for name, value in declared.items()]
    assert cli.find_command("up", entry_points) is up.run_up


def test_up_deploys_every_deployment_of_prefect_yaml_none_scheduled():
    names = up.deployment_names(PROJECT / "prefect.yaml")
    assert {"seasonal-mean", "compare-forecast-to-observations", "summarize", "nightly-region"} <= set(names)
    assert {"sync-region", "index-region"} <= set(names)
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    assert not [d["name"] for d in spec["deployments"] if d.get("schedules")]


def test_every_deployment_goes_to_the_pool_up_creates():
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    assert {d["work_pool"]["name"] for d in spec["deployments"]} == {up.WORK_POOL}
    assert up.POOL_TEMPLATE.is_file()


def test_up_environment_points_api_and_ui_at_one_loopback_server_without_telemetry(tmp_path):
    env = up.up_environment(tmp_path, 4321, {"PYTHONPATH": "/elsewhere"})
    assert env["PREFECT_API_URL"] == env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"
    assert (env["PREFECT_SERVER_API_HOST"], env["PREFECT_SERVER_API_PORT"]) == ("127.0.0.1", "4321")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert env["PYTHONPATH"] == f"{PROJECT}:/elsewhere"  # flow runs and Dask workers import this checkout
    assert env["PROXIMATE_HOME"] == str(PROJECT)


def test_flow_runs_default_to_the_demo_catalog_and_results_under_the_workdir(tmp_path):
    env = up.worker_environment(tmp_path, {"PREFECT_API_URL": "http://127.0.0.1:1/api"})
    assert env["PROXIMATE_CATALOG"] == str(tmp_path / "catalog" / "proximate.sqlite")
    assert env["PROXIMATE_RESULTS"] == str(tmp_path / "results")
    assert env["PREFECT_LOGGING_LEVEL"] == "INFO"  # the run page shows the flows' logs
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:1/api"


@pytest.mark.slow
def test_the_work_pool_is_created_through_prefects_client_and_again_without_error(prefect_server):
    """What the shell one-liner ``prefect work-pool create ... --overwrite`` did, through Prefect's client."""
    import json

    from prefect.client.orchestration import get_client

    from deployments import stages

    stages.create_work_pool()
    stages.create_work_pool()  # up runs again on the same Prefect home: the pool is updated, not refused
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(up.WORK_POOL)
    assert pool.type == "process"
    assert pool.base_job_template == json.loads(up.POOL_TEMPLATE.read_text())
