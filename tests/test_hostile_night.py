"""The hostile night (issue #26): a region holding a FIFO, a symlink loop, a symlink into another region, a
5e8-latitude NetCDF, a 1e8-chunk Zarr, a 20,000-attribute file and an HDF5 file whose bytes are /etc/passwd,
beside 50 good files. The nightly flow, through Prefect's server and the region's own worker, finishes within
the bound below, indexes all 50 and records each hostile path as an error (the crafted files that can be read
within bounds get a record whose warnings say what was sampled or cut); a full re-index afterwards extracts
nothing again.

Before: the FIFO hung extraction forever; the loop failed the whole listing and the symlink the whole batch, so
the night ended with 0 records; the 5e8 latitudes cost 50 s and 7.9 GB; the HDF5 file returned /etc/passwd.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import boto3
import pytest
from hostile_files import SECRET, external_storage, good_netcdf, huge_latitudes, many_attributes, many_chunks

#: The bound this test holds the night to (it takes about a minute on a loaded 2-core machine).
NIGHT_SECONDS = 600
REGIONS = ("hostile-r", "hostile-other")
PASSWD = Path("/etc/passwd").read_bytes()


@pytest.fixture(scope="module")
def hostile_cluster(tmp_path_factory):
    """One worker per region; each region's root its own folder."""
    from proximate.cluster import LocalRegionalCluster

    roots = {r: tmp_path_factory.mktemp(r) for r in REGIONS}
    with LocalRegionalCluster(roots, workers_per_region=1, no_workers_timeout=10.0) as c:
        yield c, roots


def _upload(bucket, crafted: Path) -> dict[str, bytes]:
    """The bucket's objects: 50 good NetCDF files and the crafted files and store under ``crafted/``."""
    objects = {}
    for i in range(50):
        good_netcdf(crafted / "good.nc", i)
        objects[f"good/f{i:02d}.nc"] = (crafted / "good.nc").read_bytes()
    (crafted / "good.nc").unlink()
    for path in sorted(crafted.rglob("*")):
        if path.is_file():
            objects[f"crafted/{path.relative_to(crafted).as_posix()}"] = path.read_bytes()
    for key, body in objects.items():
        bucket.put_object(Bucket="hostile", Key=key, Body=body)
    return objects


@pytest.mark.slow
@pytest.mark.timeout(NIGHT_SECONDS + 300)
def test_a_hostile_night_indexes_every_good_file_and_records_each_hostile_path(
    prefect_server, s3, hostile_cluster, tmp_path
):
    from blocks.catalog import CatalogConfig
    from blocks.region import Region
    from flows.catalog import index_region
    from flows.nightly import nightly_region
    from proximate.catalog import CatalogSettings
    from proximate.catalog.records import record_id
    from proximate.sync.backlog import add_to_backlog

    cluster, roots = hostile_cluster
    root, other = roots["hostile-r"], roots["hostile-other"]
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    huge_latitudes(crafted / "huge.nc")
    many_attributes(crafted / "attrs.nc")
    many_chunks(crafted / "chunks.zarr")
    external_storage(crafted / "passwd.nc", "/etc/passwd", len(PASSWD))  # arrives by sync, like any file
    c = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1")
    c.create_bucket(Bucket="hostile")
    objects = _upload(c, crafted)

    # What the file system holds besides the synced files; the backlog names these paths (an earlier run synced
    # files there, since replaced), so this night's index reads them.
    (other / "theirs.nc").write_bytes(SECRET)
    os.mkfifo(root / "pipe.nc")
    (root / "loop.nc").symlink_to("loop.nc")
    (root / "to-other.nc").symlink_to(other / "theirs.nc")
    local = ["loop.nc", "pipe.nc", "to-other.nc"]
    add_to_backlog(root, dict.fromkeys(local, "earlier-run"), [])

    sqlite = tmp_path / "catalog.sqlite"
    CatalogConfig(backend="sqlite", sqlite_path=str(sqlite)).save("hostile-catalog", overwrite=True)
    Region(name="hostile-r", root=str(root), source_url="s3://hostile/", endpoint_url=s3["endpoint_url"]).save(
        "hostile-r", overwrite=True
    )
    start = time.monotonic()
    state = nightly_region("hostile-r", catalog="hostile-catalog", scheduler_address=cluster.address,
                           return_state=True)  # fmt: skip
    seconds = time.monotonic() - start
    print(f"the hostile night took {seconds:.1f} s")  # for the record (pytest -s)
    assert seconds < NIGHT_SECONDS, f"the night took {seconds:.0f} s"
    assert state.is_completed(), state.message
    data = state.result()
    index = data["index"]

    good = {k for k in objects if k.startswith("good/")}
    errors = dict(index["errors"])
    assert set(errors) == {"crafted/passwd.nc", *local}
    assert "/etc/passwd" in errors["crafted/passwd.nc"] and "FIFO" in errors["pipe.nc"]
    assert "loop" in errors["loop.nc"].lower() and "outside the root" in errors["to-other.nc"]
    assert index["ok"] == len(good) + 3 and index["extracted"] == len(good) + 4 + len(local)

    with CatalogSettings(backend="sqlite", sqlite_path=str(sqlite)).open() as cat:
        records = {p: cat.get(record_id("hostile-r", p)) for p in cat.fingerprints("hostile-r")}
        assert {p for p, r in records.items() if r.status == "ok" and p.startswith("good/")} == good
        assert all(records[p].bbox is not None for p in good)
        text = "".join(r.model_dump_json() for r in records.values())
    assert "root:x:0:0" not in text and SECRET[:16].decode() not in text
    assert any("sample" in w for w in records["crafted/huge.nc"].warnings)
    assert any("sample" in w for w in records["crafted/chunks.zarr"].warnings)
    assert len(records["crafted/attrs.nc"].attrs) == 200

    # A full re-index lists the region (FIFO, loop and symlink included): nothing changed, nothing re-extracted.
    again = index_region("hostile-r", catalog="hostile-catalog", scheduler_address=cluster.address)
    assert again.extracted == 0 and again.listed == len(objects) - len(_store_objects(objects)) + 1 + len(local)


def _store_objects(objects: dict[str, bytes]) -> list[str]:
    return [k for k in objects if "chunks.zarr/" in k]
