"""Faults of a real OpenSearch node under the catalog: the node killed in the middle of a nightly run, restarted
between uses, an index whose mapping conflicts with the catalog's, and a bulk write the node partly refuses.

The node is the session's (tests/conftest.py): these tests kill and restart it, and leave it running."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from catalog_records import sample_records
from opensearchpy import OpenSearch
from test_sync_flow import _netcdf

from proximate.catalog import CatalogError, CatalogQuery, open_catalog
from proximate.catalog.opensearch import MAPPING, SETTINGS, OpenSearchCatalog

KILL_REGION, REFUSE_REGION, FLOW_REGION = "os-kill-r", "os-refuse-r", "os-flow-r"


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    """One worker for each of this module's regions; each region's root is a fresh folder."""
    from proximate.cluster import LocalRegionalCluster

    roots = {r: tmp_path_factory.mktemp(r) for r in (KILL_REGION, REFUSE_REGION, FLOW_REGION)}
    with LocalRegionalCluster(roots, workers_per_region=1, no_workers_timeout=10.0) as c:
        yield c, roots


def _bucket(s3: dict, name: str, objects: dict[str, bytes]) -> None:
    c = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1")
    c.create_bucket(Bucket=name)
    for key, body in objects.items():
        c.put_object(Bucket=name, Key=key, Body=body)


def _region_and_catalog(s3: dict, region: str, root, bucket: str, url: str, alias: str) -> str:
    from blocks.catalog import CatalogConfig
    from blocks.region import Region

    Region(name=region, root=str(root), source_url=f"s3://{bucket}/", endpoint_url=s3["endpoint_url"]).save(
        region, overwrite=True
    )
    CatalogConfig(backend="opensearch", opensearch_url=url, index=alias).save(f"{alias}-block", overwrite=True)
    return f"{alias}-block"


def _catalog_paths(url: str, alias: str, region: str) -> dict[str, str]:
    """Path -> status of every record of the region, read back through a fresh connection."""
    with open_catalog("opensearch", opensearch_url=url, index=alias) as cat:
        res = cat.search(CatalogQuery(region=region, page_size=1000))
        assert res.total == len(res.records) == cat.count()
        return {r.path: r.status for r in res.records}


@pytest.mark.slow
@pytest.mark.timeout(900)  # node restarts and nightly runs; at load 20-40 this test took 5-10 minutes here
def test_node_killed_mid_indexing_fails_the_run_keeps_the_backlog_and_the_next_run_completes(
    prefect_server, s3, opensearch_url, opensearch_node, fault_cluster, monkeypatch
):
    from flows.nightly import nightly_region
    from proximate.sync import read_backlog

    cluster, roots = fault_cluster
    root = roots[KILL_REGION]
    objects = {f"kill/f{i:03d}.nc": _netcdf(i) for i in range(300)}
    _bucket(s3, "os-kill", objects)
    block = _region_and_catalog(s3, KILL_REGION, root, "os-kill", opensearch_url, "killed")
    # Bulk writes of 10 records instead of 1,000, so the run writes several times and the node can die between
    # two of them (the extraction batches of 50 each become one write).
    monkeypatch.setattr(OpenSearchCatalog, "batch_size", 10)

    killed = threading.Event()

    def kill_after_the_first_write() -> None:
        client = OpenSearch(hosts=[opensearch_url], timeout=5)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if client.indices.exists_alias(name="killed") and client.count(index="killed")["count"] > 0:
                    opensearch_node.kill()
                    killed.set()
                    return
            except Exception:  # the alias is being created; try again
                pass
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_the_first_write, daemon=True)
    killer.start()
    first = nightly_region(KILL_REGION, catalog=block, scheduler_address=cluster.address, return_state=True)
    killer.join(timeout=60)
    assert killed.is_set(), "the node was not killed during the run"
    assert first.is_failed(), first.message
    assert f"OpenSearch catalog at {opensearch_url}" in first.message and "unreachable" in first.message
    # The sync fetched every object; none was acknowledged, so the backlog holds them all for the next run.
    assert set(read_backlog(root).changed) == set(objects)
    for key, body in objects.items():
        assert (root / key).read_bytes() == body

    opensearch_node.start()  # same port, same data: what was written before the kill is still there
    second = nightly_region(KILL_REGION, catalog=block, scheduler_address=cluster.address, return_state=True)
    assert second.is_completed(), second.message
    data = second.result()
    assert data["sync"]["transferred"] == 0
    assert data["index"]["extracted"] == len(objects)
    assert _catalog_paths(opensearch_url, "killed", KILL_REGION) == dict.fromkeys(sorted(objects), "ok")
    assert not read_backlog(root)


@pytest.mark.slow
@pytest.mark.timeout(900)  # node restarts and nightly runs; at load 20-40 this test took 5-10 minutes here
def test_a_catalog_reconnects_after_the_node_restarts(opensearch_url, opensearch_node):
    """One long-lived catalog object (as a server holds it) keeps working across a restart of the node: an
    error naming the catalog while the node is down, the same records and new writes after."""
    records = sample_records()
    cat = open_catalog("opensearch", opensearch_url=opensearch_url, index="restarts")
    try:
        cat.upsert(records[:10])
        before = cat.search(CatalogQuery(variable="tas", page_size=100))
        opensearch_node.stop()
        with pytest.raises(CatalogError, match=f"OpenSearch catalog at {opensearch_url} is unreachable"):
            cat.count()
        opensearch_node.start()
        assert cat.count() == 10
        assert cat.search(CatalogQuery(variable="tas", page_size=100)) == before
        cat.upsert(records[10:])
        assert cat.count() == len(records)
        assert cat.get(records[-1].id) == records[-1]
    finally:
        cat.close()


def test_an_index_with_a_conflicting_mapping_is_refused_naming_index_and_field(opensearch_url):
    client = OpenSearch(hosts=[opensearch_url])
    wrong = {**MAPPING, "properties": {**MAPPING["properties"], "size": {"type": "keyword"}}}
    client.indices.create(index="conflict-v1", body={"settings": SETTINGS, "mappings": wrong})
    client.indices.put_alias(index="conflict-v1", name="conflict")
    client.index(index="conflict-v1", id="kept", body={"path": "hand/made.nc", "size": "12"}, refresh=True)
    mapping_before = client.indices.get_mapping(index="conflict-v1")

    with pytest.raises(CatalogError) as err:
        open_catalog("opensearch", opensearch_url=opensearch_url, index="conflict")
    message = str(err.value)
    assert "'conflict-v1'" in message and "'size'" in message and "'keyword'" in message and "'long'" in message
    # Nothing half-written: the index, its one document and its mapping are as they were.
    assert client.indices.get_alias(name="conflict") == {"conflict-v1": {"aliases": {"conflict": {}}}}
    assert client.count(index="conflict-v1")["count"] == 1
    assert client.get(index="conflict-v1", id="kept")["_source"] == {"path": "hand/made.nc", "size": "12"}
    assert client.indices.get_mapping(index="conflict-v1") == mapping_before


def test_an_index_lacking_a_newer_field_gets_it_added(opensearch_url):
    client = OpenSearch(hosts=[opensearch_url])
    older = {**MAPPING, "properties": {k: v for k, v in MAPPING["properties"].items() if k != "mtime_ms"}}
    client.indices.create(index="older-v1", body={"settings": SETTINGS, "mappings": older})
    client.indices.put_alias(index="older-v1", name="older")
    with open_catalog("opensearch", opensearch_url=opensearch_url, index="older") as cat:
        props = client.indices.get_mapping(index="older-v1")["older-v1"]["mappings"]["properties"]
        assert props["mtime_ms"] == {"type": "long"}
        records = sample_records()
        cat.upsert(records)
        res = cat.search(CatalogQuery(sort="-mtime", page_size=3))
        assert res.ids() == [r.id for r in sorted(records, key=lambda r: -r.mtime_ns)[:3]]


def _netcdf_without_time(i: int) -> bytes:
    """A small NetCDF file with a variable and no time (written by xarray, not by the code under test)."""
    import numpy as np
    import xarray as xr

    ds = xr.Dataset({"depth": (("x",), np.arange(3.0) + i, {"standard_name": "sea_floor_depth_below_geoid"})})
    return bytes(ds.to_netcdf())


@pytest.mark.slow
@pytest.mark.timeout(900)  # node restarts and nightly runs; at load 20-40 this test took 5-10 minutes here
def test_a_bulk_write_partly_refused_names_the_records_stores_the_rest_and_keeps_them_in_the_backlog(
    prefect_server, s3, opensearch_url, fault_cluster
):
    """The catalog's alias points at an index another tool made, whose date fields take days only
    ("yyyy-MM-dd"; the types match, so the catalog opens it): the node refuses, within the same bulk request,
    every record with a time span, and stores the others."""
    from flows.nightly import nightly_region
    from proximate.sync import read_backlog

    cluster, roots = fault_cluster
    root = roots[REFUSE_REGION]
    timed = {f"refuse/timed_{i}.nc": _netcdf(i) for i in range(2)}
    timeless = {f"refuse/timeless_{i:02d}.nc": _netcdf_without_time(i) for i in range(10)}
    objects = timed | timeless
    _bucket(s3, "os-refuse", objects)
    block = _region_and_catalog(s3, REFUSE_REGION, root, "os-refuse", opensearch_url, "refused")
    days_only = {"type": "date", "format": "yyyy-MM-dd"}
    mapping = {**MAPPING, "properties": {**MAPPING["properties"], "time_start": days_only, "time_end": days_only}}
    client = OpenSearch(hosts=[opensearch_url])
    client.indices.create(index="refused-by-another-tool", body={"settings": SETTINGS, "mappings": mapping})
    client.indices.put_alias(index="refused-by-another-tool", name="refused")

    for run in range(2):
        state = nightly_region(REFUSE_REGION, catalog=block, scheduler_address=cluster.address, return_state=True)
        assert state.is_failed(), state.message
        assert "refused 2 record(s)" in state.message and all(p in state.message for p in timed), state.message
        data = state.result(raise_on_failure=False)
        rejected = dict(data["index"]["rejected"])
        assert sorted(rejected) == sorted(timed)
        assert all("time_start" in reason for reason in rejected.values()), rejected
        assert data["index"]["extracted"] == (len(objects) if run == 0 else len(timed))  # then the backlog's
        assert _catalog_paths(opensearch_url, "refused", REFUSE_REGION) == dict.fromkeys(sorted(timeless), "ok")
        assert sorted(read_backlog(root).changed) == sorted(timed)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_index_region_ends_failed_naming_the_records_the_catalog_refused(prefect_server, opensearch_url, fault_cluster):
    """The index-region flow on the same days-only index: the run stores every record the node takes, then ends
    Failed naming each refused one (Completed would say the region is searchable); the next run extracts only
    the refused ones again (they are not in the catalog) and fails the same way."""
    from blocks.catalog import CatalogConfig
    from flows.catalog import index_region
    from proximate.catalog.indexing import IndexReport

    cluster, roots = fault_cluster
    timed = {f"flow/timed_{i}.nc": _netcdf(i) for i in range(3)}
    timeless = {f"flow/timeless_{i:02d}.nc": _netcdf_without_time(i) for i in range(4)}
    for path, body in (timed | timeless).items():
        (roots[FLOW_REGION] / path).parent.mkdir(parents=True, exist_ok=True)
        (roots[FLOW_REGION] / path).write_bytes(body)
    days_only = {"type": "date", "format": "yyyy-MM-dd"}
    mapping = {**MAPPING, "properties": {**MAPPING["properties"], "time_start": days_only, "time_end": days_only}}
    client = OpenSearch(hosts=[opensearch_url])
    client.indices.create(index="flow-refused-by-another-tool", body={"settings": SETTINGS, "mappings": mapping})
    client.indices.put_alias(index="flow-refused-by-another-tool", name="flow-refused")
    CatalogConfig(backend="opensearch", opensearch_url=opensearch_url, index="flow-refused").save(
        "flow-refused-block", overwrite=True
    )

    for run in range(2):
        state = index_region(
            FLOW_REGION, catalog="flow-refused-block", scheduler_address=cluster.address, return_state=True
        )
        assert state.is_failed(), state.message
        assert f"refused {len(timed)} record(s)" in state.message, state.message
        assert all(p in state.message for p in timed) and not any(p in state.message for p in timeless)
        report = state.result(raise_on_failure=False)
        assert isinstance(report, IndexReport)
        assert sorted(p for p, _ in report.rejected) == sorted(timed)
        assert all("time_start" in reason for _, reason in report.rejected), report.rejected
        assert report.extracted == (len(timed) + len(timeless) if run == 0 else len(timed))
        assert _catalog_paths(opensearch_url, "flow-refused", FLOW_REGION) == dict.fromkeys(sorted(timeless), "ok")
