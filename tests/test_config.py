"""The ``proximate.*`` settings (proximate/config.py): defaults, schema, the legacy variables, the docs table, and
that no other module reads a proximate setting from the environment itself."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dask.config
import jsonschema
import pytest
import yaml

from proximate import config
from proximate.catalog.settings import CatalogSettings
from proximate.sandbox import Limits
from proximate.scheduler_plugin import router_from_env

REPO = Path(__file__).resolve().parent.parent
#: The code that must read its settings through proximate.config.
CODE_DIRS = ("proximate", "flows", "deployments", "blocks", "tasks")


def _yaml_leaves(tree: dict, prefix: str = "") -> set[str]:
    """The dotted leaf keys of a YAML mapping, read from the file independently of config.keys()."""
    leaves: set[str] = set()
    for name, value in tree.items():
        if isinstance(value, dict):
            leaves |= _yaml_leaves(value, f"{prefix}{name}.")
        else:
            leaves.add(f"{prefix}{name}")
    return leaves


def _schema_leaves(node: dict, prefix: str = "") -> dict[str, dict]:
    """The schema's leaf properties (those without properties of their own), by dotted key."""
    leaves: dict[str, dict] = {}
    for name, sub in node["properties"].items():
        if "properties" in sub:
            leaves.update(_schema_leaves(sub, f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = sub
    return leaves


def test_every_default_is_in_the_schema_and_every_schema_key_has_a_default():
    defaults = yaml.safe_load((REPO / "proximate" / "proximate.yaml").read_text())
    schema = yaml.safe_load((REPO / "proximate" / "proximate-schema.yaml").read_text())
    in_yaml = _yaml_leaves(defaults["proximate"])
    in_schema = _schema_leaves(schema["properties"]["proximate"])
    assert in_yaml == set(in_schema), in_yaml ^ set(in_schema)
    for key, node in in_schema.items():
        assert node.get("description", "").strip(), f"proximate.{key} has no description"
        assert node.get("type"), f"proximate.{key} has no type"
    jsonschema.validate(defaults, schema)
    assert set(config.keys()) == in_yaml


def test_every_legacy_variable_maps_to_a_key_and_the_schema_names_it():
    schema = yaml.safe_load((REPO / "proximate" / "proximate-schema.yaml").read_text())
    in_schema = _schema_leaves(schema["properties"]["proximate"])
    assert set(config.LEGACY_ENV.values()) <= set(in_schema)
    assert len(set(config.LEGACY_ENV.values())) == len(config.LEGACY_ENV), "two variables set one key"
    assert {key: node.get("env") for key, node in in_schema.items() if node.get("env")} == {
        key: var for var, key in config.LEGACY_ENV.items()
    }


def test_every_proximate_variable_the_code_names_is_in_the_table():
    """A PROXIMATE_* name in the code is a legacy variable (or the container's TLS interface, read by the shell)."""
    container_interface = {"PROXIMATE_TLS_CA", "PROXIMATE_TLS_CERT", "PROXIMATE_TLS_KEY"}
    named: set[str] = set()
    for folder in CODE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    named |= set(re.findall(r"(?<![A-Z_])PROXIMATE_[A-Z][A-Z_]*[A-Z]", node.value))
    unknown = named - set(config.LEGACY_ENV) - container_interface
    assert not unknown, f"PROXIMATE_* names outside proximate.config.LEGACY_ENV: {sorted(unknown)}"


def test_the_configuration_page_lists_every_setting():
    page = (REPO / "docs" / "configuration.md").read_text()
    assert config.settings_table() in page
    for var, key in config.LEGACY_ENV.items():
        assert f"| `proximate.{key}` | `{var}` |" in page


def test_no_module_reads_a_proximate_setting_from_the_environment_itself():
    """os.environ.get / os.environ[...] / os.getenv of a PROXIMATE_* name, or of a *_ENV constant, only in
    proximate/config.py (a whole-environment copy for a child process is not a read of a setting)."""
    offenders = []
    for folder in CODE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            if path == REPO / "proximate" / "config.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                target = None
                if isinstance(node, ast.Call) and node.args:
                    func = ast.unparse(node.func)
                    if func in ("os.environ.get", "os.getenv", "environ.get", "env.get", "os.environ.pop"):
                        target = node.args[0]
                elif (
                    isinstance(node, ast.Subscript)
                    and ast.unparse(node.value) in ("os.environ", "environ", "env")
                    and isinstance(node.ctx, ast.Load)
                ):
                    target = node.slice
                if target is None:
                    continue
                text = ast.unparse(target)
                if "PROXIMATE_" in text or text.endswith("_ENV") or "env_var(" in text:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders


def test_a_legacy_variable_wins_over_dask_config_which_wins_over_the_default():
    key = "scheduler.link-timeout"
    assert router_from_env({}).link_timeout == 60.0 == config.default(key)
    with dask.config.set({f"proximate.{key}": 7}):
        assert router_from_env({}).link_timeout == 7.0
        assert router_from_env({"PROXIMATE_LINK_TIMEOUT": "9"}).link_timeout == 9.0
        assert config.source(key, {}) == f"proximate.{key}"
        assert config.source(key, {"PROXIMATE_LINK_TIMEOUT": "9"}) == "PROXIMATE_LINK_TIMEOUT"
        # an empty variable is unset: the config's value holds
        assert router_from_env({"PROXIMATE_LINK_TIMEOUT": ""}).link_timeout == 7.0


def _run_in_child(code: str, **env: str) -> object:
    """``code``'s printed JSON, run in a fresh interpreter with ``env`` on top of a clean proximate/Dask env."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PROXIMATE_", "DASK_PROXIMATE"))}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_dask_environment_variables_set_the_namespace_in_a_real_process(tmp_path):
    code = (
        "import json; from proximate.sandbox import Limits; from proximate.sync.durable import direct_wanted; "
        "from proximate.scheduler_plugin import router_from_env as r; l = Limits.from_env(); x = r(); "
        "print(json.dumps([l.wall_seconds, l.memory_bytes, direct_wanted(None), x.declared_regions, x.propagate]))"
    )
    assert _run_in_child(code) == [900.0, 4096 * 2**20, True, [], True]
    by_dask = {
        "DASK_PROXIMATE__TABLES__PARTIAL__WALL_SECONDS": "30",
        "DASK_PROXIMATE__TABLES__PARTIAL__MEMORY_MB": "512",
        "DASK_PROXIMATE__SYNC__DIRECT": "False",
        "DASK_PROXIMATE__SCHEDULER__REGIONS": "['a', 'b']",
        "DASK_PROXIMATE__SCHEDULER__PROPAGATE": "False",
    }
    assert _run_in_child(code, **by_dask) == [30.0, 512 * 2**20, False, ["a", "b"], False]
    legacy = {
        "PROXIMATE_PARTIAL_WALL_SECONDS": "45",
        "PROXIMATE_PARTIAL_MEMORY_MB": "1024",
        "PROXIMATE_SYNC_DIRECT": "1",
        "PROXIMATE_REGIONS": "c",
        "PROXIMATE_PROPAGATE": "yes",
    }
    assert _run_in_child(code, **by_dask, **legacy) == [45.0, 1024 * 2**20, True, ["c"], True]
    # and a Dask YAML file in DASK_CONFIG, as an operator would write one
    (tmp_path / "proximate.yaml").write_text("proximate:\n  tables:\n    partial:\n      wall-seconds: 12\n")
    assert _run_in_child(code, DASK_CONFIG=str(tmp_path))[0] == 12.0


def test_a_bad_value_is_an_error_naming_where_it_came_from():
    with pytest.raises(config.ConfigError, match="PROXIMATE_NO_WORKERS_TIMEOUT='soon' is not a number"):
        router_from_env({"PROXIMATE_NO_WORKERS_TIMEOUT": "soon"})
    negative = dask.config.set({"proximate.tables.partial.cpu-seconds": -1})
    with negative, pytest.raises(ValueError, match=r"proximate\.tables\.partial\.cpu-seconds=-1 must be positive"):
        Limits.from_env({})
    with pytest.raises(config.ConfigError, match=r"proximate\.nothing is not a setting"):
        config.get("nothing")


def test_the_catalog_settings_come_from_the_namespace_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dask.config.set(
        {"proximate.catalog.location": "https://search.example:9200", "proximate.catalog.username": "u"}
    ):
        settings = CatalogSettings.from_env({})
        assert (settings.backend, settings.opensearch_url, settings.username) == (
            "opensearch",
            "https://search.example:9200",
            "u",
        )
        # the variable wins, and a command's --catalog wins over both (keeping the credentials)
        assert CatalogSettings.from_env({"PROXIMATE_CATALOG": "a.sqlite"}).sqlite_path == str(tmp_path / "a.sqlite")
        explicit = CatalogSettings.from_env({}, location="https://other.example:9200")
        assert (explicit.opensearch_url, explicit.username) == ("https://other.example:9200", "u")


def test_limits_are_read_at_each_call_so_a_changed_variable_counts(monkeypatch):
    monkeypatch.setenv("PROXIMATE_PARTIAL_WALL_SECONDS", "11")
    assert Limits.from_env().wall_seconds == 11.0
    monkeypatch.setenv("PROXIMATE_PARTIAL_WALL_SECONDS", "22")
    assert Limits.from_env().wall_seconds == 22.0
