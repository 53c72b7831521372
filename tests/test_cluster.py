"""The local multi-region cluster is real: separate processes, region resources, clean shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from distributed import Client

from proximate.cluster import LocalRegionalCluster, validate_regions
from proximate.regions import RegionError
from proximate.testing.listeners import tree_listeners
from proximate.worker_plugin import SecedeWhileClientsBlock

PROXIMATE = str(Path(sys.executable).with_name("proximate"))


def _whoami() -> dict:
    from distributed import get_worker

    return {"pid": os.getpid(), "region": os.environ.get("PROXIMATE_REGION"), "name": get_worker().name}


def test_task_pinned_to_region_runs_on_that_regions_worker_process(client):
    futures = [client.submit(_whoami, pure=False, resources={"pool-a": 0}) for _ in range(6)]
    results = client.gather(futures)
    assert {r["region"] for r in results} == {"a"}
    assert all(r["name"].startswith("a-") for r in results)
    assert all(r["pid"] != os.getpid() for r in results)
    futures = [client.submit(_whoami, pure=False, resources={"pool-b": 0}) for _ in range(6)]
    assert {r["region"] for r in client.gather(futures)} == {"b"}


def test_workers_have_names_resources_and_roots(client, cluster, region_roots):
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    by_name = {w["name"]: w for w in workers}
    assert sorted(by_name) == ["a-0", "a-1", "b-0", "b-1"]
    assert by_name["a-0"]["resources"] == {"pool-a": 1}
    assert by_name["b-1"]["resources"] == {"pool-b": 1}
    roots = client.run(lambda: (os.environ["PROXIMATE_REGION"], os.environ["PROXIMATE_ROOT"]))
    assert {tuple(v) for v in roots.values()} == {
        ("a", str(region_roots["a"].resolve())),
        ("b", str(region_roots["b"].resolve())),
    }
    # each worker is its own OS process, none of them this one
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 4 and os.getpid() not in pids.values()


def test_workers_run_the_secede_plugin_which_owns_its_patch(client):
    assert all(client.run(lambda dask_worker: SecedeWhileClientsBlock.name in dask_worker.plugins).values())
    original = (Client.__enter__, Client.__exit__)
    first, second = SecedeWhileClientsBlock(), SecedeWhileClientsBlock()
    try:
        first.setup()
        patched = (Client.__enter__, Client.__exit__)
        assert patched != original
        first.setup()  # idempotent: wraps once
        second.setup()  # a second worker in the same process shares the one patch
        assert (Client.__enter__, Client.__exit__) == patched
        first.teardown()
        assert (Client.__enter__, Client.__exit__) == patched  # the second still needs it
        second.teardown()
        assert (Client.__enter__, Client.__exit__) == original
        second.teardown()  # idempotent
        assert (Client.__enter__, Client.__exit__) == original
    finally:
        first.teardown()
        second.teardown()


def test_a_process_patch_is_in_place_while_any_owner_holds_it_and_leaves_the_class_as_found():
    from proximate.worker_plugin import _ProcessPatch

    class Base:
        def inherited(self):
            return "base"

    class Target(Base):
        def own(self):
            return "own"

    seen = []

    def wrap(owners, own, inherited):
        def own_wrapped(self):
            seen.append(dict(owners))
            return "wrapped " + own(self)

        return own_wrapped, lambda self: "wrapped " + inherited(self)

    patch = _ProcessPatch(lambda: Target, ("own", "inherited"), wrap)
    original_own = Target.own
    patch.hold("w1", "a")
    patch.hold("w1", "a")  # idempotent per owner
    patch.hold("w2", "b")
    assert (Target().own(), Target().inherited()) == ("wrapped own", "wrapped base")
    assert seen == [{"w1": "a", "w2": "b"}]  # the wrappers see the owners as they are now
    patch.release("w1")
    assert patch.in_place and Target().own() == "wrapped own"
    patch.release("w2")
    patch.release("w2")  # idempotent
    assert not patch.in_place
    assert Target.own is original_own and "inherited" not in vars(Target) and Target().inherited() == "base"


def _descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_cluster_up_cli_serves_two_regions_and_sigterm_reaps_everything(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    proc = subprocess.Popen(
        [
            PROXIMATE,
            "cluster",
            "up",
            "--region",
            f"a={tmp_path / 'A'}",
            "--region",
            f"b={tmp_path / 'B'}",
            "--workers-per-region",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("tcp://"), (line, proc.stderr.read() if proc.poll() is not None else "")
        started = _descendants(proc.pid)
        assert len(started) >= 3  # scheduler + 2 workers (+ nannies' children)
        # What `ss -ltnp` shows: every socket on loopback, and no HTTP server (no --dashboard) - only the
        # scheduler's RPC port and each nanny's and worker's (Dask alone had 0.0.0.0:8787 and worker HTTP ports).
        bound = tree_listeners(proc.pid)
        assert all(s.ip == "127.0.0.1" for s in bound), [str(s) for s in bound]
        assert len(bound) == 1 + 2 * 2, [str(s) for s in bound]
        with Client(line, timeout=30) as c:
            workers = c.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(tuple(w["resources"]) for w in workers) == [("pool-a",), ("pool-b",)]
        proc.terminate()  # SIGTERM: the CLI turns it into SystemExit(128 + 15) and closes the cluster on the way
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(
        psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in started
    ):
        time.sleep(0.2)
    left = [p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes left after SIGTERM: {left}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--region", "a={A}", "--region", "a={B}"], "region 'a' is given twice"),
        (["--region", "a={A}", "--region", "b={A}/missing"], "root directory of region 'b' does not exist"),
        (["--region", "Bad_Name={A}"], "invalid region name 'Bad_Name'"),
        (["--region", "a"], "--region takes NAME=ROOT"),
    ],
)
def test_cluster_up_bad_input_starts_nothing(tmp_path, args, message):
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    args = [a.format(A=tmp_path / "A", B=tmp_path / "B") for a in args]
    out = subprocess.run([PROXIMATE, "cluster", "up", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stdout == ""  # no scheduler address: nothing started


def test_validate_regions_rejects_before_starting(tmp_path):
    with pytest.raises(RegionError, match="at least one region"):
        validate_regions({})
    with pytest.raises(RegionError, match="does not exist"):
        LocalRegionalCluster({"a": tmp_path / "nope"})


def test_production_worker_command_joins_with_same_conventions(cluster, client, region_roots):
    proc = subprocess.Popen(
        [
            PROXIMATE,
            "worker",
            "--region",
            "a",
            "--root",
            str(region_roots["a"]),
            "--scheduler",
            cluster.address,
            "--nthreads",
            "1",
            "--name",
            "a-prod",
            "--no-nanny",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = client.scheduler_info(n_workers=-1)["workers"]
            workers = {w["name"]: dict(w, address=addr) for addr, w in info.items()}
            if "a-prod" in workers:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert workers["a-prod"]["resources"] == {"pool-a": 1}
        env = client.run(lambda: os.environ.get("PROXIMATE_ROOT"), workers=[workers["a-prod"]["address"]])
        assert list(env.values()) == [str(region_roots["a"].resolve())]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_production_worker_refuses_bad_input(tmp_path):
    out = subprocess.run(
        [PROXIMATE, "worker", "--region", "a", "--root", str(tmp_path / "none"), "--scheduler", "tcp://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "root directory of region 'a' does not exist" in out.stderr
    out = subprocess.run(
        [PROXIMATE, "worker", "--region", "A!", "--root", str(tmp_path), "--scheduler", "tcp://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "invalid region name" in out.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _heartbeat_ms(dask_worker) -> float:
    return dask_worker.periodic_callbacks["heartbeat"].callback_time


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_production_worker_rejoins_a_restarted_scheduler_and_heeds_its_heartbeat_floor(tmp_path, region_roots):
    from proximate.cluster import scheduler_command, scheduler_env

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**scheduler_env(["a"]), "PROXIMATE_HEARTBEAT_INTERVAL": "2"}
    cmd = scheduler_command(host="127.0.0.1", port=port, scheduler_file=tmp_path / "s.json", dashboard_address=None)

    def start_scheduler() -> subprocess.Popen:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        return subprocess.Popen(cmd, env=env, start_new_session=True, **quiet)

    def wait_for_worker(c: Client) -> str:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            workers = c.scheduler_info(n_workers=-1)["workers"]
            found = [addr for addr, w in workers.items() if w["name"] == "a-rejoin"]
            if found:
                return found[0]
            assert worker.poll() is None, log.read_text()
            time.sleep(0.2)
        raise AssertionError(f"a-rejoin did not (re)join:\n{log.read_text()[-3000:]}")

    scheduler = start_scheduler()
    log = tmp_path / "worker.log"
    args = ["--region", "a", "--root", str(region_roots["a"]), "--scheduler", address, "--name", "a-rejoin"]
    with open(log, "wb") as fh:
        worker = subprocess.Popen(
            [PROXIMATE, "worker", *args, "--nthreads", "1"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with Client(address, timeout=60, set_as_default=False) as c:
            first = wait_for_worker(c)
            deadline = time.monotonic() + 20  # the interval arrives with the first heartbeat's reply
            while c.run(_heartbeat_ms, workers=[first])[first] != 2000 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert c.run(_heartbeat_ms, workers=[first])[first] == 2000  # Dask alone says 500 ms
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait(timeout=30)
        scheduler = start_scheduler()
        with Client(address, timeout=60, set_as_default=False) as c:
            rejoined = wait_for_worker(c)
            assert c.submit(sum, [1, 2], resources={"pool-a": 0}).result(60) == 3
        assert worker.poll() is None  # the same `proximate worker`: its nanny restarted the worker inside
        assert rejoined != first  # a new worker process, on a new port
        assert "lost its scheduler" in log.read_text()
    finally:
        for proc in (worker, scheduler):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
