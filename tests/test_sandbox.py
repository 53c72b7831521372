"""The bounded child-process pool (:mod:`proximate.sandbox`) that derived columns and catalog extraction share, on
real processes: a call over its CPU, memory or wall-clock limit fails and its child is killed and replaced, a child
killed from outside is replaced, a child sees its caller's environment, and children end when their parent goes.

Each test uses a memory limit of its own: the pool reuses only a child started with the same limit, so the tests
never share children.
"""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from proximate.sandbox import LimitExceeded, Limits, run_bounded

GiB = 2**30
REPO = Path(__file__).resolve().parent.parent


def _gone(pid: int) -> bool:
    """Whether a process has ended (a zombie waiting for a reaper that is not ours counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_child_is_reused_and_a_call_over_its_cpu_limit_kills_it_and_the_next_call_gets_a_new_one():
    limits = Limits(cpu_seconds=2, memory_bytes=GiB + 1, wall_seconds=120)
    first = run_bounded(os.getpid, limits=limits)
    assert first != os.getpid()
    assert run_bounded(os.getpid, limits=limits) == first  # kept and reused
    with pytest.raises(LimitExceeded, match="more than 2 s of CPU time") as cpu:
        run_bounded(operator.pow, 9, 9**8, limits=limits)  # one C call holding the GIL for minutes
    assert cpu.value.limit == "cpu" and cpu.value.returncode == -signal.SIGXCPU
    assert _gone(first)
    second = run_bounded(os.getpid, limits=limits)
    assert second not in (first, os.getpid())


def test_a_call_over_its_memory_limit_fails_with_memory_error_and_its_child_is_replaced():
    limits = Limits(memory_bytes=GiB + 2)
    first = run_bounded(os.getpid, limits=limits)
    with pytest.raises(MemoryError):
        run_bounded(operator.mul, "x" * 1000, 10**7 * 2, limits=limits)  # 20 GB of text, within a 1 GiB space
    assert _gone(first)
    assert run_bounded(len, "x" * 10**8, limits=limits) == 10**8  # 100 MB: a new child, within the limit


def test_a_call_over_its_wall_clock_limit_is_killed_and_its_child_replaced():
    limits = Limits(memory_bytes=GiB + 3, wall_seconds=1)
    first = run_bounded(os.getpid, limits=limits)
    started = time.monotonic()
    with pytest.raises(LimitExceeded, match="longer than 1 s of wall-clock time") as wall:
        run_bounded(time.sleep, 600, limits=limits)
    assert wall.value.limit == "wall"
    assert time.monotonic() - started < 120  # generous: the point is that it did not sleep 600 s
    assert _gone(first)
    assert run_bounded(os.getpid, limits=limits) != first


def test_a_child_killed_from_outside_idle_or_during_a_call_is_replaced(tmp_path):
    limits = Limits(memory_bytes=GiB + 4, wall_seconds=300)
    idle = run_bounded(os.getpid, limits=limits)
    os.kill(idle, signal.SIGKILL)
    assert _wait_until(lambda: _gone(idle), 30)
    busy = run_bounded(os.getpid, limits=limits)
    assert busy != idle  # the dead idle child was not handed out

    # Killed the instant before the call (it may still look alive when handed out): the call runs on a new child.
    os.kill(busy, signal.SIGKILL)
    assert run_bounded(sum, [1, 2, 3], limits=limits) == 6
    assert run_bounded(os.getpid, limits=limits) not in (idle, busy)

    # Killed while it runs the call: the caller sees its child die, and the next call gets a new one.
    started = tmp_path / "started"
    failure: list[BaseException] = []
    code = f"import os, pathlib, time; pathlib.Path({str(started)!r}).write_text(str(os.getpid())); time.sleep(600)"
    caller = threading.Thread(target=lambda: _record_failure(failure, exec, code, limits=limits))
    caller.start()
    assert _wait_until(started.exists, 60)
    os.kill(int(started.read_text()), signal.SIGKILL)
    caller.join(60)
    assert not caller.is_alive()
    assert isinstance(failure[0], LimitExceeded) and failure[0].returncode == -signal.SIGKILL
    assert run_bounded(sum, [1, 2, 3], limits=limits) == 6


def _record_failure(into: list[BaseException], fn, *args, limits: Limits) -> None:
    try:
        run_bounded(fn, *args, limits=limits)
    except BaseException as exc:
        into.append(exc)


def test_a_child_runs_in_its_callers_environment_and_a_changed_environment_gets_a_new_child(monkeypatch):
    limits = Limits(memory_bytes=GiB + 5)
    monkeypatch.setenv("PROXIMATE_SANDBOX_TEST", "one")
    first = run_bounded(os.getpid, limits=limits)
    assert run_bounded(os.getenv, "PROXIMATE_SANDBOX_TEST", limits=limits) == "one"
    monkeypatch.setenv("PROXIMATE_SANDBOX_TEST", "two")  # a worker's region root changed, say
    assert run_bounded(os.getenv, "PROXIMATE_SANDBOX_TEST", limits=limits) == "two"
    assert run_bounded(os.getpid, limits=limits) != first


def test_a_preload_that_cannot_be_imported_is_a_start_error_naming_it():
    with pytest.raises(LimitExceeded, match="could not start: ModuleNotFoundError: No module named 'no_such_mod'") as e:
        run_bounded(os.getpid, limits=Limits(memory_bytes=GiB + 6), preload=("no_such_mod",))
    assert e.value.limit == "start"


#: A parent with three children: one idle, one sleeping in a call (ended by its watch of the parent), one inside a
#: single C call holding the GIL (ended by its alarm, a little past the wall-clock bound).
PARENT = """
import operator, os, sys, threading, time
from proximate.sandbox import Limits, run_bounded
run_bounded(os.getpid, limits=Limits(memory_bytes=2**30 + 7))
limits = Limits(cpu_seconds=600, wall_seconds=20)
for fn, args in ((time.sleep, (600,)), (operator.pow, (9, 9**9))):
    threading.Thread(target=run_bounded, args=(fn, *args), kwargs={"limits": limits}, daemon=True).start()
time.sleep(600)
"""


@pytest.mark.slow
def test_children_end_when_their_parent_is_killed():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env, start_new_session=True)
    try:

        def children() -> list[psutil.Process]:
            return [c for c in psutil.Process(parent.pid).children() if "proximate.sandbox" in " ".join(c.cmdline())]

        assert _wait_until(lambda: len(children()) == 3, 120), "the parent never had its three children"
        pids = [c.pid for c in children()]
        time.sleep(2)  # both calls running
        assert all(not _gone(pid) for pid in pids)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    killed, ended = time.monotonic(), {}

    def all_gone() -> bool:
        ended.update({pid: round(time.monotonic() - killed, 1) for pid in pids if pid not in ended and _gone(pid)})
        return len(ended) == len(pids)

    assert _wait_until(all_gone, 120), [p for p in pids if p not in ended]
    print(f"seconds from the parent's death to each child's: {sorted(ended.values())}")  # for the record (-s)
