"""A real multi-region Dask cluster on one machine: one scheduler process plus N worker processes per region.

The processes are exactly those of production (``dask scheduler`` with our preload, ``dask worker`` with
``--resources pool-<region>=<nthreads>``), only on loopback. An in-process LocalCluster would share the
client's Dask config and hide the scheduler-side graph optimisations that break region routing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from proximate import processes
from proximate.errors import ProximateError, ProximateInputError
from proximate.processes import Supervised
from proximate.regions import REGION_ENV, ROOT_ENV, RegionError, pool_resource, validate_region_name
from proximate.scheduler_plugin import (
    DEFAULT_NO_WORKERS_TIMEOUT,
    LINK_TIMEOUT_ENV,
    NO_WORKERS_TIMEOUT_ENV,
    REGIONS_ENV,
)

#: Environment the scheduler needs for routing to hold (see docs/notes on dask-pools): graph fusion happens on
#: the scheduler since dask 2025.4 and drops annotations unless it is switched off *there*.
#: Blockwise fusion must also not merge layers with different annotations: a read pinned to one region fused
#: with a read pinned to another would need a worker in both regions.
SCHEDULER_ENV = {
    "DASK_OPTIMIZATION__FUSE__ACTIVE": "False",
    "DASK_OPTIMIZATION__ANNOTATIONS__FUSE": "False",
}

#: Workers keep long transfer logs: the locality report reads them.
WORKER_ENV = {
    "DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH": "200000",
    "DASK_OPTIMIZATION__FUSE__ACTIVE": "False",
}


class ClusterError(ProximateError, RuntimeError):
    """The cluster could not start or lost a process while starting."""


@dataclass(frozen=True)
class RegionSpec:
    """A region as the local cluster sees it: a name and the folder standing in for its FSx mount."""

    name: str
    root: Path


def parse_region_arg(text: str) -> RegionSpec:
    """Parse ``NAME=ROOT`` as given on the command line."""
    name, sep, root = text.partition("=")
    if not sep or not root:
        raise RegionError(f"--region takes NAME=ROOT, got {text!r}")
    return RegionSpec(name.strip(), Path(root).expanduser())


def validate_regions(regions: Iterable[RegionSpec] | Mapping[str, str | os.PathLike[str]]) -> list[RegionSpec]:
    """Check names, uniqueness and roots before anything starts."""
    specs = [RegionSpec(k, Path(v)) for k, v in regions.items()] if isinstance(regions, Mapping) else list(regions)
    if not specs:
        raise RegionError("at least one region is needed")
    seen: set[str] = set()
    out = []
    for spec in specs:
        validate_region_name(spec.name)
        if spec.name in seen:
            raise RegionError(f"region {spec.name!r} is given twice")
        seen.add(spec.name)
        root = Path(spec.root).expanduser()
        if not root.is_dir():
            raise RegionError(f"root directory of region {spec.name!r} does not exist: {root}")
        out.append(RegionSpec(spec.name, root.resolve()))
    return out


def _dask_executable() -> str:
    """The ``dask`` entry point of this interpreter's environment (a venv need not be on PATH)."""
    candidate = Path(sys.executable).with_name("dask")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("dask")
    if not found:
        raise ClusterError("the 'dask' command is not installed next to this Python")
    return found


def scheduler_command(
    *,
    host: str,
    port: int,
    scheduler_file: Path,
    dashboard_address: str | None,
    tls: TLSFiles | None = None,
    preload: bool = True,
) -> list[str]:
    """The scheduler command line, with the routing preload."""
    cmd = [
        _dask_executable(),
        "scheduler",
        "--host",
        host,
        "--port",
        str(port),
        "--scheduler-file",
        str(scheduler_file),
    ]
    if preload:
        cmd += ["--preload", "proximate.scheduler_plugin"]
    cmd += ["--dashboard-address", dashboard_address] if dashboard_address else ["--no-dashboard"]
    if tls:
        cmd += ["--protocol", "tls", *tls.cli_args()]
    return cmd


@dataclass(frozen=True)
class TLSFiles:
    """TLS files for scheduler, workers and clients (``dask ... --tls-ca-file`` and friends)."""

    ca_file: str
    cert: str
    key: str

    def cli_args(self) -> list[str]:
        return ["--tls-ca-file", self.ca_file, "--tls-cert", self.cert, "--tls-key", self.key]

    def security(self):  # -> distributed.Security
        from distributed.security import Security

        return Security(
            tls_ca_file=self.ca_file, tls_client_cert=self.cert, tls_client_key=self.key, require_encryption=True
        )


def worker_command(
    *,
    scheduler: str,
    region: str,
    name: str,
    nthreads: int = 1,
    host: str | None = None,
    local_directory: str | None = None,
    nanny: bool = True,
    tls: TLSFiles | None = None,
    memory_limit: str = "auto",
    rejoin: bool = False,
) -> list[str]:
    """One regional worker, with the conventions every region shares.

    ``rejoin`` (with the nanny) loads ``proximate.nanny_plugin`` into the nanny, so a worker that lost its
    scheduler is restarted and rejoins instead of shutting down (the production ``proximate worker``).
    """
    cmd = [
        _dask_executable(),
        "worker",
        scheduler,
        "--name",
        name,
        "--nthreads",
        str(nthreads),
        "--resources",
        f"{pool_resource(region)}={nthreads}",
        "--preload",
        "xarray",
        "--preload",
        "proximate.worker_plugin",
        "--memory-limit",
        memory_limit,
        "--no-dashboard",
    ]
    if host:
        cmd += ["--host", host]
    if local_directory:
        cmd += ["--local-directory", local_directory]
    if not nanny:
        cmd.append("--no-nanny")
    elif rejoin:
        cmd += ["--preload-nanny", "proximate.nanny_plugin"]
    if tls:
        cmd += tls.cli_args()
    return cmd


def worker_env(region: str, root: str | os.PathLike[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a regional worker: its region and the local root of that region's data."""
    env = dict(os.environ if base is None else base)
    env.update(WORKER_ENV)
    env[REGION_ENV] = validate_region_name(region)
    env[ROOT_ENV] = str(root)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def scheduler_env(
    regions: Sequence[str],
    no_workers_timeout: float = DEFAULT_NO_WORKERS_TIMEOUT,
    base: Mapping[str, str] | None = None,
    *,
    router: bool = True,
    link_timeout: float | None = None,
) -> dict[str, str]:
    """Environment of the scheduler: routing config, the declared regions, the no-workers and link bounds.

    Args:
        regions: The region names the router declares (a task pinned elsewhere errs at once).
        no_workers_timeout: Seconds a task may wait for a region without live workers.
        link_timeout: Seconds a worker's fetches from another worker may keep failing before the task waiting
            for them errs (default: the router's, 60 s).
        base: The environment to start from (default: this process's).
        router: False for a plain Dask scheduler (default config): the baseline routing is measured against.

    Returns:
        The whole environment, without a worker's region and root.
    """
    env = dict(os.environ if base is None else base)
    if router:
        env.update(SCHEDULER_ENV)
    env[REGIONS_ENV] = ",".join(regions)
    env[NO_WORKERS_TIMEOUT_ENV] = str(no_workers_timeout)
    if link_timeout is not None:
        env[LINK_TIMEOUT_ENV] = str(link_timeout)
    env.pop(REGION_ENV, None)
    env.pop(ROOT_ENV, None)
    return env


class LocalRegionalCluster:
    """Start a scheduler and ``workers_per_region`` workers per region as separate OS processes.

    Use as a context manager; closing it terminates every process group it started and reaps them.
    """

    def __init__(
        self,
        regions: Iterable[RegionSpec] | Mapping[str, str | os.PathLike[str]],
        *,
        workers_per_region: int | Mapping[str, int] = 2,
        threads_per_worker: int = 1,
        host: str = "127.0.0.1",
        scheduler_port: int = 0,
        dashboard: bool = False,
        no_workers_timeout: float = DEFAULT_NO_WORKERS_TIMEOUT,
        nanny: bool = True,
        startup_timeout: float = 120.0,
        memory_limit: str = "auto",
        env: Mapping[str, str] | None = None,
        tls: TLSFiles | None = None,
        router: bool = True,
    ) -> None:
        if threads_per_worker < 1:
            raise ProximateInputError("threads_per_worker must be >= 1")
        self.regions = validate_regions(regions)
        if isinstance(workers_per_region, Mapping):
            unknown = set(workers_per_region) - set(self.region_names)
            if unknown:
                raise RegionError(f"worker counts for unknown regions: {sorted(unknown)}")
            self.workers = {r: int(workers_per_region.get(r, 0)) for r in self.region_names}
        else:
            self.workers = dict.fromkeys(self.region_names, int(workers_per_region))
        if any(n < 0 for n in self.workers.values()):
            raise ProximateInputError("worker counts must be >= 0")
        self.threads_per_worker = threads_per_worker
        self.host = host
        self.scheduler_port = scheduler_port
        self.dashboard = dashboard
        self.no_workers_timeout = no_workers_timeout
        self.nanny = nanny
        self.startup_timeout = startup_timeout
        self.memory_limit = memory_limit
        self.base_env = dict(os.environ if env is None else env)
        self.tls = tls
        #: False gives a plain Dask scheduler (default config, no preload): the baseline routing is measured against.
        self.router = router
        self.address: str | None = None
        self.dashboard_link: str | None = None
        self.processes: dict[str, Supervised] = {}
        self._workdir: Path | None = None
        #: Worker process name to its region (names alone are ambiguous: region names may contain '-').
        self._worker_regions: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> LocalRegionalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def region_names(self) -> list[str]:
        return [r.name for r in self.regions]

    def start(self) -> LocalRegionalCluster:
        self._workdir = Path(tempfile.mkdtemp(prefix="proximate-cluster-"))
        try:
            self._start_scheduler()
            for spec in self.regions:
                for i in range(self.workers[spec.name]):
                    self.start_worker(spec.name, wait=False, name=f"{spec.name}-{i}")
            self.wait_for_workers(sum(self.workers.values()))
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, name: str, cmd: Sequence[str], env: Mapping[str, str]) -> Supervised:
        assert self._workdir is not None
        proc = processes.start(
            cmd, name=name, env=env, log=self._workdir / f"{name}.log", cwd=self._workdir, parent_death=True
        )
        self.processes[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last ``lines`` lines of a process's log ("" for an unknown name)."""
        proc = self.processes.get(name)
        return proc.log_tail(lines) if proc is not None else ""

    def _start_scheduler(self) -> None:
        assert self._workdir is not None
        sched_file = self._workdir / "scheduler.json"
        env = scheduler_env(self.region_names, self.no_workers_timeout, self.base_env, router=self.router)
        cmd = scheduler_command(
            host=self.host,
            port=self.scheduler_port,
            scheduler_file=sched_file,
            dashboard_address=f"{self.host}:0" if self.dashboard else None,
            tls=self.tls,
            preload=self.router,
        )
        proc = self._spawn("scheduler", cmd, env)
        info = proc.wait_ready(
            lambda: json.loads(sched_file.read_text()),  # written whole once the scheduler listens
            what="dask scheduler",
            timeout=self.startup_timeout,
            interval=0.1,
            retry_on=(OSError, ValueError),
            error=ClusterError,
        )
        self.address = info["address"]
        if self.router:
            self._check_router()
        dash = info.get("services", {}).get("dashboard")
        if dash and self.dashboard:
            self.dashboard_link = f"http://{self.host}:{dash}/status"

    def _check_router(self) -> None:
        """Dask only logs a failing preload; a scheduler without the router would misroute silently."""
        from distributed import Client

        from proximate.scheduler_plugin import scheduler_regions

        kwargs = {"security": self.tls.security()} if self.tls else {}
        with Client(self.address, timeout=30, set_as_default=False, **kwargs) as client:
            if not client.run_on_scheduler(scheduler_regions)["router"]:
                raise ClusterError("the scheduler started without the proximate router:\n" + self.log_tail("scheduler"))

    def start_worker(self, region: str, *, wait: bool = True, name: str | None = None) -> str:
        """Start one more worker of ``region``; returns its name."""
        spec = next((r for r in self.regions if r.name == region), None)
        if spec is None:
            raise RegionError(f"unknown region {region!r}; this cluster has {', '.join(self.region_names)}")
        if name is None:
            i = 0
            while f"{region}-{i}" in self.processes:
                i += 1
            name = f"{region}-{i}"
        assert self.address is not None and self._workdir is not None
        local_dir = self._workdir / name
        local_dir.mkdir(exist_ok=True)
        cmd = worker_command(
            scheduler=self.address,
            region=region,
            name=name,
            nthreads=self.threads_per_worker,
            host=self.host,
            local_directory=str(local_dir),
            nanny=self.nanny,
            tls=self.tls,
            memory_limit=self.memory_limit,
        )
        env = worker_env(region, spec.root, self.base_env)
        if not self.router:
            env.pop("DASK_OPTIMIZATION__FUSE__ACTIVE", None)
        self._spawn(name, cmd, env)
        self._worker_regions[name] = region
        if wait:
            self.wait_for_workers(names={name})
        return name

    def worker_processes(self, region: str) -> list[str]:
        """Names of ``region``'s worker processes still alive (registered with the scheduler or starting)."""
        return [
            n
            for n, r in self._worker_regions.items()
            if r == region and n in self.processes and self.processes[n].running()
        ]

    def stop_workers(self, names: Iterable[str], grace: float = 10.0) -> dict[str, float]:
        """Stop workers by PID: wait up to ``grace`` s for them to exit (a retired worker closes itself), then
        SIGTERM each process group, then SIGKILL; reap them. Their data must have moved already (see
        ``scheduler_plugin.retire_in_region``). Returns each name's seconds until it exited."""
        procs = [self.processes.pop(n) for n in names if n in self.processes]
        for proc in procs:
            self._worker_regions.pop(proc.name, None)
        return processes.stop(procs, [(None, grace), (signal.SIGTERM, grace)])

    def _scheduler_workers(self) -> dict[str, dict]:
        from distributed import Client

        assert self.address is not None
        kwargs = {"security": self.tls.security()} if self.tls else {}
        with Client(self.address, timeout=30, set_as_default=False, **kwargs) as client:
            return client.scheduler_info(n_workers=-1)["workers"]

    def wait_for_workers(self, n: int | None = None, *, names: set[str] | None = None) -> None:
        """Block until the workers are registered; fail early, with the log, if one of them (or the scheduler)
        exits."""
        registered: set[str] = set()

        def ready() -> bool:
            workers = self._scheduler_workers()
            registered.clear()
            registered.update(str(w.get("name")) for w in workers.values())
            return (names is None or names <= registered) and (n is None or len(workers) >= n)

        watched = [p for name, p in self.processes.items() if names is None or name in names or name == "scheduler"]
        processes.wait_ready(
            watched,
            ready,
            what="workers",
            timeout=self.startup_timeout,
            detail=lambda: f"registered: {sorted(registered)}",
            error=ClusterError,
        )

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a worker's whole process group (nanny included): what a lost machine looks like."""
        self.processes.pop(name).kill(sig)

    def close(self, grace: float = 10.0) -> None:
        """Terminate workers, then the scheduler; SIGKILL whatever outlives the grace period; reap all."""
        workers = [p for n, p in self.processes.items() if n != "scheduler"]
        sched = [p for n, p in self.processes.items() if n == "scheduler"]
        for group in (workers, sched):  # workers first: a worker losing its scheduler would try to reconnect
            processes.stop(group, [(signal.SIGTERM, grace)])
        self.processes.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def client(self, **kwargs):  # -> distributed.Client
        """A client of this cluster."""
        from distributed import Client

        if self.tls:
            kwargs.setdefault("security", self.tls.security())
        return Client(self.address, **kwargs)
