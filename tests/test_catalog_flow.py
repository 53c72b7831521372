"""The index-region flow on the real multi-region cluster and Prefect's server: incremental runs, sync-given
changes, corrupt files as error records that keep their last good metadata, vanished files removed, the
markdown artifact; and open_from_catalog opening a found dataset in its region."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import netCDF4
import numpy as np
import pytest
import xarray as xr
from conftest import REAL_DATA

import proximate
from blocks.catalog import CatalogConfig
from proximate.catalog import CatalogQuery, open_catalog
from proximate.catalog.indexing import extract_and_write, list_datasets, plan_changes
from proximate.catalog.records import record_id
from proximate.datasets import location_of


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40]


def _mine(catalog, region: str, folder: str) -> dict[str, object]:
    res = catalog.search(CatalogQuery(region=region, page_size=1000, text=None))
    return {r.path: r for r in res.records if r.path.startswith(folder + "/")}


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_index_region_flow_incremental_errors_and_artifact(prefect_server, cluster, region_roots, tmp_path):
    import httpx

    from flows.catalog import index_region

    folder = f"flow-{_slug(tmp_path.name)}"
    root = region_roots["a"] / folder
    (root / "sub").mkdir(parents=True)
    for name in ("test_lcc.nc", "basin_mask.nc", "A1B-99999a-river-sep-2070-2099.nc"):
        shutil.copy(REAL_DATA / name, root / ("sub" if name.startswith("A1B") else "") / name)
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_zarr(root / "store.zarr", consolidated=False)
    (root / ".hidden.nc").write_bytes((REAL_DATA / "units.nc").read_bytes())
    (root / "partial.nc.tmp").write_bytes(b"half a file")
    (root / ".proximate-sync").mkdir()
    (root / ".proximate-sync" / "manifest.nc").write_bytes(b"the sync's own")
    (root / "README.txt").write_text("not a dataset")  # every file gets a record: this one says why it is unread
    readme = f"{folder}/README.txt"
    expected = {f"{folder}/test_lcc.nc", f"{folder}/basin_mask.nc", f"{folder}/sub/A1B-99999a-river-sep-2070-2099.nc",
                f"{folder}/store.zarr", readme}  # fmt: skip

    block = f"test-catalog-{_slug(tmp_path.name)}"
    CatalogConfig(sqlite_path=str(tmp_path / "catalog" / "c.sqlite")).save(block, overwrite=True)
    run = {"catalog": block, "scheduler_address": cluster.address}

    first = index_region("a", **run)
    with open_catalog("sqlite", sqlite_path=tmp_path / "catalog" / "c.sqlite") as cat:
        records = _mine(cat, "a", folder)
        assert set(records) == expected
        assert all(r.status == "ok" for p, r in records.items() if p != readme)
        assert records[readme].status == "unsupported" and "format not recognised" in records[readme].error
        lcc_before = records[f"{folder}/test_lcc.nc"]
        assert lcc_before.variable_names == ["tas"] and lcc_before.bbox is not None
    assert first.extracted >= len(expected) and first.listed == first.extracted + first.unchanged

    second = index_region("a", **run)  # nothing changed anywhere in region a since
    assert second.extracted == 0 and second.unchanged == second.listed == first.listed

    (root / "test_lcc.nc").unlink()
    (root / "test_lcc.nc").write_bytes(b"CDF\x01 garbage from a broken sync")
    (root / "basin_mask.nc").unlink()
    third = index_region("a", **run)
    assert third.extracted == 1 and [e[0] for e in third.errors] == [f"{folder}/test_lcc.nc"]
    assert f"{folder}/basin_mask.nc" in third.deleted
    with open_catalog("sqlite", sqlite_path=tmp_path / "catalog" / "c.sqlite") as cat:
        records = _mine(cat, "a", folder)
        assert set(records) == expected - {f"{folder}/basin_mask.nc"}
        bad = records[f"{folder}/test_lcc.nc"]
        assert bad.status == "error" and f"{folder}/test_lcc.nc" in bad.error
        # The last good metadata stays searchable, flagged with the error.
        assert bad.bbox == lcc_before.bbox and bad.variable_names == ["tas"]
        assert bad.last_good_at == lcc_before.last_good_at
        assert bad.size == (root / "test_lcc.nc").stat().st_size
        hits = cat.search(CatalogQuery(status="error", variable="tas", region="a"))
        assert bad.id in hits.ids()

    # The sync's own list: extract exactly those, without listing the region.
    fourth = index_region("a", changed=[f"{folder}/sub/A1B-99999a-river-sep-2070-2099.nc"], **run)
    assert fourth.listed is None and fourth.extracted == 1 and fourth.unchanged == 0

    body = {"artifacts": {"key": {"any_": ["catalog-index-a"]}}, "limit": 50, "offset": 0, "sort": "CREATED_DESC"}
    artifacts = httpx.post(f"{prefect_server}/artifacts/filter", json=body, timeout=30).raise_for_status().json()
    texts = [a["data"] for a in artifacts]
    assert any(f"{folder}/test_lcc.nc" in t and "| errors | 1 |" in t for t in texts)


def test_indexing_core_with_etags_and_open_from_catalog(client, region_roots, tmp_path):
    folder = f"open-{_slug(tmp_path.name)}"
    root = region_roots["b"] / folder
    root.mkdir()
    shutil.copy(REAL_DATA / "test_lcc.nc", root / "lcc.nc")
    path = f"{folder}/lcc.nc"
    cat = open_catalog("sqlite", sqlite_path=tmp_path / "c.sqlite")
    report = extract_and_write(client, cat, "b", [path], etags={path: "etag-1"})
    assert report.ok == 1
    rec = cat.get(record_id("b", path))
    assert rec.etag == "etag-1" and rec.region == "b"
    # Same size and mtime but a new ETag from the sync manifest: changed.
    listing = list_datasets(root.parent)
    listing = {p: v for p, v in listing.items() if p.startswith(folder + "/")}
    assert plan_changes(cat.fingerprints("b"), listing, etags={path: "etag-1"}).extract == []
    assert plan_changes(cat.fingerprints("b"), listing, etags={path: "etag-2"}).extract == [path]

    found = cat.search(CatalogQuery(standard_name="air_temperature", region="b", text="Innsbruck")).records
    assert [r.id for r in found] == [rec.id]
    ds = proximate.open_from_catalog(found[0].id, catalog=cat)
    assert location_of(ds).region == "b"
    with netCDF4.Dataset(REAL_DATA / "test_lcc.nc") as nc:
        expected = float(np.ma.mean(nc["tas"][:]))
    assert np.isclose(float(ds["tas"].mean().compute()), expected, rtol=1e-9)
    cat.close()


def test_importing_proximate_stays_cheap():
    code = "import sys, proximate; assert 'xarray' not in sys.modules and 'proximate.catalog' not in sys.modules"
    code += "; assert callable(proximate.open_from_catalog)"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
