"""Network defaults a security review accepts, tried as an attacker would: real ``dask scheduler`` and
``proximate worker`` processes, their listening sockets read from ``/proc`` (as ``ss -ltnp`` shows them).

Dask's RPC runs any function a peer sends, so the attack on a worker is ``rpc(worker).run(function)`` from an
address that is not the cluster's; before these defaults, ``proximate worker`` listened on 0.0.0.0 and :: and the
attack wrote its file. The address "from elsewhere" is this machine's own non-loopback address (eth0): a socket
bound to loopback does not answer there, one bound to a wildcard does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from proximate.cluster import TLSFiles, scheduler_command, scheduler_env
from proximate.network import PlaintextSchedulerError, check_scheduler_transport, local_address_toward
from proximate.testing.listeners import listeners, tree_listeners
from proximate.testing.testbed.tls import make_tls_files

PROXIMATE = str(Path(sys.executable).with_name("proximate"))
#: Generous: a worker process imports xarray and our preloads, about 15 s on a loaded 2-core machine.
START_TIMEOUT = 120.0


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _external_ip() -> str:
    """This machine's address on its way out (not loopback), or skip: the attack needs an address to come from."""
    try:
        ip = local_address_toward("tcp://192.0.2.254:9")  # TEST-NET-1: only the route is looked up, nothing sent
    except ValueError:
        ip = ""
    if not ip or ip.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to attack from")
    return ip


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` in its own process group for the block, its output in ``log``; then stopped by PID."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)


def _start_scheduler(tmp_path: Path, host: str, tls: TLSFiles | None = None):
    port = _free_port(host)
    cmd = scheduler_command(
        host=host, port=port, scheduler_file=tmp_path / "scheduler.json", dashboard_address=None, tls=tls
    )
    address = f"{'tls' if tls else 'tcp'}://{host}:{port}"
    return address, _process(cmd, tmp_path / "scheduler.log", scheduler_env(["a"]))


def _wait_for_worker(client: Client, name: str, proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == name]
        if found:
            return found[0]
        assert proc.poll() is None, log.read_text()
        time.sleep(0.3)
    raise AssertionError(f"{name} did not register within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def _worker_args(region_root: Path, scheduler: str, name: str) -> list[str]:
    return [PROXIMATE, "worker", "--region", "a", "--root", str(region_root), "--scheduler", scheduler]


def _attack_run(address: str, marker: Path) -> object:
    """``rpc(worker).run(...)`` at ``address``, as anyone who reaches a Dask port can do: the function sent
    writes ``marker`` (made of the standard library only, so any worker can unpickle it)."""
    import dask
    from distributed.core import rpc
    from distributed.protocol.pickle import dumps

    leave_mark = functools.partial(Path.write_text, marker, "ran")

    async def attack() -> object:
        with dask.config.set({"distributed.comm.timeouts.connect": "5s"}):
            async with rpc(address) as worker:
                return await worker.run(function=dumps(leave_mark))

    return asyncio.run(attack())


def test_listeners_reads_every_bound_address_as_ss_does():
    """The oracle of the tests below: sockets bound here, each found with its address, wildcards flagged."""
    binds = [
        (socket.AF_INET, "127.0.0.1"),
        (socket.AF_INET, "0.0.0.0"),
        (socket.AF_INET6, "::1"),
        (socket.AF_INET6, "::"),
    ]
    with contextlib.ExitStack() as stack:
        expected = set()
        for family, ip in binds:
            sock = stack.enter_context(socket.socket(family))
            sock.bind((ip, 0))
            sock.listen()
            expected.add((ip, sock.getsockname()[1]))
        idle = stack.enter_context(socket.socket())
        idle.bind(("127.0.0.1", 0))  # bound, not listening: not a listener
        idle_port = idle.getsockname()[1]
        found = {(s.ip, s.port): s.wildcard for s in listeners([os.getpid()])}
    assert {k: v for k, v in found.items() if k in expected} == {k: k[0] in ("0.0.0.0", "::") for k in expected}
    assert ("127.0.0.1", idle_port) not in found


# -- the checks on addresses, on their own --------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler",
    ["tcp://127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786", "127.0.0.1:8786", "tls://10.0.0.5:8786"],
)
def test_loopback_or_encrypted_schedulers_are_accepted(scheduler):
    check_scheduler_transport(scheduler)


@pytest.mark.parametrize(
    "scheduler",
    ["tcp://10.0.0.5:8786", "10.0.0.5:8786", "ws://10.0.0.5:8786", "tcp://[fd00::5]:8786", "tcp://no-such-host.:1"],
)
def test_plaintext_schedulers_off_loopback_are_refused_unless_allowed(scheduler):
    with pytest.raises(PlaintextSchedulerError, match=r"refusing plaintext scheduler .*--allow-plaintext"):
        check_scheduler_transport(scheduler)
    check_scheduler_transport(scheduler, allow_plaintext=True)


def test_the_address_toward_a_scheduler_is_the_interface_on_its_route():
    external = _external_ip()
    assert local_address_toward("tcp://127.0.0.1:8786") == "127.0.0.1"
    assert local_address_toward(f"tcp://{external}:8786") == external  # this machine's own address
    assert local_address_toward("tls://192.0.2.254:8786") == external  # the default route's interface
    with pytest.raises(ValueError, match=r"'no-such-host\.' does not resolve"):
        local_address_toward("tcp://no-such-host.:8786")


# -- proximate worker ----------------------------------------------------------------------------------------


def test_plaintext_scheduler_off_loopback_is_refused_in_one_line_before_anything_starts(tmp_path):
    external = _external_ip()
    for scheduler in (f"tcp://{external}:1", f"{external}:1"):
        out = subprocess.run(
            [*_worker_args(tmp_path, scheduler, "a-x"), "--nthreads", "1"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 2, out
        assert out.stderr == (
            f"proximate: error: refusing plaintext scheduler {scheduler} (not on loopback): use tls:// with "
            "--tls-ca-file, --tls-cert and --tls-key, or pass --allow-plaintext on a network only the cluster "
            "can reach\n"
        )
        assert out.stdout == ""


@pytest.mark.slow
def test_worker_without_host_binds_loopback_toward_a_loopback_scheduler_and_refuses_an_outside_rpc(
    cluster, client, region_roots, tmp_path
):
    """The attack: a function sent to the worker's Dask port from a non-loopback address must not run."""
    external = _external_ip()
    log = tmp_path / "worker.log"
    cmd = [*_worker_args(region_roots["a"], cluster.address, "a-sec"), "--name", "a-sec", "--nthreads", "1"]
    with _process(cmd, log) as proc:
        address = _wait_for_worker(client, "a-sec", proc, log)
        bound = tree_listeners(proc.pid)
        # the nanny, the worker and the worker's HTTP server (/health, /metrics): all on loopback, as logged
        assert len(bound) == 3 and all(s.ip == "127.0.0.1" for s in bound), [str(s) for s in bound]
        assert f"Listening to:      {address}" in log.read_text()
        port = int(address.rsplit(":", 1)[1])

        outside, inside = tmp_path / "outside-ran", tmp_path / "loopback-ran"
        with pytest.raises(OSError):
            _attack_run(f"tcp://{external}:{port}", outside)
        assert not outside.exists()  # nothing ran
        # The same call over loopback (the machine's own users, the cluster) does run: Dask's RPC is code
        # execution, which is why only the cluster may reach it.
        assert _attack_run(address, inside) == {"status": "OK", "result": 3}  # write_text: 3 characters
        assert inside.read_text() == "ran"


@pytest.mark.slow
def test_worker_allowed_plaintext_binds_its_interface_toward_the_scheduler_not_a_wildcard(region_roots, tmp_path):
    external = _external_ip()
    scheduler, running = _start_scheduler(tmp_path, external)
    with running:
        cmd = [*_worker_args(region_roots["a"], scheduler, "a-lan"), "--name", "a-lan", "--nthreads", "1"]
        refused = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "refusing plaintext scheduler" in refused.stderr
        log = tmp_path / "worker.log"
        with (
            _process([*cmd, "--allow-plaintext", "--no-nanny", "--http-address", "none"], log) as proc,
            Client(scheduler, timeout=60, set_as_default=False) as client,
        ):
            address = _wait_for_worker(client, "a-lan", proc, log)
            assert address.startswith(f"tcp://{external}:")
            bound = {(s.ip, s.port) for s in tree_listeners(proc.pid)}
            # its Dask port on the interface it advertises, and nothing else (--http-address none: no HTTP server)
            assert bound == {(external, int(address.rsplit(":", 1)[1]))}, bound
            assert client.scheduler_info(n_workers=-1)["workers"][address]["services"] == {}


@pytest.mark.slow
def test_tls_scheduler_refuses_a_worker_whose_certificate_is_not_from_the_cluster_ca(region_roots, tmp_path):
    ours = make_tls_files(tmp_path / "cluster", hosts=["127.0.0.1"])
    rogue = make_tls_files(tmp_path / "rogue")  # a CA of its own: a valid certificate, not signed by ours
    scheduler, running = _start_scheduler(tmp_path, "127.0.0.1", ours)
    with running as sched:
        with Client(scheduler, timeout=60, security=ours.security(), set_as_default=False) as client:
            good_log, bad_log = tmp_path / "good.log", tmp_path / "rogue.log"
            base = [*_worker_args(region_roots["a"], scheduler, ""), "--nthreads", "1", "--no-nanny"]
            # The rogue worker trusts our CA (it verifies the scheduler fine) but presents its own certificate.
            bad = [*base, "--name", "a-rogue", "--tls-ca-file", ours.ca_file, "--tls-cert", rogue.cert]
            with (
                _process([*base, "--name", "a-good", *ours.cli_args()], good_log) as good,
                _process([*bad, "--tls-key", rogue.key], bad_log) as intruder,
            ):
                _wait_for_worker(client, "a-good", good, good_log)  # the control: our certificate joins
                refusal = "TLS handshake failed with remote"  # the scheduler's log, on each of its attempts
                scheduler_log = tmp_path / "scheduler.log"
                deadline = time.monotonic() + START_TIMEOUT
                while refusal not in scheduler_log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.5)
                refusals = [line for line in scheduler_log.read_text().splitlines() if refusal in line]
                assert refusals and "CERTIFICATE_VERIFY_FAILED" in refusals[0], bad_log.read_text()[-3000:]
                names = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
                assert names == {"a-good"}
                assert intruder.poll() is None and "Registered to" not in bad_log.read_text()  # still shut out

        # Anyone without a certificate at all: the handshake ends before one byte of Dask's protocol.
        context = ssl.create_default_context(cafile=ours.ca_file)
        context.check_hostname = False
        port = int(scheduler.rsplit(":", 1)[1])
        with (
            pytest.raises((ssl.SSLError, ConnectionError)),
            socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
            context.wrap_socket(raw) as tls_sock,
        ):
            tls_sock.recv(1)  # TLS 1.3: the server's refusal arrives with the first read
        assert not any(s.ip in ("0.0.0.0", "::") for s in tree_listeners(sched.pid))


# -- the local cluster ---------------------------------------------------------------------------------------


def test_local_cluster_listens_on_loopback_only_and_serves_no_http_without_a_dashboard(cluster, client):
    bound = listeners(p.pid for p in cluster.processes.values())
    assert bound and all(s.ip == "127.0.0.1" for s in bound), [str(s) for s in bound]
    info = client.scheduler_info(n_workers=-1)
    assert "dashboard" not in info["services"]  # Dask serves /health and /metrics even with --no-dashboard
    assert all(w["services"] == {} for w in info["workers"].values())
    # the scheduler's one socket is its RPC port: no HTTP server was left listening
    scheduler_sockets = listeners([cluster.processes["scheduler"].pid])
    assert [s.port for s in scheduler_sockets] == [int(cluster.address.rsplit(":", 1)[1])]


@pytest.mark.slow
def test_quick_demo_never_listens_on_a_wildcard(tmp_path):
    proc = subprocess.Popen(
        [PROXIMATE, "demo", "--quick", "--workdir", str(tmp_path / "demo"), "--workers-per-region", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    seen = set()
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= set(tree_listeners(proc.pid))
            time.sleep(0.3)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-3000:]
    assert len({s.pid for s in seen}) >= 3, seen  # the scheduler and workers were sampled while they ran
    assert all(s.loopback for s in seen), sorted(map(str, seen))
