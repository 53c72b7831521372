"""``proximate up --catalog opensearch``: the UI setup with a real OpenSearch node as the catalog (the production
configuration, tried locally). The demo is indexed into the node, and a search through a Prefect deployment's run
answers from it; Ctrl-C stops the node with the rest, its indices kept under the workdir.

One test: the node alone takes 55-100 s to start on the loaded two-core machine, and up around it minutes.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
from opensearchpy import OpenSearch
from up_process import running_up

from deployments.demo import REAL_FILES
from proximate.catalog import CatalogQuery, open_catalog
from proximate.catalog.records import record_id
from proximate.catalog.settings import DEFAULT_INDEX
from proximate.processes import proc_start

#: Seconds for a dry run of summarize (a catalog search and a plan) on the loaded machine.
RUN_TIMEOUT = 300.0
QUERY = "synthetic daily temperature"


def _uploaded(workdir) -> set[tuple[str, str]]:
    """(region, path) of every object the demo put in its buckets (deployments.demo.upload's keys), computed from
    the staging folder and the real files' names: what the nightly runs must have indexed."""
    staging = workdir / "staging"
    found = {(region.name, str(p.relative_to(region))) for region in staging.iterdir() for p in region.rglob("*")
             if p.is_file()}  # fmt: skip
    return found | {(region, f"real/{name}") for region, names in REAL_FILES.items() for name in names}


def _run_deployment(api: str, name: str, parameters: dict) -> str:
    """Create a run of deployment ``name`` as the UI does, wait until it is Completed; its id."""
    deployment = httpx.get(f"{api}/deployments/name/{name}/{name}", timeout=60).json()
    created = httpx.post(
        f"{api}/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters}, timeout=120
    )
    assert created.status_code == 201, created.text[:300]
    run_id = created.json()["id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=60).json()["state_type"]
        if state == "COMPLETED":
            return run_id
        assert state not in ("FAILED", "CRASHED", "CANCELLED") and time.monotonic() < deadline, state
        time.sleep(2)


def _run_messages(api: str, run_id: str, containing: str, timeout: float = 120) -> list[str]:
    """The run's log messages once one contains `containing`.

    A flow run's process ships its logs to the server in batches, so a run can be COMPLETED before its last
    lines are stored: poll until the line looked for arrives or `timeout` s pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}, timeout=60).json()
        messages = [entry["message"] for entry in logs]
        if any(containing in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(1)


@pytest.mark.slow  # a real OpenSearch node and proximate up: 445 s measured at load 17-22 on 2 cores
# pytest-timeout counts up's start (bounded by up_process.UP_TIMEOUT) too.
@pytest.mark.timeout(1800)
def test_up_with_the_opensearch_catalog_indexes_the_demo_and_a_deployment_searches_it(tmp_path):
    with running_up(tmp_path, ["--catalog", "opensearch"]) as up:
        url = up.state["catalog"]
        assert url.startswith("http://127.0.0.1:"), up.state
        client = OpenSearch(hosts=[url], timeout=60)
        info = client.info()
        assert info["version"]["distribution"] == "opensearch" and info["version"]["number"].startswith("2.19.")
        printed = up.log.read_text(errors="replace")
        assert f"Catalog: OpenSearch at {url}" in printed, printed

        # Every object the demo uploaded has its record in the node, read with OpenSearch's own client.
        client.indices.refresh(index=DEFAULT_INDEX)
        hits = client.search(index=DEFAULT_INDEX, body={"query": {"match_all": {}}, "size": 1000})["hits"]["hits"]
        assert {(h["_source"]["region"], h["_source"]["path"]) for h in hits} == _uploaded(up.workdir)
        assert {h["_id"] for h in hits} >= set(up.state["catalog_ids"].values())
        assert not (up.workdir / "catalog" / "proximate.sqlite").exists(), "the demo was indexed into SQLite too"

        # A record removed in OpenSearch alone is gone from what a deployment's run finds: the run searched there.
        with open_catalog("opensearch", opensearch_url=url, index=DEFAULT_INDEX) as catalog:
            matches = {f"{r.region}:{r.path}" for r in catalog.search(CatalogQuery(text=QUERY)).records}
        assert {"ecmwf:daily/tas_2024.nc", "gcp:daily/tas_2025.nc"} <= matches, matches
        client.delete(index=DEFAULT_INDEX, id=record_id("gcp", "daily/tas_2025.nc"), refresh=True)
        parameters = {"query": {"text": QUERY}, "variables": ["tas"], "statistics": ["mean"], "dry_run": True}
        run_id = _run_deployment(up.state["api"], "summarize", parameters)
        messages = _run_messages(up.state["api"], run_id, containing=" dataset(s): ")
        found = [m for m in messages if " dataset(s): " in m]
        assert len(found) == 1, messages
        assert set(found[0].split(": ", 1)[1].split(", ")) == matches - {"gcp:daily/tas_2025.nc"}, found

        pids = up.state["pids"]
        node = {pid: proc_start(pid) for pid in (pids["opensearch"], pids["opensearch-jvm"])}
        assert all(node.values()), pids
        os.kill(up.proc.pid, 2)  # Ctrl-C, as a user stops it
        up.proc.wait(timeout=300)
    # The launcher and the JVM are gone (not PIDs the system has since given to another process); the indices stay.
    assert all(proc_start(pid) != start for pid, start in node.items()), node
    assert any((up.workdir / "opensearch").iterdir())
