"""The test servers are real: data goes through them and comes back."""

from __future__ import annotations

import os

import s3fs
from opensearchpy import OpenSearch, helpers


def test_s3fs_round_trip_through_the_s3_server(s3):
    fs = s3fs.S3FileSystem(key=s3["key"], secret=s3["secret"], client_kwargs=s3["client_kwargs"])
    fs.mkdir("roundtrip")
    payload = os.urandom(3 * 1024 * 1024)
    fs.pipe("roundtrip/dir/blob.bin", payload)
    fs.invalidate_cache()
    assert fs.cat("roundtrip/dir/blob.bin") == payload
    assert fs.info("roundtrip/dir/blob.bin")["size"] == len(payload)
    assert fs.ls("roundtrip/dir") == ["roundtrip/dir/blob.bin"]


def test_s3_server_resets_between_tests(s3):
    fs = s3fs.S3FileSystem(key=s3["key"], secret=s3["secret"], client_kwargs=s3["client_kwargs"])
    assert fs.ls("") == []


def test_opensearch_py_create_bulk_search(opensearch_url):
    client = OpenSearch(hosts=[opensearch_url])
    client.indices.create(
        index="things", body={"mappings": {"properties": {"name": {"type": "keyword"}, "n": {"type": "long"}}}}
    )
    actions = [{"_index": "things", "_id": str(i), "_source": {"name": f"t{i}", "n": i}} for i in range(50)]
    ok, errors = helpers.bulk(client, actions, refresh=True)
    assert ok == 50 and not errors
    res = client.search(index="things", body={"query": {"range": {"n": {"gte": 45}}}, "size": 100})
    assert sorted(h["_source"]["name"] for h in res["hits"]["hits"]) == [f"t{i}" for i in range(45, 50)]


def test_prefect_server_runs_a_flow_and_records_it(prefect_server):
    from prefect import flow, get_client

    @flow(name="harness-probe")
    def probe(x: int) -> int:
        return x * 2

    state = probe(21, return_state=True)
    assert state.is_completed() and state.result() == 42

    import asyncio

    async def read():
        async with get_client() as c:
            run = await c.read_flow_run(state.state_details.flow_run_id)
            return run.state.type.value, str(c.api_url)

    state_type, api = asyncio.run(read())
    assert state_type == "COMPLETED"
    assert api.startswith("http://127.0.0.1")
