"""Real parts for the tests: Prefect's own server, an S3 server, a real OpenSearch node and a multi-region
Dask cluster of separate processes. Each binds to 127.0.0.1, starts once per session and is stopped by PID."""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proximate.native import load_in_safe_order

# Before anything lets xarray list its backends (cfgrib's ecCodes shadows SQLite and PROJ loaded after it).
load_in_safe_order()
# Before anything imports prefect: an isolated home, no telemetry. Scheduler and workers inherit it.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="proximate-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing-secret"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)
# Functions defined in test modules are pickled by reference: let scheduler and workers import them.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p
)


# Real files written by other people, kept in the repository so a clone needs nothing beside it (provenance and
# licences in its README).
REAL_DATA = Path(__file__).resolve().parent / "data" / "real"

from proximate.testing.local_s3 import free_port  # noqa: E402, F401 - tests import it from here; after the env setup

# -- Prefect ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_heartbeats(*args, **kwargs):
    yield


def pytest_configure(config):
    """Every flow called in this process ends by joining Prefect's heartbeat thread, which sleeps in whole
    seconds: about 1 s per flow call whatever the flow does, ~100 s of the fast tier. Heartbeats only let the
    server notice a crashed run, which no test here relies on, and Prefect's setting cannot turn them off (it
    takes 30 s or more, never None), so this process skips them. Processes the tests start (`proximate up`,
    its Prefect worker and flow runs) keep Prefect's default."""
    import prefect.flow_engine

    assert hasattr(prefect.flow_engine, "_send_heartbeats"), "Prefect's heartbeat helper moved: update this hook"
    prefect.flow_engine._send_heartbeats = _no_heartbeats


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """Prefect's own server on SQLite for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


# -- S3 (moto server) ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server process on loopback; yields its endpoint URL."""
    from proximate.testing.local_s3 import local_s3_server

    with local_s3_server() as url:
        yield url


@pytest.fixture
def s3(s3_server: str) -> Iterator[dict]:
    """The S3 server, emptied before each test; yields s3fs storage options for it."""
    req = urllib.request.Request(f"{s3_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    yield {
        "endpoint_url": s3_server,
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": s3_server},
    }


# -- OpenSearch (a real node) ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def opensearch_node():
    """A real single-node OpenSearch (proximate.testing.opensearch) for the whole session, stopped by PID. The
    first start on a machine downloads its jars from Maven Central. Fault tests may kill and restart it; each
    test through ``opensearch_url`` finds it running."""
    from proximate.testing.opensearch import OpenSearchNode

    with OpenSearchNode() as node:
        yield node


@pytest.fixture
def opensearch_url(opensearch_node) -> str:
    """The session's node, running and without indices (each test starts from an empty cluster)."""
    from opensearchpy import OpenSearch

    if opensearch_node.pid is None:  # a fault test before this one stopped it and failed before its restart
        opensearch_node.start()
    with OpenSearch(hosts=[opensearch_node.url], timeout=60) as client:
        # Indices only: their aliases go with them. Hidden (system) indices are the node's own.
        client.indices.delete(index="*", expand_wildcards="open,closed")
    return opensearch_node.url


# -- The multi-region cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def region_roots() -> dict[str, Path]:
    roots = {name: _SESSION_HOME / "regions" / name for name in ("a", "b")}
    for root in roots.values():
        root.mkdir(parents=True, exist_ok=True)
    return roots


@pytest.fixture(scope="session")
def cluster(region_roots: dict[str, Path]):
    """Scheduler process plus two regions of two worker processes each."""
    from proximate.cluster import LocalRegionalCluster

    with LocalRegionalCluster(region_roots, workers_per_region=2, no_workers_timeout=10.0) as c:
        yield c


@pytest.fixture
def client(cluster):
    with cluster.client(set_as_default=True) as c:
        yield c
