"""One supervisor for every process proximate starts: the Dask scheduler and workers, S3 and file servers, the
Prefect server and worker, the testbed's agents.

Each process gets its own process group (a session), so stopping it reaches what it started too (a nanny's
worker, uvicorn, a flow run); it may die with the process that started it (``PR_SET_PDEATHSIG``); it is awaited
until a probe says it is ready, failing at once, with its log's tail, if it exits meanwhile; and it is stopped
by a signal table (ask, wait, ask harder, wait), then SIGKILL to the whole group, then reaped.

Styled after dask-gateway's ``stop_process`` (a table of signals and the seconds each gets) and distributed's
``ProcessInterface`` (start, ready, close). Every ``os.kill``/``os.killpg`` of proximate is in this module, so
the rules live in one place: a group is signalled only while its leader is still the process we started (same
PID and start time, or not yet reaped), never a PID the system has since given to someone else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from proximate.errors import ProximateError

#: One step of a signal table: the signal to send the process group (None: send nothing, just wait) and the
#: seconds the processes then get to exit before the next step.
StopStep = tuple[signal.Signals | None, float]

#: The usual way to stop a server: SIGTERM, 10 s to exit; then SIGKILL to the group.
TERMINATE: tuple[StopStep, ...] = ((signal.SIGTERM, 10.0),)

#: Seconds to wait for a SIGKILLed process to be reaped (it cannot refuse; the kernel may take a moment).
KILL_REAP_SECONDS = 5.0

T = TypeVar("T")


class ProcessStartError(ProximateError, RuntimeError):
    """A process exited while starting, or was not ready in time; the message has its log's tail."""


def die_with_parent() -> None:
    """Runs in the child before exec: take SIGTERM when the parent dies (Linux), so nothing is orphaned.

    Note that Linux sends it when the parent *thread* that forked ends: start such processes from a thread that
    lives as long as they should.
    """
    with contextlib.suppress(OSError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def proc_start(pid: int) -> int | None:
    """A process's start time in clock ticks (``/proc/PID/stat`` field 22), None if there is no such process.

    Tells a process from a later one that got its PID.

    Examples:
        >>> proc_start(os.getpid()) == proc_start(os.getpid()) is not None
        True
    """
    stat = _stat(pid)
    return None if stat is None else int(stat[19])


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


@dataclass(eq=False)
class Supervised:
    """A process started (or recorded) by proximate, leader of its own process group.

    Held either with the ``Popen`` of this process's own child (which it reaps), or as a record read back from a
    state file by another process (``popen`` None): then ``start`` tells whether the PID is still ours.

    Attributes:
        name: What it is, for messages and records (``scheduler``, ``ecmwf-0``, ``s3-gcp``).
        pid: Its PID, which is also its process group's id.
        start: Its start time in clock ticks (:func:`proc_start`), None if unknown.
        log: The file its output goes to, whose tail goes into errors.
        popen: The ``Popen`` when this process started it.
        info: Anything the owner records with it (a role, a node), kept in :meth:`record`.
    """

    name: str
    pid: int
    start: int | None = None
    log: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    # -- records ---------------------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """A JSON-able record from which :meth:`from_record` finds this process again (from another process)."""
        return {**self.info, "name": self.name, "pid": self.pid, "start": self.start, "log": str(self.log or "")}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Supervised:
        """The process a :meth:`record` describes (not reaped by this process: it is not its child)."""
        info = {k: v for k, v in record.items() if k not in ("name", "pid", "start", "log")}
        log = Path(record["log"]) if record.get("log") else None
        return cls(str(record["name"]), int(record["pid"]), record.get("start"), log, None, info)

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        """Its exit status once reaped (our child only), else None."""
        return None if self.popen is None else self.popen.returncode

    def running(self) -> bool:
        """True while it runs; False once it has exited (a zombie has exited). Never reaps it."""
        if self.popen is not None:
            if self.popen.returncode is not None:
                return False
            try:  # WNOWAIT: look without reaping, so the PID (and the group's id) stays ours until stop() is done
                return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
            except ChildProcessError:
                return False
        stat = _stat(self.pid)
        return stat is not None and int(stat[19]) == self.start and stat[0] != "Z"

    def _group_is_ours(self) -> bool:
        """Whether the group id is still the one we started: an unreaped child of ours holds its PID, a recorded
        process must still be there with the same start time."""
        if self.popen is not None:
            # Unreaped, its PID cannot be reused (stop() reaps only after the group's SIGKILL); once reaped, it may
            # be: a second stop() (stop, then close) must not signal whoever has it now.
            return self.popen.returncode is None
        return self.start is not None and proc_start(self.pid) == self.start

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of its log ("" without one)."""
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    # -- signals ---------------------------------------------------------------------------------------------
    def send(self, sig: int) -> bool:
        """Send ``sig`` to its whole process group, if that group is still ours.

        Returns:
            Whether the signal was sent (False: the group is gone or no longer ours).
        """
        if not self._group_is_ours():
            return False
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def kill(self, sig: int = signal.SIGKILL, reap_timeout: float = 30.0) -> None:
        """Signal its whole group (SIGKILL: what a lost machine looks like) and reap it."""
        self.send(sig)
        self.reap(reap_timeout)

    def reap(self, timeout: float | None = KILL_REAP_SECONDS) -> int | None:
        """Wait up to ``timeout`` s (None: as long as it takes) for it to exit and collect its status (our child)
        or see it gone (a record).

        Returns:
            Its exit status, or None (still running, or not our child).
        """
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return self.popen.wait(timeout=timeout)
            return None
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        return None

    # -- start-up --------------------------------------------------------------------------------------------
    def wait_ready(self, probe: Callable[[], T], **kwargs: Any) -> T:
        """:func:`wait_ready` for this one process."""
        return wait_ready([self], probe, **kwargs)

    def stop(self, signals: Sequence[StopStep] = TERMINATE) -> float:
        """:func:`stop` this one process; returns the seconds it took to exit."""
        return stop([self], signals)[self.name]


def start(
    cmd: Sequence[str],
    *,
    name: str,
    env: Mapping[str, str] | None = None,
    log: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    parent_death: bool = False,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    info: Mapping[str, Any] | None = None,
) -> Supervised:
    """Start ``cmd`` as the leader of a new process group (its own session).

    Its own session also means Ctrl-C in a terminal reaches only the process that started it, which then stops
    the rest in order.

    Args:
        cmd: The command line.
        name: What it is, for messages and records.
        env: Its whole environment (default: this process's).
        log: A file its stdout and stderr are appended to (created with its folder); else ``stdout``/``stderr``.
        cwd: Its working directory.
        parent_death: It gets SIGTERM when this process (the starting thread) dies (:func:`die_with_parent`).
        stdin: Its standard input (default: none).
        stdout: Its standard output when there is no ``log`` (e.g. ``subprocess.PIPE``).
        stderr: Its standard error when there is no ``log``.
        info: Anything to keep in its :meth:`Supervised.record`.

    Returns:
        The started process.

    Raises:
        OSError: the command could not be executed (not found, not executable).

    Examples:
        >>> p = start(["sleep", "30"], name="sleeper")
        >>> p.running()
        True
        >>> p.stop() < 5
        True
        >>> p.running()
        False
    """
    log_path = Path(log) if log is not None else None
    kwargs: dict[str, Any] = {
        "env": None if env is None else dict(env),
        "cwd": cwd,
        "stdin": stdin,
        "start_new_session": True,
        "preexec_fn": die_with_parent if parent_death else None,
    }
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as fh:  # the child holds its own copy of the descriptor
            popen = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, **kwargs)
    else:
        popen = subprocess.Popen(list(cmd), stdout=stdout, stderr=stderr, **kwargs)
    return Supervised(name, popen.pid, proc_start(popen.pid), log_path, popen, dict(info or {}))


def wait_ready(
    processes: Iterable[Supervised],
    probe: Callable[[], T],
    *,
    what: str,
    timeout: float,
    interval: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = (OSError,),
    detail: Callable[[], str] | None = None,
    error: type[Exception] = ProcessStartError,
) -> T:
    """Poll ``probe()`` until it returns something true; fail at once if one of ``processes`` exits meanwhile.

    Args:
        processes: The processes that must stay up while we wait (the one starting, and those it needs).
        probe: Returns a true value when ready (which is returned); raising one of ``retry_on`` counts as not yet.
        what: What is awaited, for the error ("dask scheduler", "workers ecmwf-0, gcp-0").
        timeout: Seconds to wait.
        interval: Seconds between probes.
        retry_on: Exceptions of the probe that mean "not yet" (a refused connection, a half-written file).
        detail: Says what was seen so far, for the timeout's message.
        error: The exception class raised (the caller's own, e.g. ``ClusterError``).

    Returns:
        The probe's true value.

    Raises:
        error: a process exited (its exit status and log tail in the message), or ``timeout`` passed (the log
            tails of every process in the message).

    Examples:
        >>> p = start(["sleep", "30"], name="sleeper")
        >>> wait_ready([p], lambda: p.pid, what="sleeper", timeout=5) == p.pid
        True
        >>> _ = p.stop()
    """
    watched = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*retry_on):
            ready = probe()
            if ready:
                return ready
        for proc in watched:
            if not proc.running():
                code = proc.reap(1.0)
                raise error(f"{what}: {proc.name} exited with code {code} while starting:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            seen = f" ({detail()})" if detail is not None else ""
            tails = "\n".join(f"--- {p.name}:\n{p.log_tail()}" for p in watched if p.log_tail())
            raise error(f"{what}: not ready within {timeout:g} s{seen}" + (f"\n{tails}" if tails else ""))
        time.sleep(interval)


def stop(processes: Iterable[Supervised], signals: Sequence[StopStep] = TERMINATE) -> dict[str, float]:
    """Stop processes together by a signal table, then SIGKILL each whole group, then reap them.

    Each step sends its signal to the groups still running, all at once, and waits up to its seconds for all of
    them to exit. The final SIGKILL goes to every group, exited leader or not: the group may still hold a
    child (a nanny's worker, uvicorn, a flow run) after its leader exited. Leaders are reaped only after it, so
    no group id can have passed to another process meanwhile.

    Args:
        processes: What to stop.
        signals: The signal table: ``(signal or None, seconds)`` steps, e.g. ``((None, 10), (SIGTERM, 10))`` to
            give a retiring worker 10 s to exit by itself, then 10 s after SIGTERM.

    Returns:
        Each process's name and the seconds until it exited (or until it was reaped after the SIGKILL).

    Examples:
        >>> p = start(["sleep", "30"], name="sleeper")
        >>> stop([p], [(None, 0.2)])["sleeper"] < 10  # 0.2 s to exit by itself; it does not: SIGKILL
        True
        >>> p.returncode == -signal.SIGKILL
        True
    """
    procs = list(processes)
    t0 = time.monotonic()
    exited: dict[str, float] = {}

    def note_exits() -> None:
        for proc in procs:
            if proc.name not in exited and not proc.running():
                exited[proc.name] = time.monotonic() - t0

    for sig, seconds in signals:
        note_exits()
        if sig is not None:
            for proc in procs:
                if proc.name not in exited:
                    proc.send(sig)
        deadline = time.monotonic() + seconds
        while True:
            note_exits()
            if len(exited) == len(procs) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    for proc in procs:
        proc.send(signal.SIGKILL)
    for proc in procs:
        proc.reap(KILL_REAP_SECONDS)
        exited.setdefault(proc.name, time.monotonic() - t0)
    return exited


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL single processes by PID (no group, no start-time check): only for PIDs known to be ours by other
    means, such as those inside a network namespace we created (``ip netns pids``)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
