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

Everything started is recorded (PID and start time) in ``<workdir>/testbed.json`` and stopped by PID; ``down``
then kills whatever is still inside the testbed's namespaces (``ip netns pids``) and deletes them, which works
after a crash too, even without the state file (namespaces are named ``<name>-<node>``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proximate.cluster import TLSFiles, scheduler_command, scheduler_env
from proximate.regions import validate_region_name
from proximate.testing.testbed import netns
from proximate.testing.testbed.netns import LinkEnd, NetnsError

CLIENT = "client"
SCHEDULER_PORT = 8786
S3_PORT = 9000
FILES_PORT = 8080
STATE_FILE = "testbed.json"
#: Where testbeds keep their state unless told otherwise.
DEFAULT_BASE = Path(tempfile.gettempdir()) / "proximate-testbed"
#: A testbed name prefixes every namespace and device: no dashes (they separate the node), and short, since
#: a device name is ``<name>-<i><j>`` and Linux allows 15 characters.
_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")
#: Every namespace's address is 10.77.255.<node + 1>; addresses exist only inside the testbed's namespaces.
_ADDRESS = "10.77.255.{}"
_MAX_REGIONS = 9


class TestbedError(RuntimeError):
    """The testbed cannot start here, or a part of it failed; the message names the part."""

    __test__ = False  # not a pytest test class, despite the name


def bucket_name(region: str) -> str:
    """The S3 bucket holding a region's objects, on that region's own S3 server."""
    return f"proximate-{region}"


def _proc_start(pid: int) -> int | None:
    """A process's start time in clock ticks (``/proc/PID/stat`` field 22): tells a PID from its reuse."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def _alive(record: Mapping[str, Any]) -> bool:
    return _proc_start(int(record["pid"])) == record["start"]


def _kill_groups(records: Iterable[Mapping[str, Any]], grace: float = 10.0) -> None:
    """SIGTERM the process groups of recorded processes, all at once, then SIGKILL what outlives ``grace``;
    each only if it is still the process we started (same start time)."""
    live = [r for r in records if _alive(r)]
    for record in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(record["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(r) for r in live):
        for record in live:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(record["pid"]), os.WNOHANG)  # our child: reap it, or it stays "alive"
        time.sleep(0.1)
    for record in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(record["pid"]), signal.SIGKILL)  # the group may still hold a nanny's child
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(record["pid"]), 0)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started the testbed dies (tests, benches)."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _proximate_executable() -> list[str]:
    """The ``proximate`` console script of this interpreter's environment, else ``python -m proximate.cli``."""
    candidate = Path(sys.executable).with_name("proximate")
    return [str(candidate)] if candidate.exists() else [sys.executable, "-m", "proximate.cli"]


@dataclass(frozen=True)
class Link:
    """A veth link between two nodes (``client`` or a region), shaped at ``rate`` both ways."""

    a: str
    b: str
    end_a: LinkEnd
    end_b: LinkEnd
    rate: str

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"

    def end_of(self, node: str) -> LinkEnd:
        return self.end_a if node == self.a else self.end_b


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
        no_workers_timeout: float = 60.0,
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
        if len(self.regions) > _MAX_REGIONS:
            raise TestbedError(f"at most {_MAX_REGIONS} regions (device names are 15 characters at most)")
        self.name = name or "pxt" + secrets.token_hex(3)
        if not _NAME.match(self.name):
            raise TestbedError(
                f"invalid testbed name {self.name!r}: 1-10 lower-case letters and digits, a letter first"
            )
        netns.rate_bits(rate)  # a malformed rate fails before anything exists
        self.rate = rate
        if isinstance(workers_per_region, Mapping):
            unknown = set(workers_per_region) - set(self.regions)
            if unknown:
                raise TestbedError(f"worker counts for unknown regions: {sorted(unknown)}")
            self.workers = {r: int(workers_per_region.get(r, 1)) for r in self.regions}
        else:
            self.workers = dict.fromkeys(self.regions, int(workers_per_region))
        self.nthreads = nthreads
        self.use_tls = tls
        self.no_workers_timeout = no_workers_timeout
        self.worker_ttl = worker_ttl
        if tcp_timeout < 11:
            raise TestbedError(
                f"tcp_timeout must be at least 11 s (Dask sends 10 keep-alive probes), got {tcp_timeout}"
            )
        self.tcp_timeout = tcp_timeout
        self.link_timeout = link_timeout
        self.file_server = file_server
        self.owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else DEFAULT_BASE / self.name
        self.base_env = dict(os.environ if env is None else env)
        self.memory_limit = memory_limit
        self.startup_timeout = startup_timeout
        self.die_with_parent = die_with_parent
        self.nodes = [CLIENT, *self.regions]
        self.links = [
            Link(a, b, self._end(a, b), self._end(b, a), rate)
            for i, a in enumerate(self.nodes)
            for b in self.nodes[i + 1 :]
        ]
        self.processes: dict[str, dict[str, Any]] = {}
        self.scheduler_address: str | None = None
        self.tls: TLSFiles | None = None
        self._created: list[str] = []
        self._control: Any = None
        self._popen: dict[str, subprocess.Popen[bytes]] = {}

    # -- names and addresses -----------------------------------------------------------------------------------
    def namespace(self, node: str) -> str:
        """The namespace of ``node`` (``client`` or a region)."""
        return f"{self.name}-{node}"

    def address(self, node: str) -> str:
        """The one address of ``node``, reachable over its direct links."""
        return _ADDRESS.format(self.nodes.index(node) + 1)

    def _end(self, node: str, peer: str) -> LinkEnd:
        device = f"{self.name}-{self.nodes.index(node)}{self.nodes.index(peer)}"
        return LinkEnd(self.namespace(node), device, self.address(node))

    def root(self, region: str) -> Path:
        """The data root of ``region`` (what the region's workers get as ``--root``)."""
        return self.workdir / "regions" / region

    def s3_endpoint(self, region: str) -> str:
        """The region's S3 endpoint, as processes inside that region see it."""
        return f"http://127.0.0.1:{S3_PORT}"

    def file_url(self, region: str, path: str) -> str:
        """URL of a file under the region's root on its file server (reachable from linked namespaces)."""
        return f"http://{self.address(region)}:{FILES_PORT}/{path}"

    def links_of(self, node: str) -> list[Link]:
        return [link for link in self.links if node in (link.a, link.b)]

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
            existing = set(netns.list_namespaces())
            clash = sorted(existing & {self.namespace(n) for n in self.nodes})
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
        for node in self.nodes:
            netns.add_namespace(self.namespace(node))
            self._created.append(self.namespace(node))
            self._save()
            netns.add_node_address(self.namespace(node), self.address(node))
        for link in self.links:
            netns.add_link(link.end_a, link.end_b, link.rate)
        if self.use_tls:
            self.tls = make_tls(self.workdir / "tls", [self.address(n) for n in self.nodes])
        for region in self.regions:
            self.root(region).mkdir(parents=True, exist_ok=True)
            self._start_s3(region)
            if self.file_server:
                self._start_file_server(region)
        self._start_scheduler()
        for region in self.regions:
            for i in range(self.workers[region]):
                self.start_worker(region, f"{region}-{i}", wait=False)
        self.wait_for_workers()
        self._save()

    def _spawn(self, name: str, node: str, cmd: Sequence[str], env: Mapping[str, str], role: str) -> dict[str, Any]:
        log = self.workdir / "logs" / f"{name}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(node), *cmd],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
                cwd=self.workdir,
            )
        record = {
            "name": name,
            "node": node,
            "role": role,
            "pid": proc.pid,
            "start": _proc_start(proc.pid),
            "log": str(log),
        }
        self.processes[name] = record
        self._popen[name] = proc  # reaped by us, so no zombie keeps a PID alive
        self._save()
        return record

    def log_tail(self, name: str, lines: int = 25) -> str:
        record = self.processes.get(name)
        if not record or not Path(record["log"]).exists():
            return ""
        return "\n".join(Path(record["log"]).read_text(errors="replace").splitlines()[-lines:])

    def _wait_port(self, name: str, node: str, host: str, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not netns.port_open(self.namespace(node), host, port):
            if not _alive(self.processes[name]) or self._popen[name].poll() is not None:
                raise TestbedError(f"{name} exited while starting:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise TestbedError(f"{name} did not listen on {host}:{port} within {self.startup_timeout} s")
            time.sleep(0.2)

    def _env(self) -> dict[str, str]:
        env = dict(self.base_env)
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP"] = f"{self.tcp_timeout}s"
        return env

    def _start_s3(self, region: str) -> None:
        name = f"s3-{region}"
        exe = Path(sys.executable).with_name("moto_server")
        # 127.0.0.1 inside the region's namespace: nothing outside the region can reach it.
        self._spawn(name, region, [str(exe), "-H", "127.0.0.1", "-p", str(S3_PORT)], self._env(), "s3")
        self._wait_port(name, region, "127.0.0.1", S3_PORT)
        netns.in_namespace(self.namespace(region), self._create_bucket, region)

    def _create_bucket(self, region: str) -> None:
        self.s3_client(region).create_bucket(Bucket=bucket_name(region))

    def s3_client(self, region: str) -> Any:
        """A boto3 S3 client of the region's server; use it inside the region (``netns.in_namespace``)."""
        import boto3

        env = self._env()
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint(region),
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def put_object(self, region: str, key: str, body: bytes | Path) -> None:
        """Put an object into the region's bucket, from inside the region."""

        def put() -> None:
            client = self.s3_client(region)
            if isinstance(body, Path):
                client.upload_file(str(body), bucket_name(region), key)
            else:
                client.put_object(Bucket=bucket_name(region), Key=key, Body=body)

        netns.in_namespace(self.namespace(region), put)

    def _start_file_server(self, region: str) -> None:
        name = f"files-{region}"
        cmd = [
            sys.executable,
            "-m",
            "proximate.testing.testbed.fileserver",
            "--root",
            str(self.root(region)),
            "--host",
            self.address(region),
            "--port",
            str(FILES_PORT),
        ]
        self._spawn(name, region, cmd, self._env(), "files")
        self._wait_port(name, region, self.address(region), FILES_PORT)

    def _start_scheduler(self) -> None:
        sched_file = self.workdir / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        env = scheduler_env(self.regions, self.no_workers_timeout, self._env(), link_timeout=self.link_timeout)
        env["DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"] = f"{self.worker_ttl}s"
        cmd = scheduler_command(
            host=self.address(CLIENT),
            port=SCHEDULER_PORT,
            scheduler_file=sched_file,
            dashboard_address=None,
            tls=self.tls,
        )
        self._spawn("scheduler", CLIENT, cmd, env, "scheduler")
        self._wait_port("scheduler", CLIENT, self.address(CLIENT), SCHEDULER_PORT)
        self.scheduler_address = f"{'tls' if self.tls else 'tcp'}://{self.address(CLIENT)}:{SCHEDULER_PORT}"
        self._save()
        if not self.control.call(_has_router, timeout=120):  # Dask only logs a failing preload
            raise TestbedError("the scheduler started without the proximate router:\n" + self.log_tail("scheduler"))

    def worker_names(self, region: str | None = None) -> list[str]:
        """Names of the worker processes the testbed started (alive or not), of ``region`` or all."""
        return [
            n for n, r in self.processes.items() if r["role"] == "worker" and (region is None or r["node"] == region)
        ]

    def start_worker(self, region: str, name: str, *, wait: bool = True) -> None:
        """Start one ``proximate worker`` of ``region`` in its namespace, listening on the region's address."""
        assert self.scheduler_address is not None
        cmd = [
            *_proximate_executable(),
            "worker",
            "--region",
            region,
            "--root",
            str(self.root(region)),
            "--scheduler",
            self.scheduler_address,
            "--host",
            self.address(region),
            "--nthreads",
            str(self.nthreads),
            "--name",
            name,
            "--memory-limit",
            self.memory_limit,
        ]
        if self.tls:
            cmd += self.tls.cli_args()
        else:  # --no-tls asked for plaintext between the namespaces, which `proximate worker` refuses by default
            cmd.append("--allow-plaintext")
        env = self._env()
        env["AWS_ENDPOINT_URL_S3"] = self.s3_endpoint(region)  # the region's own bucket, as in production
        self._spawn(name, region, cmd, env, "worker")
        if wait:
            self.wait_for_workers({name})

    def wait_for_workers(self, names: Iterable[str] | None = None) -> None:
        """Block until the named workers (default: every live one started) are registered with the scheduler.

        Raises:
            TestbedError: one exited, or they did not register within the start-up timeout.
        """
        wanted = set(names) if names is not None else {n for n in self.worker_names() if _alive(self.processes[n])}
        deadline = time.monotonic() + self.startup_timeout
        while True:
            for name in wanted:
                if self._popen[name].poll() is not None:
                    raise TestbedError(f"worker {name} exited while starting:\n{self.log_tail(name)}")
            registered = set(self.control.call(_worker_names, timeout=60))
            if wanted <= registered:
                return
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"workers {sorted(wanted - registered)} did not register within {self.startup_timeout} s"
                )
            time.sleep(0.3)

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a worker's process group (nanny and worker): what a lost machine looks like."""
        record = self.processes[name]
        if _alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(record["pid"]), sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen[name].wait(timeout=30)

    def restart_workers(self, region: str, names: Iterable[str] | None = None) -> None:
        """Stop workers of ``region`` (default: all of them), whatever state they are in, start them afresh and
        wait for them.

        Not needed after a cut: ``proximate worker`` rejoins by itself once the links return (see
        ``proximate.nanny_plugin``); this is for a worker that was killed.
        """
        names = list(names) if names is not None else self.worker_names(region)
        _kill_groups([self.processes[name] for name in names], grace=5)
        for name in names:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen[name].wait(timeout=30)
        for name in names:
            self.start_worker(region, name, wait=False)
        self.wait_for_workers(names)

    # -- links -------------------------------------------------------------------------------------------------
    def cut(self, region: str) -> None:
        """Take every link of ``region`` down (to the client and to each other region)."""
        for link in self.links_of(region):
            netns.link_down(link.end_of(region))

    def restore(self, region: str) -> None:
        """Bring the region's links back up, routes included (its workers rejoin by themselves)."""
        for link in self.links_of(region):
            netns.link_up(link.end_a, link.end_b)

    def link(self, a: str, b: str) -> Link:
        """The link between nodes ``a`` and ``b`` (either order).

        Raises:
            TestbedError: no such link.
        """
        for link in self.links:
            if {link.a, link.b} == {a, b}:
                return link
        raise TestbedError(f"no link between {a!r} and {b!r}: nodes are {self.nodes}")

    def cut_link(self, a: str, b: str) -> None:
        """Take only the link between ``a`` and ``b`` down (at ``a``'s end); both keep every other link."""
        netns.link_down(self.link(a, b).end_of(a))

    def restore_link(self, a: str, b: str) -> None:
        """Bring the link between ``a`` and ``b`` back up, routes included."""
        link = self.link(a, b)
        netns.link_up(link.end_a, link.end_b)

    def set_rate(self, rate: str) -> None:
        """Re-shape every link, both directions, at ``rate``.

        Raises:
            TestbedError: tc refused the rate (the links keep their previous rate).
        """
        netns.rate_bits(rate)
        try:
            for link in self.links:
                for end in (link.end_a, link.end_b):
                    netns.shape(end, rate)
        except NetnsError as exc:
            for link in self.links:
                for end in (link.end_a, link.end_b):
                    netns.shape(end, self.rate)
            raise TestbedError(str(exc)) from None
        self.rate = rate
        self._save()

    def link_bytes(self) -> dict[str, dict[str, int]]:
        """Bytes each link has carried so far, per direction: ``{"client-ecmwf": {"client->ecmwf": n, ...}}``.

        Read from ``/sys/class/net/DEV/statistics/tx_bytes`` of both ends: ground truth, whatever proximate
        reports. Includes Ethernet/IP/TCP/TLS framing, heartbeats and every other packet.
        """
        return _links_bytes((link.name, link.a, link.b, link.end_a, link.end_b) for link in self.links)

    @staticmethod
    def bytes_delta(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]) -> dict:
        """Per link and direction, ``after - before``, plus ``total`` per link."""
        out: dict[str, dict[str, int]] = {}
        for link, dirs in after.items():
            out[link] = {d: n - before[link][d] for d, n in dirs.items()}
            out[link]["total"] = sum(out[link].values())
        return out

    def region_link_bytes(self, delta: Mapping[str, Mapping[str, int]], region: str) -> int:
        """Bytes in a :meth:`bytes_delta` that crossed any link of ``region``, both directions."""
        return sum(delta[link.name]["total"] for link in self.links_of(region))

    # -- the client side ---------------------------------------------------------------------------------------
    def client_env(self) -> dict[str, str]:
        """Environment of a client process in the client namespace: the scheduler and TLS files in Dask's config,
        so ``distributed.Client()`` and ``proximate.testing.testbed.connect()`` find the cluster."""
        env = self._env()
        env["PROXIMATE_TESTBED_STATE"] = str(self.state_path)
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
            "links": [{"name": link.name, "a": asdict(link.end_a), "b": asdict(link.end_b)} for link in self.links],
            "processes": self.processes,
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
        for proc in self._popen.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._created.clear()


def make_tls(directory: Path, hosts: Sequence[str]) -> TLSFiles:
    from proximate.testing.testbed.tls import make_tls_files  # cryptography only when TLS is on

    return make_tls_files(directory, hosts=hosts)


def _has_router() -> bool:
    from proximate.client import cluster_regions

    with connect() as client:
        return bool(cluster_regions(client)["router"])


def _worker_names() -> list[str]:
    with connect() as client:
        return [str(w.get("name")) for w in client.scheduler_info(n_workers=-1)["workers"].values()]


@contextlib.contextmanager
def connect(**client_kwargs: Any):
    """A Dask client of the testbed this process runs in (inside its client namespace), not the default.

    Reads the scheduler address and TLS files from the environment :meth:`Testbed.client_env` sets (an
    ``ip netns exec <name>-client`` shell started as ``proximate testbed status`` says has it too).

    Args:
        **client_kwargs: Passed to ``distributed.Client``.
    """
    from distributed import Client

    state = load_state(Path(os.environ["PROXIMATE_TESTBED_STATE"]))
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
    records = list(state.get("processes", {}).values())
    _kill_groups([r for r in records if r["role"] == "worker"])  # first, so they do not outlive the scheduler
    _kill_groups(records)
    ours = sorted(set(state.get("namespaces", [])) | {n for n in netns.list_namespaces() if n.startswith(f"{name}-")})
    for ns in ours:
        for pid in netns.namespace_pids(ns):  # started by us (they are in our namespace), unrecorded or orphaned
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
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
        "processes": {n: _alive(r) for n, r in state["processes"].items()},
        "links": links,
        "roots": state["roots"],
        "tls": state["tls"],
    }


def link_counters(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, int]] | None:
    """Bytes each link of the testbed this process runs in has carried so far (as :meth:`Testbed.link_bytes`),
    from its state file (``PROXIMATE_TESTBED_STATE``, which :meth:`Testbed.client_env` sets); None outside a
    testbed or where its counters cannot be read (not root).
    """
    path = path or os.environ.get("PROXIMATE_TESTBED_STATE")
    if not path:
        return None
    try:
        state = load_state(Path(path))
        links = []
        for link in state["links"]:
            a, b = LinkEnd(**link["a"]), LinkEnd(**link["b"])
            node_a, node_b = (end.namespace.removeprefix(f"{state['name']}-") for end in (a, b))
            links.append((link["name"], node_a, node_b, a, b))
        return _links_bytes(links)
    except (TestbedError, NetnsError, OSError, KeyError, ValueError):
        return None


def _links_bytes(links: Iterable[tuple[str, str, str, LinkEnd, LinkEnd]]) -> dict[str, dict[str, int]]:
    """Per link (name, node a, node b, end a, end b), the bytes each end has sent: one read per namespace."""
    links = list(links)
    devices: dict[str, list[str]] = {}
    for _, _, _, a, b in links:
        for end in (a, b):
            devices.setdefault(end.namespace, []).append(end.device)
    counts = {ns: netns.device_bytes(ns, devs) for ns, devs in devices.items()}
    return {
        name: {
            f"{node_a}->{node_b}": counts[a.namespace][a.device]["tx"],
            f"{node_b}->{node_a}": counts[b.namespace][b.device]["tx"],
        }
        for name, node_a, node_b, a, b in links
    }
