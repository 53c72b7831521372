"""Region-relative addresses: a path is resolved only in its own region and never escapes the root."""

from __future__ import annotations

import os

import pytest

from proximate.datasets import RegionPath
from proximate.regions import (
    REGION_ENV,
    ROOT_ENV,
    RegionError,
    RegionPathError,
    check_relative_path,
    resolve,
    validate_region_name,
)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../b", "/etc/passwd", "a\\..\\b", "x\x00y", "", "  ", ".."])
def test_escaping_paths_are_rejected(bad):
    with pytest.raises(RegionPathError):
        check_relative_path(bad)


@pytest.mark.parametrize("good", ["x.nc", "a/b/c.nc", "a/./b.zarr", "dir with space/f.nc"])
def test_relative_paths_are_accepted(good):
    assert not check_relative_path(good).is_absolute()


@pytest.mark.parametrize("bad", ["", "A", "-a", "a-", "a_b", "a.b", "x" * 64, "eu west"])
def test_region_names(bad):
    with pytest.raises(RegionError):
        validate_region_name(bad)
    assert validate_region_name("eu-west-2") == "eu-west-2"


def test_resolve_in_own_region(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.nc").write_bytes(b"x")
    monkeypatch.setenv(REGION_ENV, "a")
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    assert resolve("a", "d/f.nc") == (tmp_path / "d" / "f.nc").resolve()
    with pytest.raises(FileNotFoundError, match=r"'d/missing.nc' in region 'a'"):
        resolve("a", "d/missing.nc")


def test_resolve_from_another_region_fails_naming_region(tmp_path, monkeypatch):
    monkeypatch.setenv(REGION_ENV, "b")
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"region 'a' is not reachable from region 'b'"):
        resolve("a", "f.nc")
    monkeypatch.delenv(REGION_ENV)
    with pytest.raises(FileNotFoundError, match="outside every region"):
        resolve("a", "f.nc")


def test_symlink_out_of_root_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", root / "link")
    monkeypatch.setenv(REGION_ENV, "a")
    monkeypatch.setenv(ROOT_ENV, str(root))
    with pytest.raises(RegionPathError, match="outside the root"):
        resolve("a", "link")


def test_region_path_normalises_and_validates():
    assert str(RegionPath("a", "x/./y.nc")) == "a:x/y.nc"
    with pytest.raises(RegionPathError):
        RegionPath("a", "../y.nc")
    with pytest.raises(RegionError):
        RegionPath("A", "y.nc")
