"""The process supervisor (proximate.processes) on real processes: the signal table and its grace period, the
SIGKILL reaching the whole group, a death during start-up reported with the log, dying with the parent, and
records that no longer name our process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proximate import processes
from proximate.processes import ProcessStartError, Supervised, proc_start

PY = sys.executable


def _gone(pid: int, start: int | None, within: float = 30.0) -> bool:
    """Whether the process (pid, start) has exited within ``within`` s (an orphan is reaped by init/a subreaper)."""
    record = Supervised("x", pid, start)
    deadline = time.monotonic() + within
    while record.running():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _log_has(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text()


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    log = tmp_path / "stubborn.log"
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('TERM ignored', flush=True))\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
        "time.sleep(300)\n"
    )
    proc = processes.start([PY, "-c", code], name="stubborn", log=log)
    proc.wait_ready(lambda: _log_has(log, "ready"), what="stubborn child", timeout=60)

    t0 = time.monotonic()
    seconds = processes.stop([proc], [(signal.SIGTERM, 1.5)])["stubborn"]
    took = time.monotonic() - t0

    assert _log_has(log, "TERM ignored")  # it got the SIGTERM, and outlived it
    assert proc.returncode == -signal.SIGKILL  # then the SIGKILL ended it, and it was reaped
    assert took >= 1.5 and seconds >= 1.5  # not before its grace period was over
    assert not proc.running()


def test_the_group_dies_with_its_leader_grandchildren_included(tmp_path):
    """The leader exits at SIGTERM at once; its child (our grandchild) ignores SIGTERM: the group's SIGKILL ends it."""
    pidfile = tmp_path / "grandchild.pid"
    grandchild = (
        "import signal, time, os; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    )
    leader = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(300)"
    proc = processes.start([PY, "-c", leader], name="leader", log=tmp_path / "leader.log")
    pid = proc.wait_ready(
        lambda: int(pidfile.read_text()), what="grandchild", timeout=60, retry_on=(OSError, ValueError)
    )
    start = proc_start(pid)
    assert start is not None

    processes.stop([proc], [(signal.SIGTERM, 2.0)])

    assert proc.returncode == -signal.SIGTERM  # the leader obeyed
    assert _gone(pid, start), f"grandchild {pid} outlived its group's stop"


def test_a_child_dying_during_start_is_reported_with_its_log_tail(tmp_path):
    log = tmp_path / "crash.log"
    proc = processes.start(
        ["sh", "-c", "echo 'line one'; echo 'config file broken.yaml: bad indent' >&2; exit 3"], name="crash", log=log
    )
    t0 = time.monotonic()
    with pytest.raises(ProcessStartError) as info:
        proc.wait_ready(lambda: False, what="the crashing server", timeout=120)
    message = str(info.value)
    assert "the crashing server: crash exited with code 3 while starting" in message
    assert "config file broken.yaml: bad indent" in message and "line one" in message
    assert time.monotonic() - t0 < 60  # noticed when it exited, not at the 120 s timeout
    assert proc.returncode == 3  # reaped


def test_a_start_that_never_becomes_ready_times_out_with_the_log_and_the_callers_error(tmp_path):
    class ServerError(RuntimeError):
        pass

    log = tmp_path / "slow.log"
    proc = processes.start(["sh", "-c", "echo 'still migrating'; sleep 300"], name="slow", log=log)
    try:
        with pytest.raises(ServerError, match=r"(?s)slow server: not ready within 1 s \(3 probes\).*still migrating"):
            proc.wait_ready(
                lambda: False, what="slow server", timeout=1, interval=0.4, detail=lambda: "3 probes", error=ServerError
            )
        assert proc.running()  # waiting does not stop it: the caller decides
    finally:
        proc.stop()
    assert not proc.running()


def test_a_child_dies_with_its_parent(tmp_path):
    """``parent_death``: when the process that started it is killed (no chance to clean up), the child gets
    SIGTERM from the kernel."""
    pidfile = tmp_path / "child.pid"
    parent = (
        "import sys, time\n"
        "from proximate import processes\n"
        f"p = processes.start(['sleep', '300'], name='child', parent_death=True)\n"
        f"open({str(pidfile)!r}, 'w').write(f'{{p.pid}} {{p.start}}')\n"
        "time.sleep(300)\n"
    )
    middle = processes.start([PY, "-c", parent], name="parent", log=tmp_path / "parent.log")
    pid, start = middle.wait_ready(
        lambda: [int(x) for x in pidfile.read_text().split()], what="parent", timeout=60, retry_on=(OSError, ValueError)
    )
    assert Supervised("child", pid, start).running()

    middle.popen.send_signal(signal.SIGKILL)  # the parent only, not its group: the kernel must do the rest
    middle.reap(30)

    assert _gone(pid, start), "the child outlived its parent"


def test_a_record_whose_pid_is_no_longer_ours_is_never_signalled(tmp_path):
    """A state file may outlive its processes: a PID reused by another process (other start time) is left alone."""
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        stale = Supervised("old-worker", other.pid, (proc_start(other.pid) or 0) - 1)
        assert not stale.running()
        assert stale.send(signal.SIGKILL) is False
        processes.stop([stale], [(signal.SIGTERM, 0.2)])
        assert other.poll() is None  # untouched
        again = Supervised.from_record(
            Supervised("sleeper", other.pid, proc_start(other.pid), info={"role": "s3"}).record()
        )
        assert again.running() and again.info == {"role": "s3"}
        processes.stop([again], [(signal.SIGTERM, 10)])
        assert other.wait(timeout=30) == -signal.SIGTERM
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
