"""Regions as separate networks on one Linux machine: the multi-region testbed (``proximate testbed up``).

One network namespace per region plus one for the client region, a veth link between every pair (a full mesh,
``ip_forward`` off, so no namespace can relay for another and taking a link down really cuts that pair), each
link shaped with ``tc tbf`` in both directions. Every namespace has one address (a /32 on its loopback) that
the others route to over their direct link, so a process listening on it (``--host``) is reachable from every
namespace it is linked to and from nowhere else.

In each region namespace: an S3 server (moto) bound to that namespace's loopback, so it is reachable only from
inside the region, holding the region's bucket; the region's data root (a folder: the file system is shared,
the network is not); its Dask workers, started with the production command ``proximate worker --region R
--root DIR --scheduler ADDR --host ADDR``. In the client namespace: the scheduler with the routing preload,
and the user's Python (see :mod:`proximate.testing.testbed.agent` for why the client side runs in the
namespace rather than on the host). TLS is on by default: a throwaway CA, ``tls://`` everywhere.

The parts, one module each: :mod:`~proximate.testing.testbed.network` (namespaces, links),
:mod:`~proximate.testing.testbed.services` (CA, S3, file servers), :mod:`~proximate.testing.testbed.daskprocs`
(scheduler, workers), all of whose processes go into one :mod:`~proximate.testing.testbed.roster`.

Everything started is recorded (PID and start time) in ``<workdir>/testbed.json`` and stopped by PID; ``down``
then kills whatever is still inside the testbed's namespaces (``ip netns pids``) and deletes them, which works
after a crash too, even without the state file (namespaces are named ``<name>-<node>``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from proximate import config, processes
from proximate.cluster import TLSFiles
from proximate.errors import ProximateError
from proximate.processes import Supervised
from proximate.regions import validate_region_name
from proximate.scheduler_plugin import DEFAULT_NO_WORKERS_TIMEOUT
from proximate.testing.testbed import netns
from proximate.testing.testbed.daskprocs import SCHEDULER_PORT, DaskOptions, DaskProcesses
from proximate.testing.testbed.netns import LinkEnd, NetnsError
from proximate.testing.testbed.network import CLIENT, MAX_REGIONS, NAME, Link, Network, bytes_delta, links_bytes
from proximate.testing.testbed.roster import Roster
from proximate.testing.testbed.services import FILES_PORT, S3_PORT, Services, bucket_name, make_tls, s3_endpoint

__all__ = ["CLIENT", "FILES_PORT", "S3_PORT", "SCHEDULER_PORT", "Link", "Testbed", "TestbedError", "bucket_name"]

STATE_FILE = "testbed.json"
#: Where testbeds keep their state unless told otherwise.
DEFAULT_BASE = Path(tempfile.gettempdir()) / "proximate-testbed"


class TestbedError(ProximateError, RuntimeError):
    """The testbed cannot start here, or a part of it failed; the message names the part."""

    __test__ = False  # not a pytest test class, despite the name


class Testbed:
    """A multi-region testbed: build it with :meth:`up`, remove it with :meth:`down` (or ``with``).

    Args:
        regions: Region names (the client region is ``client`` and may not be one of them).
        name: Prefix of every namespace and device; default ``pxt`` plus random hex, unique per instance.
        rate: tc rate of every link, both directions (``100mbit``).
        workers_per_region: Workers per region, or a count per region.
        nthreads: Threads per worker.
        tls: TLS between every process (default); ``False`` only for experiments.
        no_workers_timeout: Seconds a task may wait for a region without live workers before it errs.
        worker_ttl: Seconds without a heartbeat after which the scheduler drops a worker (Dask's default is 5
            minutes).
        tcp_timeout: Dask's ``comm.timeouts.tcp`` in every process (keep-alive probes and TCP_USER_TIMEOUT, at
            least 11 s; Dask's default 30 s). A cut-off region is noticed after about ``min(tcp_timeout,
            2 * worker_ttl)``; its tasks then err after ``no_workers_timeout``.
        link_timeout: Seconds a worker's fetches from a peer may keep failing before the waiting task errs with
            ``RegionLinkError`` (the router's default, 60 s, when None).
        file_server: Also serve each region's root over HTTP with byte ranges on the region's address,
            reachable over the links (the centralised baseline's remote reads; see ``fileserver``).
        workdir: Where state, logs, certificates and region roots go (default ``DEFAULT_BASE/<name>``).
        env: Environment of every process (default: this process's; keep ``PYTHONPATH`` in it so processes in
            the namespaces import the same code).
        memory_limit: Each worker's ``--memory-limit``.
        startup_timeout: Seconds each server or worker may take to come up.
        die_with_parent: Processes get SIGTERM when this process dies (tests, benches); ``False`` for
            ``proximate testbed up``, whose processes outlive the command.
    """

    __test__ = False

    def __init__(
        self,
        regions: Sequence[str] = ("ecmwf", "gcp"),
        *,
        name: str | None = None,
        rate: str = "100mbit",
        workers_per_region: int | Mapping[str, int] = 1,
        nthreads: int = 1,
        tls: bool = True,
        no_workers_timeout: float = DEFAULT_NO_WORKERS_TIMEOUT,
        worker_ttl: float = 30.0,
        tcp_timeout: float = 30.0,
        link_timeout: float | None = None,
        file_server: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        memory_limit: str = "auto",
        startup_timeout: float = 120.0,
        die_with_parent: bool = True,
    ) -> None:
        self.regions = [validate_region_name(r) for r in regions]
        if not self.regions:
            raise TestbedError("a testbed needs at least one region")
        if CLIENT in self.regions:
            raise TestbedError(f"{CLIENT!r} is the client region's name; choose another region name")
        if len(set(self.regions)) != len(self.regions):
            raise TestbedError(f"a region is given twice: {self.regions}")
        if len(self.regions) > MAX_REGIONS:
            raise TestbedError(f"at most {MAX_REGIONS} regions (device names are 15 characters at most)")
        self.name = name or "pxt" + secrets.token_hex(3)
        if not NAME.match(self.name):
            raise TestbedError(
                f"invalid testbed name {self.name!r}: 1-10 lower-case letters and digits, a letter first"
            )
        if isinstance(workers_per_region, Mapping):
            unknown = set(workers_per_region) - set(self.regions)
            if unknown:
                raise TestbedError(f"worker counts for unknown regions: {sorted(unknown)}")
            workers = {r: int(workers_per_region.get(r, 1)) for r in self.regions}
        else:
            workers = dict.fromkeys(self.regions, int(workers_per_region))
        if tcp_timeout < 11:
            raise TestbedError(
                f"tcp_timeout must be at least 11 s (Dask sends 10 keep-alive probes), got {tcp_timeout}"
            )
        self.use_tls = tls
        self.tcp_timeout = tcp_timeout
        self.file_server = file_server
        self.owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else DEFAULT_BASE / self.name
        self.base_env = dict(os.environ if env is None else env)
        self.network = Network(self.name, [CLIENT, *self.regions], rate)  # a malformed rate fails here
        #: The one record of the testbed's processes, by name.
        self.roster = Roster(
            self.network.namespace,
            self.workdir,
            parent_death=die_with_parent,
            startup_timeout=startup_timeout,
            saved=self._save,
            error=TestbedError,
        )
        self.services = Services(self.network, self.roster, self.root, self._env)
        options = DaskOptions(
            workers, nthreads, no_workers_timeout, worker_ttl, link_timeout, memory_limit, startup_timeout
        )
        self.dask = DaskProcesses(
            self.network,
            self.roster,
            options,
            root=self.root,
            env=self._env,
            control=lambda: self.control,
            saved=self._save,
            error=TestbedError,
        )
        self._created: list[str] = []
        self._control: Any = None

    # -- names and addresses (the network's) ---------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        return self.network.nodes

    @property
    def links(self) -> list[Link]:
        return self.network.links

    @property
    def rate(self) -> str:
        return self.network.rate

    @property
    def workers(self) -> Mapping[str, int]:
        return self.dask.options.workers

    @property
    def processes(self) -> dict[str, Supervised]:
        """The testbed's processes by name (the roster's one record)."""
        return self.roster.processes

    @property
    def scheduler_address(self) -> str | None:
        return self.dask.address

    @property
    def tls(self) -> TLSFiles | None:
        return self.dask.tls

    def namespace(self, node: str) -> str:
        """The namespace of ``node`` (``client`` or a region)."""
        return self.network.namespace(node)

    def address(self, node: str) -> str:
        """The one address of ``node``, reachable over its direct links."""
        return self.network.address(node)

    def root(self, region: str) -> Path:
        """The data root of ``region`` (what the region's workers get as ``--root``)."""
        return self.workdir / "regions" / region

    def s3_endpoint(self, region: str) -> str:
        """The region's S3 endpoint, as processes inside that region see it."""
        return s3_endpoint(region)

    def file_url(self, region: str, path: str) -> str:
        """URL of a file under the region's root on its file server (reachable from linked namespaces)."""
        return self.services.file_url(region, path)

    def links_of(self, node: str) -> list[Link]:
        return self.network.links_of(node)

    @property
    def state_path(self) -> Path:
        return self.workdir / STATE_FILE

    # -- bring up ----------------------------------------------------------------------------------------------
    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Testbed:
        """Create namespaces and links, start the S3 servers, the scheduler and the workers.

        Returns:
            self, with :attr:`scheduler_address` set.

        Raises:
            TestbedError: not root, no ``ip``/``tc``, a namespace of that name exists, tc refused the rate, or
                a process did not start; whatever was created is removed first.
        """
        try:
            netns.check_tools()
            clash = self.network.clashes()
            if clash:
                raise TestbedError(
                    f"network namespace {clash[0]!r} already exists: testbed {self.name!r} is up or was left "
                    f"behind (`proximate testbed down --name {self.name}`), or choose another --name"
                )
        except NetnsError as exc:
            raise TestbedError(str(exc)) from None
        try:
            self._build()
        except BaseException as exc:
            self.down()
            if isinstance(exc, NetnsError):
                raise TestbedError(f"{exc} (nothing was left behind)") from None
            raise
        return self

    def _build(self) -> None:
        for sub in ("logs", "tls", "regions"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._save()  # before the first namespace: a crash from here on leaves a state file to clean up by

        def created(namespace: str) -> None:
            self._created.append(namespace)
            self._save()

        self.network.build(created)
        if self.use_tls:
            self.dask.tls = make_tls(self.workdir / "tls", [self.address(n) for n in self.nodes])
        for region in self.regions:
            self.root(region).mkdir(parents=True, exist_ok=True)
            self.services.start_s3(region)
            if self.file_server:
                self.services.start_file_server(region)
        self.dask.start_scheduler(self.workdir)
        for region in self.regions:
            for i in range(self.workers[region]):
                self.start_worker(region, f"{region}-{i}", wait=False)
        self.wait_for_workers()
        self._save()

    def log_tail(self, name: str, lines: int = 25) -> str:
        return self.roster.log_tail(name, lines)

    def _env(self) -> dict[str, str]:
        env = dict(self.base_env)
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP"] = f"{self.tcp_timeout}s"
        return env

    # -- services --------------------------------------------------------------------------------------------
    def s3_client(self, region: str) -> Any:
        """A boto3 S3 client of the region's server; use it inside the region (``netns.in_namespace``)."""
        return self.services.s3_client(region)

    def put_object(self, region: str, key: str, body: bytes | Path) -> None:
        """Put an object into the region's bucket, from inside the region."""
        self.services.put_object(region, key, body)

    # -- Dask processes --------------------------------------------------------------------------------------
    def worker_names(self, region: str | None = None) -> list[str]:
        """Names of the worker processes the testbed started (alive or not), of ``region`` or all."""
        return self.dask.worker_names(region)

    def start_worker(self, region: str, name: str, *, wait: bool = True) -> None:
        """Start one ``proximate worker`` of ``region`` in its namespace, listening on the region's address."""
        self.dask.start_worker(region, name, wait=wait)

    def wait_for_workers(self, names: Sequence[str] | set[str] | None = None) -> None:
        """Block until the named workers (default: every live one started) are registered with the scheduler.

        Raises:
            TestbedError: one exited, or they did not register within the start-up timeout.
        """
        self.dask.wait_for_workers(names)

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a worker's process group (nanny and worker): what a lost machine looks like."""
        self.dask.kill_worker(name, sig)

    def restart_workers(self, region: str, names: Sequence[str] | None = None) -> None:
        """Stop workers of ``region`` (default: all of them), whatever state they are in, start them afresh and
        wait for them.

        Not needed after a cut: ``proximate worker`` rejoins by itself once the links return (see
        ``proximate.nanny_plugin``); this is for a worker that was killed.
        """
        self.dask.restart_workers(region, names)

    # -- links -------------------------------------------------------------------------------------------------
    def cut(self, region: str) -> None:
        """Take every link of ``region`` down (to the client and to each other region)."""
        self.network.cut(region)

    def restore(self, region: str) -> None:
        """Bring the region's links back up, routes included (its workers rejoin by themselves)."""
        self.network.restore(region)

    def link(self, a: str, b: str) -> Link:
        """The link between nodes ``a`` and ``b`` (either order).

        Raises:
            TestbedError: no such link.
        """
        try:
            return self.network.link(a, b)
        except KeyError as exc:
            raise TestbedError(exc.args[0]) from None

    def cut_link(self, a: str, b: str) -> None:
        """Take only the link between ``a`` and ``b`` down (at ``a``'s end); both keep every other link."""
        self.link(a, b)  # a TestbedError naming the nodes, if there is no such link
        self.network.cut_link(a, b)

    def restore_link(self, a: str, b: str) -> None:
        """Bring the link between ``a`` and ``b`` back up, routes included."""
        self.link(a, b)
        self.network.restore_link(a, b)

    def set_rate(self, rate: str) -> None:
        """Re-shape every link, both directions, at ``rate``.

        Raises:
            TestbedError: tc refused the rate (the links keep their previous rate).
        """
        try:
            self.network.set_rate(rate)
        except NetnsError as exc:
            raise TestbedError(str(exc)) from None
        self._save()

    def link_bytes(self) -> dict[str, dict[str, int]]:
        """Bytes each link has carried so far, per direction: ``{"client-ecmwf": {"client->ecmwf": n, ...}}``.

        Read from ``/sys/class/net/DEV/statistics/tx_bytes`` of both ends: ground truth, whatever proximate
        reports. Includes Ethernet/IP/TCP/TLS framing, heartbeats and every other packet.
        """
        return self.network.link_bytes()

    bytes_delta = staticmethod(bytes_delta)

    def region_link_bytes(self, delta: Mapping[str, Mapping[str, int]], region: str) -> int:
        """Bytes in a :meth:`bytes_delta` that crossed any link of ``region``, both directions."""
        return self.network.region_link_bytes(delta, region)

    # -- the client side ---------------------------------------------------------------------------------------
    def client_env(self) -> dict[str, str]:
        """Environment of a client process in the client namespace: the scheduler and TLS files in Dask's config,
        so ``distributed.Client()`` and ``proximate.testing.testbed.connect()`` find the cluster."""
        env = self._env()
        env[config.env_var("testbed.state")] = str(self.state_path)
        if self.scheduler_address:
            env["DASK_SCHEDULER_ADDRESS"] = self.scheduler_address
        if self.tls:
            env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
            env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] = self.tls.ca_file
            env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] = self.tls.cert
            env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] = self.tls.key
        return env

    def agent(self, node: str = CLIENT, stderr: Any = None) -> Any:
        """A new :class:`~proximate.testing.testbed.agent.Agent` in ``node``'s namespace; close it when done."""
        from proximate.testing.testbed.agent import Agent

        return Agent(self.namespace(node), self.client_env(), stderr=stderr)

    @property
    def control(self) -> Any:
        """The testbed's own agent in the client namespace (worker registration, router check)."""
        if self._control is None or self._control.proc.poll() is not None:
            log = open(self.workdir / "logs" / "control-agent.log", "ab")  # noqa: SIM115 - lives with the agent
            self._control = self.agent(stderr=log)
        return self._control

    # -- state, status, down ---------------------------------------------------------------------------------
    def _save(self) -> None:
        state = {
            "name": self.name,
            "regions": self.regions,
            "rate": self.rate,
            "workdir": str(self.workdir),
            "owns_workdir": self.owns_workdir,
            "namespaces": self._created,
            "links": self.network.state(),
            "processes": self.roster.records(),
            "scheduler": self.scheduler_address,
            "tls": asdict(self.tls) if self.tls else None,
            "roots": {r: str(self.root(r)) for r in self.regions},
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_path)

    def down(self) -> None:
        """Stop everything by PID, delete every namespace (and so every link); safe to call twice."""
        if self._control is not None:
            self._control.close()
            self._control = None
        teardown(self.name, self.workdir)
        self.roster.reap()  # our children: collect their exit status, so no zombie keeps a PID
        self._created.clear()


@contextlib.contextmanager
def connect(**client_kwargs: Any):
    """A Dask client of the testbed this process runs in (inside its client namespace), not the default.

    Reads the scheduler address and TLS files from the environment :meth:`Testbed.client_env` sets (an
    ``ip netns exec <name>-client`` shell started as ``proximate testbed status`` says has it too).

    Args:
        **client_kwargs: Passed to ``distributed.Client``.
    """
    from distributed import Client

    state_path = config.get_str("testbed.state")
    if not state_path:
        raise RuntimeError(f"not in a testbed: {config.env_var('testbed.state')} is not set")
    state = load_state(Path(state_path))
    if state.get("tls"):
        client_kwargs.setdefault("security", TLSFiles(**state["tls"]).security())
    client_kwargs = {"timeout": 30, "set_as_default": False, **client_kwargs}
    with Client(state["scheduler"], **client_kwargs) as client:
        yield client


def state_path(name: str, workdir: str | os.PathLike[str] | None = None) -> Path:
    return (Path(workdir) if workdir else DEFAULT_BASE / name) / STATE_FILE


def load_state(path: Path) -> dict[str, Any]:
    """The state file of a testbed.

    Raises:
        TestbedError: it does not exist (no such testbed up).
    """
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TestbedError(f"no testbed state at {path} (is it up? give --name and --workdir as for up)") from None


def teardown(name: str, workdir: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove testbed ``name``: stop its recorded processes by PID, kill whatever else is inside its
    namespaces, delete them, remove its state (and its workdir, when the testbed created it).

    Works without a state file: namespaces are found by the ``<name>-`` prefix, which only this testbed uses.

    Returns:
        The namespaces deleted.
    """
    path = state_path(name, workdir)
    state: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        state = json.loads(path.read_text())
    recorded = [Supervised.from_record(r) for r in state.get("processes", {}).values()]
    # Workers first, so they do not outlive the scheduler; each only if it is still the process we started.
    processes.stop([p for p in recorded if p.info.get("role") == "worker"])
    processes.stop(recorded)
    ours = sorted(set(state.get("namespaces", [])) | {n for n in netns.list_namespaces() if n.startswith(f"{name}-")})
    for ns in ours:
        processes.kill_pids(netns.namespace_pids(ns))  # started by us (in our namespace), unrecorded or orphaned
    deadline = time.monotonic() + 10
    while any(netns.namespace_pids(ns) for ns in ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    for ns in ours:
        netns.delete_namespace(ns)
    if state.get("owns_workdir") and state.get("workdir"):
        shutil.rmtree(state["workdir"], ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return ours


def status(name: str, workdir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What testbed ``name`` has now: namespaces present, processes alive, link rates and bytes.

    Raises:
        TestbedError: no state file for it.
    """
    state = load_state(state_path(name, workdir))
    present = set(netns.list_namespaces())
    links = {}
    for link in state["links"]:
        a, b = LinkEnd(**link["a"]), LinkEnd(**link["b"])
        if a.namespace in present and b.namespace in present:
            ca = netns.device_bytes(a.namespace, [a.device])[a.device]
            links[link["name"]] = {"rate": netns.qdisc_rate(a), "a_tx": ca["tx"], "b_tx": ca["rx"]}
        else:
            links[link["name"]] = {"rate": "", "a_tx": 0, "b_tx": 0}
    return {
        "name": state["name"],
        "scheduler": state["scheduler"],
        "namespaces": {ns: ns in present for ns in state["namespaces"]},
        "processes": {n: Supervised.from_record(r).running() for n, r in state["processes"].items()},
        "links": links,
        "roots": state["roots"],
        "tls": state["tls"],
    }


def link_counters(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, int]] | None:
    """Bytes each link of the testbed this process runs in has carried so far (as :meth:`Testbed.link_bytes`),
    from its state file (``PROXIMATE_TESTBED_STATE``, which :meth:`Testbed.client_env` sets); None outside a
    testbed or where its counters cannot be read (not root).
    """
    path = path or config.get_str("testbed.state")
    if not path:
        return None
    try:
        state = load_state(Path(path))
        links = []
        for link in state["links"]:
            a, b = LinkEnd(**link["a"]), LinkEnd(**link["b"])
            node_a, node_b = (end.namespace.removeprefix(f"{state['name']}-") for end in (a, b))
            links.append((link["name"], node_a, node_b, a, b))
        return links_bytes(links)
    except (TestbedError, NetnsError, OSError, KeyError, ValueError):
        return None
