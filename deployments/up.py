"""``proximate up``: the embedded default, running, for use from the Prefect UI.

    proximate up [--workdir proximate-demo] [--port 4200]

brings up, each as its own process group started and stopped by PID:

1. a Prefect server on a loopback port (state under ``<workdir>/prefect``);
2. the demo's data (``flows.demo``): generated files, a local S3 server (moto) with a bucket per region, and a
   long-lived two-region Dask cluster; ``Region``, ``CatalogConfig`` (``demo-catalog``, and the flows' default
   ``proximate-catalog``) and ``RegionalCluster``
   (``proximate-cluster``, the running scheduler's address) blocks saved; the nightly flow run per region, so
   the regions are synced and the catalog indexed;
3. the process work pool ``proximate-local`` (``deployments/process-pool.json``), the deployments of
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
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from deployments import prefect_server

#: The project folder: prefect.yaml, and the flows' code that flow runs import (PROXIMATE_HOME).
PROJECT = Path(__file__).resolve().parents[1]
#: The work pool prefect.yaml deploys to.
WORK_POOL = "proximate-local"
POOL_TEMPLATE = PROJECT / "deployments" / "process-pool.json"
#: How often the worker asks for runs: Prefect's default of 10 s would be half of a UI-triggered run's time.
WORKER_QUERY_SECONDS = "1"
#: A fresh SQLite database takes about 35 s to migrate on 2 cores.
SERVER_STARTUP_TIMEOUT = 180.0
SERVER_STOP_GRACE = 15.0
#: Prefect's worker only finishes on SIGINT (it ignores SIGTERM while it waits for its flow runs).
WORKER_STOP_GRACE = 20.0


def _log(t0: float, message: str) -> None:
    print(f"[{time.perf_counter() - t0:5.1f}s] {message}", flush=True)


def prefect_command(*args: str) -> list[str]:
    """The ``prefect`` CLI of this interpreter's environment (the one proximate is installed in)."""
    return [str(Path(sys.executable).with_name("prefect")), *args]


@contextlib.contextmanager
def process_group(
    cmd: Sequence[str], *, env: Mapping[str, str], log: Path, stop: signal.Signals, grace: float, cwd: Path = PROJECT
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own session (Ctrl-C in the terminal reaches only this process, which stops the rest in
    order) for the length of the block; then ``stop`` its group, and SIGKILL what outlives ``grace`` seconds.

    Args:
        cmd: the command line.
        env: its whole environment.
        log: file receiving its stdout and stderr.
        stop: the signal that stops it cleanly.
        grace: seconds it gets to stop.
        cwd: its working directory.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, stop)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        # The group may still hold children (uvicorn, flow-run processes) after its leader exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def get_json(url: str, timeout: float = 5.0) -> Any:
    """The JSON a URL answers with (a Prefect API endpoint)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until(
    check, *, what: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Poll ``check()`` until it is true; fail with the log's tail if ``proc`` exits or ``timeout`` passes.

    Args:
        check: returns True when ready; OSError counts as not yet.
        what: what is awaited, for the error.
        timeout: seconds.
        proc: the process that should become ready.
        log: its log, whose tail goes into the error.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log and log.exists() else ""
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:.0f} s:\n{tail}")
        time.sleep(0.5)


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
    from flows.demo import demo_environment

    api = f"http://127.0.0.1:{port}/api"
    path = os.pathsep.join(p for p in (str(PROJECT), current.get("PYTHONPATH")) if p)
    return {
        **demo_environment(workdir, current),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PYTHONPATH": path,
        "PROXIMATE_HOME": str(PROJECT),
    }


def worker_environment(workdir: Path, base: Mapping[str, str]) -> dict[str, str]:
    """The Prefect worker's environment, which its flow-run processes inherit.

    Flow runs read the demo's catalog by default (``PROXIMATE_CATALOG``), write results under
    ``<workdir>/results`` (``PROXIMATE_RESULTS``) and log at INFO, so the run page shows what a run did.

    Args:
        workdir: the demo's folder, absolute.
        base: the environment it extends (``up``'s).
    """
    from flows.demo import demo_catalog_path

    return {
        **base,
        "PROXIMATE_CATALOG": str(demo_catalog_path(workdir)),
        "PROXIMATE_RESULTS": str(workdir / "results"),
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


def register_blocks() -> None:
    """What ``prefect block register -m blocks`` does, in this process (a CLI start costs seconds)."""
    import blocks

    for name in blocks.__all__:
        getattr(blocks, name).register_type_and_schema()


def run_up(workdir: Path, *, workers_per_region: int = 2, port: int = 0) -> None:
    """Bring everything up in ``workdir`` and keep it running until interrupted.

    Args:
        workdir: where regions' data, the catalog, Prefect state, logs and results go (created if missing).
        workers_per_region: Dask worker processes per region.
        port: the Prefect server's port on 127.0.0.1 (0: a free one).
    """
    from flows.demo import environment
    from proximate.testing.local_s3 import free_port

    # Started from a script in the background, a process inherits SIGINT ignored: Ctrl-C and `kill -INT` must
    # still stop it (and the processes it starts then get the default, not the ignored, disposition).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with environment(up_environment(workdir, port or free_port(), os.environ)):
        _run_up(workdir, workers_per_region)


def _run_up(workdir: Path, workers_per_region: int) -> None:
    from flows.demo import generate, ingest, region_roots, save_demo_blocks, upload
    from proximate.cluster import LocalRegionalCluster
    from proximate.testing.local_s3 import local_s3_server

    t0 = time.perf_counter()
    env = dict(os.environ)
    api = env["PREFECT_API_URL"]
    ui = api.removesuffix("/api")
    logs = workdir / "logs"
    state = workdir / "up.json"
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: state.unlink(missing_ok=True))
        stack.callback(print, "proximate up: stopped", flush=True)
        server_log = logs / "prefect-server.log"
        server = stack.enter_context(
            process_group(
                prefect_server.command("--host", "127.0.0.1", "--port", env["PREFECT_SERVER_API_PORT"]),
                env=env,
                log=server_log,
                stop=signal.SIGTERM,
                grace=SERVER_STOP_GRACE,
            )
        )
        _log(t0, f"Prefect server starting at {ui} (pid {server.pid}, log {server_log})")
        # What needs no Prefect happens while the server migrates its database.
        staging = workdir / "staging"
        roots = region_roots(workdir)
        files = generate(staging)
        endpoint = stack.enter_context(local_s3_server())
        upload(endpoint, files, staging)
        _log(t0, f"generated {sum(map(len, files.values()))} files, uploaded to S3 at {endpoint}")
        cluster = stack.enter_context(
            LocalRegionalCluster(roots, workers_per_region=workers_per_region, dashboard=True)
        )
        _log(t0, f"Dask cluster {cluster.address}: {workers_per_region} worker processes per region")
        wait_until(
            lambda: get_json(f"{api}/health") is True,
            what="Prefect server",
            timeout=SERVER_STARTUP_TIMEOUT,
            proc=server,
            log=server_log,
        )
        _log(t0, "Prefect server healthy")

        from blocks.catalog import CatalogConfig
        from blocks.cluster import DEFAULT_CLUSTER_BLOCK, RegionalCluster
        from flows.common import DEFAULT_CATALOG_BLOCK
        from flows.demo import DEMO_CATALOG, demo_catalog_path

        register_blocks()
        save_demo_blocks(workdir, endpoint, roots)
        # The catalog a run uses when its `catalog` is empty, wherever its worker runs (not only up's).
        CatalogConfig(backend="sqlite", sqlite_path=str(demo_catalog_path(workdir))).save(
            DEFAULT_CATALOG_BLOCK, overwrite=True
        )
        RegionalCluster(address=cluster.address, regions=list(roots)).save(DEFAULT_CLUSTER_BLOCK, overwrite=True)
        _log(
            t0,
            f"blocks saved: Region {', '.join(roots)}; CatalogConfig {DEMO_CATALOG}, {DEFAULT_CATALOG_BLOCK}; "
            f"RegionalCluster {DEFAULT_CLUSTER_BLOCK} -> {cluster.address}",
        )
        # The pool and the deployments (two Prefect CLI starts) are made while the nightly flows run here.
        setup_log = logs / "prefect-setup.log"
        names = deployment_names(PROJECT / "prefect.yaml")
        setup = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                '"$0" work-pool create "$1" --type process --base-job-template "$2" --overwrite && '
                'shift 2 && exec "$0" --no-prompt deploy "$@"',
                prefect_command()[0],
                WORK_POOL,
                str(POOL_TEMPLATE),
                *(a for n in names for a in ("--name", n)),
            ],
            env=env,
            cwd=PROJECT,
            stdin=subprocess.DEVNULL,
            stdout=setup_log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop, setup)
        ingest(roots, cluster.address, t0)
        warm_workers(cluster)
        _log(t0, f"Dask workers have imported {', '.join(WARM_MODULES)}")
        if setup.wait() != 0:
            tail = "\n".join(setup_log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"creating the work pool or the deployments failed (exit {setup.returncode}):\n{tail}")
        _log(t0, f"work pool {WORK_POOL}, deployments: {', '.join(names)}")
        ids = demo_catalog_ids(workdir)
        worker_log = logs / "prefect-worker.log"
        worker = stack.enter_context(
            process_group(
                prefect_command("worker", "start", "--pool", WORK_POOL, "--name", f"{WORK_POOL}-up"),
                env=worker_environment(workdir, env),
                log=worker_log,
                stop=signal.SIGINT,
                grace=WORKER_STOP_GRACE,
            )
        )
        wait_until(
            lambda: get_json(f"{api}/work_pools/{WORK_POOL}")["status"] == "READY",
            what="Prefect worker",
            timeout=120,
            proc=worker,
            log=worker_log,
        )
        _log(t0, f"worker polling pool {WORK_POOL} (pid {worker.pid}, log {worker_log})")
        state.write_text(
            json.dumps(
                {
                    "ui": ui,
                    "api": api,
                    "scheduler": cluster.address,
                    "dashboard": cluster.dashboard_link,
                    "s3": endpoint,
                    "workdir": str(workdir),
                    "deployments": names,
                    "catalog_ids": ids,
                    "pids": {
                        "up": os.getpid(),
                        "server": server.pid,
                        "worker": worker.pid,
                        **{f"dask-{name}": proc.pid for name, proc in cluster.processes.items()},
                    },
                },
                indent=2,
            )
        )
        print(banner(ui, cluster.dashboard_link, workdir, ids), flush=True)
        stack.callback(
            print, "proximate up: stopping the worker, the Dask cluster, the S3 server, the Prefect server", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):  # SIGTERM arrives as SystemExit, and unwinds the same way
            while True:
                signal.pause()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def demo_catalog_ids(workdir: Path) -> dict[str, str]:
    """The catalog ids of the demo's forecast and observations (what the compare flow accepts as references)."""
    from flows.demo import FORECAST_REGION, OBSERVATIONS_REGION, demo_catalog_path
    from proximate.catalog import CatalogSettings
    from proximate.catalog.records import record_id

    wanted = {
        "forecast": record_id(FORECAST_REGION, "forecast/air_temperature.nc"),
        "observations": record_id(OBSERVATIONS_REGION, "observations/air_temperature.nc"),
    }
    with CatalogSettings(backend="sqlite", sqlite_path=str(demo_catalog_path(workdir))).open() as catalog:
        found = catalog.get_many(list(wanted.values()))
    missing = [name for name, rid in wanted.items() if rid not in found]
    if missing:
        raise RuntimeError(f"the demo catalog lacks the {' and '.join(missing)} after indexing")
    return wanted


def banner(ui: str, dashboard: str | None, workdir: Path, ids: Mapping[str, str]) -> str:
    """What to do next, printed once everything is up."""
    lines = [
        "",
        f"proximate is up. Prefect UI: {ui}",
        "  Deployments -> seasonal-mean -> Run -> Custom run; query: DatasetQuery, Text: str, synthetic daily",
        "  temperature; variable: tas; Submit. The run page shows its logs, its Artifacts tab the locality report.",
        "  compare-forecast-to-observations: forecast ecmwf:forecast/air_temperature.nc (catalog id",
        f"  {ids['forecast']}), observations gcp:observations/air_temperature.nc ({ids['observations']}).",
    ]
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
