"""Real parts for the tests: Prefect's own server, an S3 server, an OpenSearch-API server and a multi-region
Dask cluster of separate processes. Each binds to 127.0.0.1, starts once per session and is stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not answer within {timeout} s")


def stop_pid(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a server we started, by its process group, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", proc=proc)
        yield url
    finally:
        stop_pid(proc)


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
