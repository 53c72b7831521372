"""Real parts for the tests: Prefect's own server, an S3 server, an OpenSearch-API server and a multi-region
Dask cluster of separate processes. Each binds to 127.0.0.1, starts once per session and is stopped by PID."""

from __future__ import annotations

import os
import signal
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


# -- OpenSearch API (osmem-server) -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def osmem_server():
    """osmem-server with --no-ja (overrides the plugin's fixture); tests use ``osmem_clone`` for isolation."""
    from osmem_server import OsmemServer

    server = OsmemServer.start(japanese=False, addr="127.0.0.1:0")
    try:
        yield server
    finally:
        server.close()
        if server.process.poll() is None:
            os.kill(server.pid, signal.SIGKILL)


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
