"""The core (proximate/) stands alone: it imports neither the Prefect layer nor moto, and the commands that
need those find them through entry points when they run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from proximate import cli

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_importing_every_core_module_imports_no_prefect_layer_and_no_moto():
    code = """
import pkgutil, importlib, sys
import proximate
names = [m.name for m in pkgutil.walk_packages(proximate.__path__, "proximate.")]
for name in names:
    importlib.import_module(name)
assert len(names) > 20 and "proximate.cli" in names and "proximate.testing.local_s3" in names, names
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"flows", "tasks", "blocks", "deployments", "prefect", "moto"})
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def _recorded(**kwargs):
    _recorded.calls.append(kwargs)


def test_the_demo_command_runs_the_installed_entry_point(monkeypatch, tmp_path):
    _recorded.calls = []
    fake = EntryPoint("demo", f"{__name__}:_recorded", cli.COMMANDS_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [fake] if group == cli.COMMANDS_GROUP else [])
    previous = signal.getsignal(signal.SIGTERM)  # the demo turns SIGTERM into SystemExit
    try:
        assert cli.main(["demo", "--workdir", str(tmp_path), "--workers-per-region", "3"]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert _recorded.calls == [{"workdir": tmp_path, "workers_per_region": 3}]


def test_find_command_loads_by_name_and_names_what_is_missing():
    entry_points = [
        EntryPoint("other", "os:getcwd", cli.COMMANDS_GROUP),
        EntryPoint("demo", f"{__name__}:_recorded", cli.COMMANDS_GROUP),
    ]
    assert cli.find_command("demo", entry_points) is _recorded
    with pytest.raises(cli.CommandUnavailableError, match="no 'demo' command is installed"):
        cli.find_command("demo", entry_points[:1])


def test_pyproject_registers_the_full_demo_as_an_entry_point():
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][cli.COMMANDS_GROUP]
    from flows.demo import run_demo

    entry_points = [EntryPoint(name, value, cli.COMMANDS_GROUP) for name, value in declared.items()]
    assert cli.find_command("demo", entry_points) is run_demo


def test_the_demo_without_the_demo_extra_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "moto", None)  # as if not installed: find_spec("moto") is None
    workdir = tmp_path / "demo"
    assert cli.main(["demo", "--workdir", str(workdir)]) == 2
    assert capsys.readouterr().err == "proximate: error: the demo needs the demo extra: pip install 'proximate[demo]'\n"
    assert not workdir.exists()  # it stopped before doing anything


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_processes_that_load_sqlite_and_proj_first_survive_xarray_listing_its_backends(tmp_path):
    """With the grib extra, ecCodes' wheel shadows SQLite and PROJ loaded after it (proximate.native); in the
    order proximate loads them, a process lists xarray's backends, uses PROJ and SQLite, and exits cleanly."""
    code = (
        "from proximate.native import load_in_safe_order; load_in_safe_order()\n"
        "import xarray, pyproj, sqlite3\n"
        "xarray.backends.list_engines()\n"
        "assert pyproj.CRS('EPSG:3577').to_epsg() == 3577\n"
        "assert sqlite3.connect(':memory:').execute('create table t(x)').connection"
        ".execute('insert into t values (1) returning x').fetchall() == [(1,)]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
