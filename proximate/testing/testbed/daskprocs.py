"""The testbed's Dask processes: the scheduler (with the routing preload) in the client namespace, and each
region's workers in its namespace, started with the production command ``proximate worker --region R --root DIR
--scheduler ADDR --host ADDR``."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proximate import processes
from proximate.cluster import TLSFiles, scheduler_command, scheduler_env
from proximate.testing.testbed.network import CLIENT, Network
from proximate.testing.testbed.roster import Roster
from proximate.testing.testbed.services import s3_endpoint

SCHEDULER_PORT = 8786


def _proximate_executable() -> list[str]:
    """The ``proximate`` console script of this interpreter's environment, else ``python -m proximate.cli``."""
    candidate = Path(sys.executable).with_name("proximate")
    return [str(candidate)] if candidate.exists() else [sys.executable, "-m", "proximate.cli"]


@dataclass
class DaskOptions:
    """How the testbed's scheduler and workers run (see ``Testbed`` for each)."""

    workers: Mapping[str, int]
    nthreads: int
    no_workers_timeout: float
    worker_ttl: float
    link_timeout: float | None
    memory_limit: str
    startup_timeout: float


class DaskProcesses:
    """The scheduler and the workers of a testbed.

    Args:
        network: The testbed's network.
        roster: The record their processes go into.
        options: How they run.
        root: The data root of a region.
        env: The environment of a testbed process.
        control: The testbed's agent in the client namespace (asks the scheduler what it has).
        saved: Writes the state file (after the scheduler's address is known).
        error: The exception class of start-up failures (``TestbedError``).
    """

    def __init__(
        self,
        network: Network,
        roster: Roster,
        options: DaskOptions,
        *,
        root: Callable[[str], Path],
        env: Callable[[], dict[str, str]],
        control: Callable[[], Any],
        saved: Callable[[], None],
        error: type[Exception],
    ) -> None:
        self.network = network
        self.roster = roster
        self.options = options
        self.root = root
        self.env = env
        self.control = control
        self.saved = saved
        self.error = error
        self.address: str | None = None
        self.tls: TLSFiles | None = None

    def start_scheduler(self, workdir: Path) -> str:
        """Start the scheduler in the client namespace, check its router; returns its address."""
        sched_file = workdir / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        env = scheduler_env(
            list(self.options.workers),
            self.options.no_workers_timeout,
            self.env(),
            link_timeout=self.options.link_timeout,
        )
        env["DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"] = f"{self.options.worker_ttl}s"
        host = self.network.address(CLIENT)
        cmd = scheduler_command(
            host=host, port=SCHEDULER_PORT, scheduler_file=sched_file, dashboard_address=None, tls=self.tls
        )
        self.roster.spawn("scheduler", CLIENT, cmd, env, "scheduler")
        self.roster.wait_port("scheduler", CLIENT, host, SCHEDULER_PORT)
        self.address = f"{'tls' if self.tls else 'tcp'}://{host}:{SCHEDULER_PORT}"
        self.saved()
        if not self.control().call(_has_router, timeout=120):  # Dask only logs a failing preload
            raise self.error(
                "the scheduler started without the proximate router:\n" + self.roster.log_tail("scheduler")
            )
        return self.address

    def worker_names(self, region: str | None = None) -> list[str]:
        """Names of the worker processes started (alive or not), of ``region`` or all."""
        return self.roster.names("worker", region)

    def start_worker(self, region: str, name: str, *, wait: bool = True) -> None:
        """Start one ``proximate worker`` of ``region`` in its namespace, listening on the region's address."""
        assert self.address is not None
        cmd = [*_proximate_executable(), "worker", "--region", region, "--root", str(self.root(region))]
        cmd += ["--scheduler", self.address, "--host", self.network.address(region)]
        cmd += ["--nthreads", str(self.options.nthreads), "--name", name, "--memory-limit", self.options.memory_limit]
        if self.tls:
            cmd += self.tls.cli_args()
        env = self.env()
        env["AWS_ENDPOINT_URL_S3"] = s3_endpoint(region)  # the region's own bucket, as in production
        self.roster.spawn(name, region, cmd, env, "worker")
        if wait:
            self.wait_for_workers({name})

    def wait_for_workers(self, names: Iterable[str] | None = None) -> None:
        """Block until the named workers (default: every live one started) are registered with the scheduler.

        Raises:
            error: one exited, or they did not register within the start-up timeout.
        """
        procs = self.roster.processes
        wanted = set(names) if names is not None else {n for n in self.worker_names() if procs[n].running()}
        registered: set[str] = set()

        def all_registered() -> bool:
            registered.clear()
            registered.update(self.control().call(_worker_names, timeout=60))
            return wanted <= registered

        self.roster.wait(
            sorted(wanted),
            all_registered,
            what=f"workers {sorted(wanted)}",
            timeout=self.options.startup_timeout,
            interval=0.3,
            detail=lambda: f"not registered: {sorted(wanted - registered)}",
        )

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a worker's process group (nanny and worker): what a lost machine looks like."""
        self.roster.processes[name].kill(sig)

    def restart_workers(self, region: str, names: Iterable[str] | None = None) -> None:
        """Stop workers of ``region`` (default: all of them), whatever state they are in, start them afresh and
        wait for them."""
        names = list(names) if names is not None else self.worker_names(region)
        processes.stop([self.roster.processes[name] for name in names], [(signal.SIGTERM, 5.0)])
        for name in names:
            self.start_worker(region, name, wait=False)
        self.wait_for_workers(names)


def _has_router() -> bool:
    from proximate.client import cluster_regions
    from proximate.testing.testbed.bed import connect

    with connect() as client:
        return bool(cluster_regions(client)["router"])


def _worker_names() -> list[str]:
    from proximate.testing.testbed.bed import connect

    with connect() as client:
        return [str(w.get("name")) for w in client.scheduler_info(n_workers=-1)["workers"].values()]
