"""The one dataset identity: references parsed once, catalog ids located where the catalog is, catalog settings
resolved in the process that makes them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from proximate.catalog import CatalogSettings, open_catalog
from proximate.catalog.records import DatasetRecord, record_id
from proximate.datasets import CatalogId, DatasetRefError, RegionPath, locate, parse_reference
from proximate.regions import RegionError, RegionPathError


def test_region_path_references_parse_to_region_paths_and_anything_else_is_a_catalog_id():
    assert parse_reference("ecmwf:forecast/./t.nc") == RegionPath("ecmwf", "forecast/t.nc")
    assert parse_reference("0123abcd") == CatalogId("0123abcd")
    parsed = RegionPath("a", "x.nc")
    assert parse_reference(parsed) is parsed
    assert str(parse_reference("a:x/y.nc")) == "a:x/y.nc"


@pytest.mark.parametrize(
    "bad, error", [("a:../b.nc", RegionPathError), ("A:x.nc", RegionError), ("  ", DatasetRefError)]
)
def test_bad_references_fail_at_the_parser(bad, error):
    with pytest.raises(error):
        parse_reference(bad)


def test_locate_looks_ids_up_in_the_given_catalog_and_names_what_is_missing(tmp_path):
    with open_catalog("sqlite", sqlite_path=tmp_path / "c.sqlite") as cat:
        cat.upsert([DatasetRecord(id=record_id("b", "d/x.nc"), region="b", path="d/x.nc")])
        cat.upsert([DatasetRecord(id="no-region", path="loose.nc")])
        assert locate(CatalogId(record_id("b", "d/x.nc")), cat) == RegionPath("b", "d/x.nc")
        assert locate(RegionPath("a", "y.nc"), None) == RegionPath("a", "y.nc")
        with pytest.raises(DatasetRefError, match="no dataset with id 'nope'"):
            locate(CatalogId("nope"), cat)
        with pytest.raises(DatasetRefError, match="has no region"):
            locate(CatalogId("no-region"), cat)
    with pytest.raises(DatasetRefError, match="no catalog was given"):
        locate(CatalogId("x"), None)


def test_catalog_settings_resolve_a_relative_path_where_they_are_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = CatalogSettings.from_env({"PROXIMATE_CATALOG": "cat/here.sqlite"})
    assert settings.sqlite_path == str(tmp_path / "cat" / "here.sqlite")
    assert CatalogSettings.from_env({}).sqlite_path == str(tmp_path / "catalog" / "proximate.sqlite")
    remote = CatalogSettings.from_env({"PROXIMATE_CATALOG": "https://search.example:9200"})
    assert (remote.backend, remote.opensearch_url) == ("opensearch", "https://search.example:9200")
    # Unpickled in another process with another working directory (a Dask worker's), it names the same file.
    code = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).sqlite_path)"
    import pickle

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(settings), capture_output=True, cwd=elsewhere, check=True,
        env={**os.environ},
    )  # fmt: skip
    assert out.stdout.decode().strip() == str(tmp_path / "cat" / "here.sqlite")


def test_catalog_settings_keep_the_password_secret():
    from pydantic import SecretStr

    settings = CatalogSettings(backend="opensearch", opensearch_url="https://x:9200", password=SecretStr("hunter2"))
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.describe()
