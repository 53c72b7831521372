"""The sync flow through Prefect's own server, its bytes moved on the region's own workers: Region block in,
Failed state naming the failed keys, progress and summary artifacts, no credentials anywhere."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import boto3
import pytest
from s3_fault_proxy import FaultProxy

# slow: every test runs sync or nightly flows through Prefect on its own cluster (45-135 s each under load)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SECRET = "flow-test-secret-value-9f3c"
REGIONS = ("sync-test-r", "sync-test-cold", "nightly-r")


@pytest.fixture(scope="module")
def sync_cluster(tmp_path_factory):
    """One worker per region of this module; each region's root is its own folder."""
    from proximate.cluster import LocalRegionalCluster

    roots = {r: tmp_path_factory.mktemp(r) for r in REGIONS}
    with LocalRegionalCluster(roots, workers_per_region=1, no_workers_timeout=10.0) as c:
        yield c, roots


def _read(kind: str, flow_run_id) -> list[dict]:
    """The flow run's artifacts or logs, as the server's REST API returns them."""
    from prefect import get_client

    async def read():
        async with get_client() as c:
            body = {kind: {"flow_run_id": {"any_": [str(flow_run_id)]}}, "limit": 200, "offset": 0}
            response = await c._client.post(f"/{kind}/filter", json=body)
            response.raise_for_status()
            return response.json()

    return asyncio.run(read())


def test_sync_region_flow_fails_listing_keys_then_completes(prefect_server, s3, sync_cluster):
    from prefect_aws import AwsCredentials

    from blocks.region import Region
    from flows.sync import sync_region

    c = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id="k",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    c.create_bucket(Bucket="flow")
    objects = {f"src/g{i % 3}/f{i:02d}.nc": os.urandom(1000 + i) for i in range(12)}
    for key, body in objects.items():
        c.put_object(Bucket="flow", Key=key, Body=body)
    broken = {"src/g0/f00.nc", "src/g1/f04.nc"}
    cluster, roots = sync_cluster
    root = roots["sync-test-r"]
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.fail = {f"flow/{k}" for k in broken}
        Region(
            name="sync-test-r",
            root=str(root),
            source_url="s3://flow/src/",
            endpoint_url=proxy.url,
            aws_credentials=AwsCredentials(aws_access_key_id="k", aws_secret_access_key=SECRET),
        ).save("sync-test-r", overwrite=True)
        state = sync_region("sync-test-r", scheduler_address=cluster.address, return_state=True)

    assert state.is_failed()
    for key in broken:
        assert key in state.message
    assert "503" in state.message or "ServiceUnavailable" in state.message
    data = state.result(raise_on_failure=False)
    assert sorted(data["changed"]) == sorted(k.removeprefix("src/") for k in objects if k not in broken)
    assert {k for k, _ in data["failed"]} == broken
    artifacts = _read("artifacts", state.state_details.flow_run_id)
    logs = _read("logs", state.state_details.flow_run_id)
    by_type = {a["type"]: a for a in artifacts}
    assert by_type["progress"]["data"] == 100.0
    assert "| new |" in by_type["markdown"]["data"] and "src/g1/f04.nc" in by_type["markdown"]["data"]
    for text in [state.message, repr(data), *(repr(a) for a in artifacts), *(repr(entry) for entry in logs)]:
        assert SECRET not in text

    # The store is back: the next run fetches only what failed, deletes nothing unasked.
    Region(
        name="sync-test-r",
        root=str(root),
        source_url="s3://flow/src/",
        endpoint_url=s3["endpoint_url"],
        aws_credentials=AwsCredentials(aws_access_key_id="k", aws_secret_access_key=SECRET),
    ).save("sync-test-r", overwrite=True)
    state = sync_region("sync-test-r", scheduler_address=cluster.address, return_state=True)
    assert state.is_completed()
    data = state.result()
    assert sorted(data["changed"]) == sorted(k.removeprefix("src/") for k in broken)
    assert data["skipped"] == len(objects) - len(broken) and data["deleted_paths"] == []
    for key, body in objects.items():
        assert (root / key.removeprefix("src/")).read_bytes() == body


def test_sync_region_flow_skips_cold_objects_and_refuses_to_empty_the_mirror(prefect_server, s3, sync_cluster):
    """Archived objects do not fail the nightly sync; a source that lost every object does not empty the mirror
    unless delete_all says so; the block's SSE-C key reaches the reads and never a log, result or artifact."""
    import base64

    from prefect_aws import AwsCredentials

    from blocks.region import Region
    from flows.sync import sync_region

    c = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1")
    c.create_bucket(Bucket="cold")
    objects = {f"src/f{i}.nc": os.urandom(500 + i) for i in range(4)}
    for key, body in objects.items():
        c.put_object(Bucket="cold", Key=key, Body=body)
    c.put_object(Bucket="cold", Key="src/archived.nc", Body=b"old", StorageClass="DEEP_ARCHIVE")
    key = os.urandom(32)
    secret_key = base64.b64encode(key).decode()
    cluster, roots = sync_cluster
    root = roots["sync-test-cold"]
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.sse_c = {f"cold/{k}": key for k in objects}
        Region(
            name="sync-test-cold",
            root=str(root),
            source_url="s3://cold/src/",
            endpoint_url=proxy.url,
            sse_customer_key=secret_key,
            aws_credentials=AwsCredentials(aws_access_key_id="k", aws_secret_access_key=SECRET),
        ).save("sync-test-cold", overwrite=True)
        state = sync_region("sync-test-cold", delete=True, scheduler_address=cluster.address, return_state=True)
        assert state.is_completed(), state.message
        data = state.result()
        assert data["skipped_cold"] == 1 and data["cold"] == ["src/archived.nc"] and data["failed"] == []
        for k, body in objects.items():
            assert (root / k.removeprefix("src/")).read_bytes() == body
        deadline = time.monotonic() + 30  # Prefect ships logs to its server in batches, after the run
        while not any("src/archived.nc" in e["message"] for e in _read("logs", state.state_details.flow_run_id)):
            assert time.monotonic() < deadline, "no warning names the cold object"
            time.sleep(0.5)
        for k in objects:
            c.delete_object(Bucket="cold", Key=k)
        refused = sync_region("sync-test-cold", delete=True, scheduler_address=cluster.address, return_state=True)
        assert refused.is_failed() and "delete_all=True" in refused.message
        assert len(list(root.glob("f*.nc"))) == 4
        done = sync_region(
            "sync-test-cold", delete=True, delete_all=True, scheduler_address=cluster.address, return_state=True
        )
        assert done.is_completed() and len(done.result()["deleted_paths"]) == 4
    for run in (state, refused, done):
        texts = [run.message or "", repr(run.result(raise_on_failure=False))]
        texts += [repr(a) for a in _read("artifacts", run.state_details.flow_run_id)]
        texts += [repr(e) for e in _read("logs", run.state_details.flow_run_id)]
        assert not any(secret_key in t or SECRET in t for t in texts)


def _netcdf(i: int) -> bytes:
    """A small, indexable NetCDF file: 3 days of one variable on a 4 x 5 grid whose box depends on ``i``."""
    import numpy as np
    import xarray as xr

    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), np.full((3, 4, 5), 280.0 + i, "f4"), {"units": "K"})},
        coords={
            "time": np.array(["2024-01-01", "2024-01-02", "2024-01-03"], "datetime64[ns]"),
            "lat": ("lat", np.linspace(-10, 10, 4), {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", np.linspace(i, i + 4, 5), {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    return bytes(ds.to_netcdf())  # NetCDF-3 bytes, written by scipy: not by the code under test


def _catalog_block(path: Path, name: str) -> str:
    from blocks.catalog import CatalogConfig

    CatalogConfig(backend="sqlite", sqlite_path=str(path)).save(name, overwrite=True)
    return name


def _records(path: Path, region: str) -> dict[str, str]:
    """Path -> status of the region's catalog records."""
    from proximate.catalog import CatalogSettings
    from proximate.catalog.records import record_id

    with CatalogSettings(backend="sqlite", sqlite_path=str(path)).open() as cat:
        return {p: cat.get(record_id(region, p)).status for p in cat.fingerprints(region)}


def test_nightly_indexes_everything_that_synced_names_the_failing_key_and_retries_only_it(
    prefect_server, s3, sync_cluster, tmp_path
):
    """One permanently failing key among 100: 99 synced and indexed in the first run, the key named in the Failed
    state; the second run fetches nothing new, still names it, and the catalog holds the 99."""
    from blocks.region import Region
    from flows.nightly import nightly_region
    from proximate.sync import read_backlog

    cluster, roots = sync_cluster
    c = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1")
    c.create_bucket(Bucket="nightly")
    objects = {f"obs/f{i:03d}.nc": _netcdf(i) for i in range(100)}
    for key, body in objects.items():
        c.put_object(Bucket="nightly", Key=key, Body=body)
    bad = "obs/f042.nc"
    catalog = _catalog_block(tmp_path / "catalog.sqlite", "nightly-test-catalog")
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.fail = {f"nightly/{bad}"}
        Region(name="nightly-r", root=str(roots["nightly-r"]), source_url="s3://nightly/", endpoint_url=proxy.url).save(
            "nightly-r", overwrite=True
        )
        runs = [
            nightly_region("nightly-r", catalog=catalog, scheduler_address=cluster.address, return_state=True)
            for _ in range(2)
        ]
    expected = {k for k in objects if k != bad}
    for n, state in enumerate(runs):
        assert state.is_failed() and bad in state.message, state.message
        data = state.result(raise_on_failure=False)
        assert [k for k, _ in data["sync"]["failed"]] == [bad]
        assert data["sync"]["transferred"] == (99 if n == 0 else 0)
        assert data["index"]["extracted"] == (99 if n == 0 else 0)
    assert _records(tmp_path / "catalog.sqlite", "nightly-r") == dict.fromkeys(sorted(expected), "ok")
    for key in expected:
        assert (roots["nightly-r"] / key).read_bytes() == objects[key]
    assert not (roots["nightly-r"] / bad).exists()
    assert not read_backlog(roots["nightly-r"])  # everything fetched was indexed and acknowledged
    locality = runs[0].result(raise_on_failure=False)["locality"]
    assert locality["object_bytes"] == sum(len(objects[k]) for k in expected)
    assert 0 < locality["left_region_bytes"] < locality["object_bytes"]


def test_an_overlapping_run_is_refused_and_changes_nothing_then_a_manual_syncs_files_get_indexed(
    prefect_server, s3, sync_cluster, tmp_path
):
    """While another run holds the region (here: this test, holding its run lock), a sync is refused at once,
    naming the holder, and deletes nothing; what a manual sync-region run fetched is indexed by the next
    nightly run although that run fetches nothing."""
    from blocks.region import Region
    from flows.nightly import nightly_region
    from flows.sync import sync_region
    from proximate.sync import hold_run

    cluster, roots = sync_cluster
    root = roots["nightly-r"]
    c = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1")
    c.create_bucket(Bucket="overlap")
    objects = {f"o/f{i}.nc": _netcdf(i) for i in range(4)}
    for key, body in objects.items():
        c.put_object(Bucket="overlap", Key=key, Body=body)
    Region(name="nightly-r", root=str(root), source_url="s3://overlap/", endpoint_url=s3["endpoint_url"]).save(
        "nightly-r", overwrite=True
    )
    catalog = _catalog_block(tmp_path / "catalog.sqlite", "overlap-test-catalog")
    first = sync_region("nightly-r", delete=True, scheduler_address=cluster.address, return_state=True)
    assert first.is_completed() and len(first.result()["changed"]) == 4
    c.delete_object(Bucket="overlap", Key="o/f0.nc")
    t0 = time.monotonic()
    with hold_run(root, "held by the test"):
        refused = sync_region("nightly-r", delete=True, scheduler_address=cluster.address, return_state=True)
    assert refused.is_failed() and "held by the test" in refused.message and "refused" in refused.message
    assert time.monotonic() - t0 < 60  # at once: no waiting for the holder
    for key, body in objects.items():
        assert (root / key).read_bytes() == body  # nothing deleted, nothing half-written

    night = nightly_region("nightly-r", catalog=catalog, scheduler_address=cluster.address, return_state=True)
    assert night.is_completed(), night.message
    data = night.result()
    assert data["sync"]["transferred"] == 0 and data["sync"]["deleted_paths"] == ["o/f0.nc"]
    assert _records(tmp_path / "catalog.sqlite", "nightly-r") == dict.fromkeys(["o/f1.nc", "o/f2.nc", "o/f3.nc"], "ok")
