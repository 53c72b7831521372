"""The parts ``proximate up`` (and the demo) start, one stage each: a context manager that starts one part,
yields a handle on it, and stops it on the way out.

``up`` enters them in order on one ``ExitStack``, so they stop in the reverse order, on Ctrl-C, SIGTERM or an
error alike: :func:`prefect_server`, (with ``--catalog opensearch``) :func:`opensearch`, :func:`s3_buckets`,
:func:`regional_cluster`, :func:`blocks`, :func:`deployments`, :func:`prefect_worker`. Every process goes
through :mod:`proximate.processes` (its own group, a stop signal and a grace period, then SIGKILL to the group).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.prefect_server import command as prefect_server_command
from proximate import processes
from proximate.errors import ProximateInputError
from proximate.processes import ProcessStartError, Supervised
from proximate.redaction import redact_url

#: The project folder: prefect.yaml, and the flows' code that flow runs import (PROXIMATE_HOME).
PROJECT = Path(__file__).resolve().parents[1]
#: The work pool prefect.yaml deploys to.
WORK_POOL = "proximate-local"
POOL_TEMPLATE = PROJECT / "deployments" / "process-pool.json"
#: A fresh SQLite database takes about 35 s to migrate on 2 cores.
SERVER_STARTUP_TIMEOUT = 180.0
SERVER_STOP_GRACE = 15.0
#: Prefect's worker only finishes on SIGINT (it ignores SIGTERM while it waits for its flow runs).
WORKER_STOP_GRACE = 20.0
WORKER_STARTUP_TIMEOUT = 120.0


def prefect_command(*args: str) -> list[str]:
    """The ``prefect`` CLI of this interpreter's environment (the one proximate is installed in)."""
    return [str(Path(sys.executable).with_name("prefect")), *args]


def get_json(url: str, timeout: float = 5.0) -> Any:
    """The JSON a URL answers with (a Prefect API endpoint)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until(check: Callable[[], Any], *, what: str, timeout: float, proc: Supervised | None = None) -> None:
    """Poll ``check()`` until it is true; fail with the log's tail if ``proc`` exits or ``timeout`` passes.

    Args:
        check: returns True when ready; OSError and ValueError (a refused connection, a half-written answer)
            count as not yet.
        what: what is awaited, for the error.
        timeout: seconds.
        proc: the process that should become ready.

    Raises:
        ProcessStartError: ``proc`` exited, or ``timeout`` passed.

    Examples:
        >>> wait_until(lambda: True, what="nothing", timeout=1)
    """
    processes.wait_ready(
        [proc] if proc else [], check, what=what, timeout=timeout, interval=0.5, retry_on=(OSError, ValueError)
    )


@dataclass
class PrefectServer:
    """A Prefect server process and where it answers."""

    process: Supervised
    api: str

    @property
    def ui(self) -> str:
        return self.api.removesuffix("/api")

    def wait_healthy(self, timeout: float = SERVER_STARTUP_TIMEOUT) -> None:
        """Until its API's health check answers (a fresh database migrates first)."""
        wait_until(
            lambda: get_json(f"{self.api}/health") is True, what="Prefect server", timeout=timeout, proc=self.process
        )


#: The database URLs a Prefect server takes: SQLAlchemy's async drivers Prefect ships with.
DATABASE_SCHEMES = ("postgresql+asyncpg://", "sqlite+aiosqlite://")


def check_database_url(url: str) -> str:
    """``url`` if a Prefect server can use it as its database (``PREFECT_API_DATABASE_CONNECTION_URL``).

    Args:
        url: e.g. ``postgresql+asyncpg://USER:PASS@HOST:PORT/DB``.

    Returns:
        ``url`` unchanged.

    Raises:
        ProximateInputError: another scheme (``postgresql://`` without the driver would fail only once the server
            starts, in its log); the message shows the URL with its password redacted.

    Examples:
        >>> check_database_url("postgresql+asyncpg://prefect:secret@127.0.0.1:5432/prefect")
        'postgresql+asyncpg://prefect:secret@127.0.0.1:5432/prefect'
    """
    if not url.startswith(DATABASE_SCHEMES):
        raise ProximateInputError(
            f"--prefect-database {redact_url(url)}: not a Prefect database URL (it starts with "
            f"{' or '.join(DATABASE_SCHEMES)})"
        )
    return url


@contextlib.contextmanager
def prefect_server(env: Mapping[str, str], log: Path, database: str | None = None) -> Iterator[PrefectServer]:
    """A Prefect server on ``PREFECT_SERVER_API_PORT`` of 127.0.0.1 (``env``), not yet awaited: the caller does
    what needs no Prefect while its database migrates, then :meth:`PrefectServer.wait_healthy`.

    Args:
        env: its whole environment (``PREFECT_API_URL``, ``PREFECT_SERVER_API_PORT``, ``PREFECT_HOME``).
        log: its log file.
        database: its database's URL (``postgresql+asyncpg://USER:PASS@HOST:PORT/DB``); None: Prefect's SQLite
            file under ``PREFECT_HOME``. Only the server's environment gets it (with its password): the worker
            and flow runs talk to the API.
    """
    if database is not None:
        env = {**env, "PREFECT_API_DATABASE_CONNECTION_URL": check_database_url(database)}
    # Prefect's server with write transactions that queue instead of failing (deployments/prefect_server.py).
    cmd = prefect_server_command("--host", "127.0.0.1", "--port", env["PREFECT_SERVER_API_PORT"])
    proc = processes.start(cmd, name="prefect server", env=env, log=log, cwd=PROJECT)
    try:
        yield PrefectServer(proc, env["PREFECT_API_URL"])
    finally:
        proc.stop([(signal.SIGTERM, SERVER_STOP_GRACE)])  # its group: uvicorn too


#: The first start on a machine resolves OpenSearch's jars from Maven Central and compiles the node; a start
#: takes 55-100 s on a loaded two-core machine (JIT warm-up of a cold JVM).
OPENSEARCH_STARTUP_TIMEOUT = 900.0
#: The launcher stops the JVM on SIGTERM, giving it 60 s to close its indices before it SIGKILLs it.
OPENSEARCH_STOP_GRACE = 75.0
_NODE_PID = re.compile(r"OpenSearch node pid (\d+)")


@dataclass
class OpenSearchStage:
    """A real single-node OpenSearch (``python -m proximate.testing.opensearch``) and where it answers."""

    process: Supervised
    url: str

    def wait_ready(self, timeout: float = OPENSEARCH_STARTUP_TIMEOUT) -> str:
        """Until the launcher prints the node's URL (it does once the cluster is green or yellow).

        Returns:
            The node's URL.

        Raises:
            ProcessStartError: the launcher exited (the node's log tail is in its own), or ``timeout`` passed.
        """
        log = self.process.log
        assert log is not None
        wait_until(
            lambda: self.url in log.read_text(errors="replace").splitlines(),
            what="OpenSearch node",
            timeout=timeout,
            proc=self.process,
        )
        return self.url

    def node_pid(self) -> int | None:
        """The JVM's PID, as the launcher printed it once the node was up."""
        log = self.process.log
        found = _NODE_PID.findall(log.read_text(errors="replace")) if log is not None and log.exists() else []
        return int(found[-1]) if found else None


@contextlib.contextmanager
def opensearch(env: Mapping[str, str], log: Path, data: Path, port: int) -> Iterator[OpenSearchStage]:
    """A real OpenSearch node on ``port`` of 127.0.0.1 keeping its indices in ``data``, not yet awaited: the
    caller starts the rest meanwhile, then :meth:`OpenSearchStage.wait_ready`. Stopped by SIGTERM to the
    launcher (which stops the JVM cleanly), then by PID: the launcher's group, and the JVM (a session of its
    own) should it outlive the launcher.

    Args:
        env: the launcher's environment.
        log: the launcher's log (the node's own log is in its temporary home, named there).
        data: where the indices are kept across runs (like the SQLite catalog's file).
        port: the node's HTTP port.
    """
    cmd = [sys.executable, "-m", "proximate.testing.opensearch", "--port", str(port), "--data", str(data)]
    proc = processes.start(cmd, name="opensearch", env=env, log=log, cwd=PROJECT)
    stage = OpenSearchStage(proc, f"http://127.0.0.1:{port}")
    try:
        yield stage
    finally:
        jvm = stage.node_pid()
        jvm_start = processes.proc_start(jvm) if jvm is not None else None
        proc.stop([(signal.SIGTERM, OPENSEARCH_STOP_GRACE)])
        if jvm is not None and jvm_start is not None:
            leftover = Supervised("opensearch-jvm", jvm, jvm_start)
            if leftover.running():
                leftover.stop()


@contextlib.contextmanager
def s3_buckets(files: Mapping[str, Sequence[Path]], staging: Path) -> Iterator[str]:
    """A local S3 server (moto) holding a bucket per region with the demo's files; yields its endpoint.

    Args:
        files: the files of each region (:func:`deployments.demo.generate`).
        staging: the folder they were generated under (their keys are relative to ``staging/<region>``).
    """
    from deployments.demo import upload
    from proximate.testing.local_s3 import local_s3_server

    with local_s3_server() as endpoint:
        upload(endpoint, files, staging)
        yield endpoint


@contextlib.contextmanager
def regional_cluster(roots: Mapping[str, Path], workers_per_region: int, *, dashboard: bool = False) -> Iterator[Any]:
    """A long-lived local multi-region Dask cluster (a ``LocalRegionalCluster``), its workers registered."""
    from proximate.cluster import LocalRegionalCluster

    with LocalRegionalCluster(roots, workers_per_region=workers_per_region, dashboard=dashboard) as cluster:
        yield cluster


def register_blocks() -> None:
    """What ``prefect block register -m blocks`` does, in this process (a CLI start costs seconds)."""
    import blocks as block_types

    for name in block_types.__all__:
        getattr(block_types, name).register_type_and_schema()


@contextlib.contextmanager
def blocks(
    workdir: Path, endpoint: str, roots: Mapping[str, Path], scheduler: str, opensearch_url: str | None = None
) -> Iterator[list[str]]:
    """Register the block types and save the demo's blocks: a ``Region`` per region (its bucket on ``endpoint``),
    the demo catalog and the flows' default catalog (``PROXIMATE_CATALOG``'s block) on the demo's SQLite file, or
    on the OpenSearch node at ``opensearch_url``, and the default ``RegionalCluster`` (the running scheduler).
    Blocks live in the server's database: nothing to stop.

    Yields:
        What was saved, for the log.
    """
    from blocks.catalog import CatalogConfig
    from blocks.cluster import DEFAULT_CLUSTER_BLOCK, RegionalCluster
    from deployments.demo import DEMO_CATALOG, demo_catalog_fields, save_demo_blocks
    from flows.common import DEFAULT_CATALOG_BLOCK

    register_blocks()
    save_demo_blocks(workdir, endpoint, roots, opensearch_url)
    # The catalog a run uses when its `catalog` is empty, wherever its worker runs (not only up's).
    catalog = CatalogConfig(**demo_catalog_fields(workdir, opensearch_url))
    catalog.save(DEFAULT_CATALOG_BLOCK, overwrite=True)
    RegionalCluster(address=scheduler, regions=list(roots)).save(DEFAULT_CLUSTER_BLOCK, overwrite=True)
    yield [
        f"Region {', '.join(roots)}",
        f"CatalogConfig {DEMO_CATALOG}, {DEFAULT_CATALOG_BLOCK} ({catalog.settings().describe()})",
        f"RegionalCluster {DEFAULT_CLUSTER_BLOCK} -> {scheduler}",
    ]


def create_work_pool(name: str = WORK_POOL, template: Path = POOL_TEMPLATE) -> None:
    """Create (or update) the process work pool ``name`` with the base job template in ``template``, through
    Prefect's client (what ``prefect work-pool create NAME --type process --base-job-template FILE --overwrite``
    does, without a CLI start)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = WorkPoolCreate(name=name, type="process", base_job_template=json.loads(template.read_text()))
    with get_client(sync_client=True) as client:
        client.create_work_pool(pool, overwrite=True)


@dataclass
class Deploying:
    """``prefect deploy`` running in the background (its CLI reads prefect.yaml and builds each flow)."""

    process: Supervised
    names: list[str]

    def wait(self) -> list[str]:
        """Until it is done; returns the deployments' names.

        Raises:
            ProcessStartError: it failed (its log's tail in the message).
        """
        code = self.process.reap(timeout=None)
        if code != 0:
            raise ProcessStartError(f"creating the deployments failed (exit {code}):\n{self.process.log_tail()}")
        return self.names


@contextlib.contextmanager
def deployments(env: Mapping[str, str], log: Path, names: Sequence[str]) -> Iterator[Deploying]:
    """Create the work pool :data:`WORK_POOL`, then deploy ``names`` of prefect.yaml to it in the background
    (the caller does other work meanwhile, then :meth:`Deploying.wait`). Deployments stay in the database; a
    deploy still running on the way out is stopped.

    Args:
        env: the environment of ``prefect deploy`` (the server's API).
        log: its log file.
        names: the deployments of prefect.yaml to deploy.
    """
    create_work_pool()
    cmd = prefect_command("--no-prompt", "deploy", *(a for n in names for a in ("--name", n)))
    proc = processes.start(cmd, name="prefect deploy", env=env, log=log, cwd=PROJECT)
    try:
        yield Deploying(proc, list(names))
    finally:
        proc.stop()


@contextlib.contextmanager
def prefect_worker(env: Mapping[str, str], log: Path, api: str) -> Iterator[Supervised]:
    """A ``prefect worker`` polling :data:`WORK_POOL`, awaited until the pool reports it ready.

    Args:
        env: its environment, which its flow-run processes inherit (``worker_environment``).
        log: its log file.
        api: the Prefect API it polls.
    """
    cmd = prefect_command("worker", "start", "--pool", WORK_POOL, "--name", f"{WORK_POOL}-up")
    proc = processes.start(cmd, name="prefect worker", env=env, log=log, cwd=PROJECT)
    try:
        wait_until(
            lambda: get_json(f"{api}/work_pools/{WORK_POOL}")["status"] == "READY",
            what="Prefect worker",
            timeout=WORKER_STARTUP_TIMEOUT,
            proc=proc,
        )
        yield proc
    finally:
        proc.stop([(signal.SIGINT, WORKER_STOP_GRACE)])  # with its flow-run processes (its group)
