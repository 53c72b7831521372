"""``proximate up``: the embedded default, running, for use from the Prefect UI.

    proximate up [--workdir proximate-demo] [--port 4200] [--prefect-database postgresql+asyncpg://U:P@HOST:PORT/DB]
                 [--catalog sqlite|opensearch]

brings up, each a stage of :mod:`deployments.stages` (a context manager that starts one part and stops it)
whose processes are their own process groups, started and stopped by PID:

1. a Prefect server on a loopback port (state under ``<workdir>/prefect``; its database there in SQLite, or the
   PostgreSQL of ``--prefect-database``);
2. with ``--catalog opensearch``, a real single-node OpenSearch (:mod:`proximate.testing.opensearch`) on a
   loopback port, its indices under ``<workdir>/opensearch``: the catalog production runs, tried locally;
3. the demo's data (:mod:`deployments.demo`): generated files, a local S3 server (moto) with a bucket per region, and a
   long-lived two-region Dask cluster; ``Region``, ``CatalogConfig`` (``demo-catalog``, and the flows' default
   ``proximate-catalog``, on the SQLite file or the OpenSearch node) and ``RegionalCluster``
   (``proximate-cluster``, the running scheduler's address) blocks saved; the nightly flow run per region, so
   the regions are synced and the catalog indexed;
4. the process work pool ``proximate-local`` (``deployments/process-pool.json``), the deployments of
   ``prefect.yaml`` that work here, and a ``prefect worker`` whose flow runs use the demo catalog by default and
   write results under ``<workdir>/results``;

then prints the UI address and what to click, and runs until Ctrl-C (or SIGTERM), which stops all of it.
``<workdir>/up.json`` says where everything is while it runs (the browser test reads it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deployments import stages
from deployments.stages import POOL_TEMPLATE, PROJECT, WORK_POOL  # noqa: F401 - where up's parts are, for its users
from proximate import config
from proximate.errors import ProximateInputError
from proximate.redaction import redact_url

#: How often the worker asks for runs: Prefect's default of 10 s would be half of a UI-triggered run's time.
WORKER_QUERY_SECONDS = "1"


def _log(t0: float, message: str) -> None:
    print(f"[{time.perf_counter() - t0:5.1f}s] {message}", flush=True)


def up_environment(workdir: Path, port: int, current: Mapping[str, str]) -> dict[str, str]:
    """The variables ``up`` sets in its own environment, which every process it starts inherits.

    The demo's (Prefect state under the workdir, no telemetry, the local S3 server's credentials), a Prefect API
    and UI on ``port`` of loopback, and this project first on the import path of every subprocess (flow runs and
    Dask workers import flows/, tasks/ and proximate/ from it).

    Args:
        workdir: the demo's folder, absolute.
        port: the Prefect server's port.
        current: the current environment (left unchanged).

    Returns:
        The variables to set and their values.
    """
    from deployments.demo import demo_environment

    api = f"http://127.0.0.1:{port}/api"
    path = os.pathsep.join(p for p in (str(PROJECT), current.get("PYTHONPATH")) if p)
    return {
        **demo_environment(workdir, current),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PYTHONPATH": path,
        config.env_var("home"): str(PROJECT),
    }


def worker_environment(workdir: Path, base: Mapping[str, str], opensearch_url: str | None = None) -> dict[str, str]:
    """The Prefect worker's environment, which its flow-run processes inherit.

    Flow runs read the demo's catalog by default (``PROXIMATE_CATALOG``: its SQLite file, or the OpenSearch
    node's URL), write results under ``<workdir>/results`` (``PROXIMATE_RESULTS``) and log at INFO, so the run
    page shows what a run did.

    Args:
        workdir: the demo's folder, absolute.
        base: the environment it extends (``up``'s).
        opensearch_url: the OpenSearch node that holds the catalog (``--catalog opensearch``); None: SQLite.
    """
    from deployments.demo import demo_catalog_path

    return {
        **base,
        config.env_var("catalog.location"): opensearch_url or str(demo_catalog_path(workdir)),
        config.env_var("results"): str(workdir / "results"),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_SECONDS,
    }


def deployment_names(prefect_yaml: Path) -> list[str]:
    """The names of ``prefect.yaml``'s deployments (none has a schedule or names a region: all run here)."""
    import yaml

    spec = yaml.safe_load(prefect_yaml.read_text())
    return [d["name"] for d in spec.get("deployments", [])]


#: What a flow run's Prefect tasks import on a Dask worker: 20 s the first time on a loaded 2-core machine (measured),
#: paid once here rather than by the user's first run.
WARM_MODULES = ("prefect", "prefect_dask", "flows.analysis", "flows.tabular")


def warm_workers(cluster: Any) -> None:
    """Import :data:`WARM_MODULES` on every worker of ``cluster`` (a LocalRegionalCluster)."""
    import importlib

    with cluster.client(set_as_default=False) as client:
        for module in WARM_MODULES:
            client.run(importlib.import_module, module)


#: The catalogs ``up`` can run the demo on: the embedded SQLite file, or a real OpenSearch node it starts.
CATALOGS = ("sqlite", "opensearch")


def run_up(
    workdir: Path,
    *,
    workers_per_region: int = 2,
    port: int = 0,
    prefect_database: str | None = None,
    catalog: str = "sqlite",
) -> None:
    """Bring everything up in ``workdir`` and keep it running until interrupted.

    Args:
        workdir: where regions' data, the catalog, Prefect state, logs and results go (created if missing).
        workers_per_region: Dask worker processes per region.
        port: the Prefect server's port on 127.0.0.1 (0: a free one).
        prefect_database: the Prefect server's database, ``postgresql+asyncpg://USER:PASS@HOST:PORT/DB`` (None:
            Prefect's SQLite file under ``<workdir>/prefect``). Shown only with its password redacted.
        catalog: ``sqlite`` (the file ``<workdir>/catalog/proximate.sqlite``) or ``opensearch`` (a real node
            started here, its indices under ``<workdir>/opensearch``).

    Raises:
        ProximateInputError: ``prefect_database`` is not a URL Prefect's server takes, or ``catalog`` is neither
            of :data:`CATALOGS` (before anything starts).
    """
    if prefect_database is not None:
        stages.check_database_url(prefect_database)
    if catalog not in CATALOGS:
        raise ProximateInputError(f"--catalog {catalog!r}: choose one of {', '.join(CATALOGS)}")
    from deployments.demo import environment
    from proximate.testing.local_s3 import free_port

    # Started from a script in the background, a process inherits SIGINT ignored: Ctrl-C and `kill -INT` must
    # still stop it (and the processes it starts then get the default, not the ignored, disposition).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with environment(up_environment(workdir, port or free_port(), os.environ)):
        _run_up(workdir, workers_per_region, prefect_database, catalog == "opensearch")


def _run_up(workdir: Path, workers_per_region: int, database: str | None, use_opensearch: bool = False) -> None:
    """The stages in order on one stack (so they stop in reverse), then wait for Ctrl-C or SIGTERM."""
    from deployments.demo import demo_catalog_ids, generate, ingest, region_roots
    from proximate.testing.local_s3 import free_port

    t0 = time.perf_counter()
    env = dict(os.environ)
    logs = workdir / "logs"
    state = workdir / "up.json"
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: state.unlink(missing_ok=True))
        stack.callback(print, "proximate up: stopped", flush=True)
        server = stack.enter_context(stages.prefect_server(env, logs / "prefect-server.log", database))
        _log(t0, f"Prefect server starting at {server.ui} (pid {server.process.pid}, log {server.process.log})")
        _log(t0, f"Prefect database: {redact_url(database) if database else 'SQLite under ' + env['PREFECT_HOME']}")
        node = None
        if use_opensearch:  # the slowest part to start (55-100 s under load): it starts first, awaited last
            node = stack.enter_context(
                stages.opensearch(env, logs / "opensearch.log", workdir / "opensearch", free_port())
            )
            _log(t0, f"OpenSearch node starting at {node.url} (pid {node.process.pid}, log {node.process.log})")
        # What needs no Prefect happens while the server migrates its database.
        staging = workdir / "staging"
        roots = region_roots(workdir)
        files = generate(staging)
        endpoint = stack.enter_context(stages.s3_buckets(files, staging))
        _log(t0, f"generated {sum(map(len, files.values()))} files, uploaded to S3 at {endpoint}")
        cluster = stack.enter_context(stages.regional_cluster(roots, workers_per_region, dashboard=True))
        _log(t0, f"Dask cluster {cluster.address}: {workers_per_region} worker processes per region")
        server.wait_healthy()
        _log(t0, "Prefect server healthy")
        opensearch_url = node.wait_ready() if node is not None else None
        if node is not None:
            _log(t0, f"OpenSearch node ready at {opensearch_url} (JVM pid {node.node_pid()})")
        saved = stack.enter_context(stages.blocks(workdir, endpoint, roots, cluster.address, opensearch_url))
        _log(t0, f"blocks saved: {'; '.join(saved)}")
        # The deployments (a Prefect CLI start) are made while the nightly flows run here.
        names = deployment_names(PROJECT / "prefect.yaml")
        deploying = stack.enter_context(stages.deployments(env, logs / "prefect-setup.log", names))
        ingest(roots, cluster.address, t0)
        warm_workers(cluster)
        _log(t0, f"Dask workers have imported {', '.join(WARM_MODULES)}")
        _log(t0, f"work pool {WORK_POOL}, deployments: {', '.join(deploying.wait())}")
        ids = demo_catalog_ids(workdir, opensearch_url)
        worker_log = logs / "prefect-worker.log"
        worker_env = worker_environment(workdir, env, opensearch_url)
        worker = stack.enter_context(stages.prefect_worker(worker_env, worker_log, server.api))
        _log(t0, f"worker polling pool {WORK_POOL} (pid {worker.pid}, log {worker_log})")
        state.write_text(
            json.dumps(
                {
                    "ui": server.ui,
                    "api": server.api,
                    "scheduler": cluster.address,
                    "dashboard": cluster.dashboard_link,
                    "s3": endpoint,
                    "workdir": str(workdir),
                    "deployments": names,
                    "catalog_ids": ids,
                    "catalog": worker_env[config.env_var("catalog.location")],
                    "pids": {
                        "up": os.getpid(),
                        "server": server.process.pid,
                        "worker": worker.pid,
                        **({"opensearch": node.process.pid, "opensearch-jvm": node.node_pid()} if node else {}),
                        **{f"dask-{name}": proc.pid for name, proc in cluster.processes.items()},
                    },
                },
                indent=2,
            )
        )
        print(banner(server.ui, cluster.dashboard_link, workdir, ids, opensearch_url), flush=True)
        parts = "the worker, the Dask cluster, the S3 server, " + ("the OpenSearch node, " if node else "")
        stack.callback(print, f"proximate up: stopping {parts}the Prefect server", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # SIGTERM arrives as SystemExit, and unwinds the same way
            while True:
                signal.pause()


def banner(
    ui: str, dashboard: str | None, workdir: Path, ids: Mapping[str, str], opensearch_url: str | None = None
) -> str:
    """What to do next, printed once everything is up."""
    lines = [
        "",
        f"proximate is up. Prefect UI: {ui}",
        "  Deployments -> any deployment -> Run -> Custom run: the form opens filled in with the demo's data",
        "  (prefect.yaml); Submit. The run page shows its logs, its Artifacts tab the locality report and results.",
        "  seasonal-mean: query text 'synthetic daily temperature', variable tas.",
        "  compare-forecast-to-observations: forecast ecmwf:forecast/air_temperature.nc (catalog id",
        f"  {ids['forecast']}), observations gcp:observations/air_temperature.nc ({ids['observations']}).",
        "  scenario-difference: HadCM3's real runs, ecmwf:real/A1B_north_america.nc minus",
        "  gcp:real/E1_north_america.nc, air_temperature, 2070-2099.",
        "  describe-table, fit-linear-regression: ecmwf:trips/yellow_tripdata_2024-01.parquet and",
        "  gcp:trips/yellow_tripdata_2024-02.parquet; columns VendorID, passenger_count, trip_distance,",
        "  fare_amount, tpep_pickup_datetime, tpep_dropoff_datetime (derived: trip_dur_secs).",
    ]
    if opensearch_url:
        lines.append(f"Catalog: OpenSearch at {opensearch_url} (alias proximate-datasets), indices under "
                     f"{workdir / 'opensearch'}")  # fmt: skip
    if dashboard:
        lines.append(f"Dask dashboard: {dashboard}")
    lines += [f"Results: {workdir / 'results'}; logs: {workdir / 'logs'}", "Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deployments.up``: the same as ``proximate up``, without the installed entry point."""
    from importlib.metadata import EntryPoint

    from proximate import cli

    here = [EntryPoint("up", f"{__name__}:run_up", cli.COMMANDS_GROUP)]
    return cli.main(["up", *(sys.argv[1:] if argv is None else argv)], entry_points=here)


if __name__ == "__main__":
    sys.exit(main())
