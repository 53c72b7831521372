"""Run a function in a reused child process bounded in CPU time, memory and wall-clock time.

The one place proximate confines work to a child process; two callers use it, each with its own limits and its own
error messages:

- a table partial (derived columns, :meth:`proximate.tables.TableQuestion.bounded_partial`): a Dask worker runs
  tasks in threads of the process that also runs its event loop and heartbeats, and a task that holds the GIL
  inside one C call (a huge integer power, a giant string repeat) starves that loop until the scheduler restarts
  the worker; in a child it fails its own task with :class:`LimitExceeded` and the worker keeps answering;
- a catalog file's extraction (:func:`proximate.catalog.indexing.extract_batch`): the C libraries under the
  readers (netCDF-C, HDF5, GDAL, ecCodes) have their own ways of taking hours or gigabytes over a hostile header;
  in a child the file becomes an error record and the batch goes on.

How a call is bounded:

- memory: ``RLIMIT_AS`` on the child (an allocation past it is a ``MemoryError``, or the child dies in C code);
- CPU: ``RLIMIT_CPU``, reset before each call to what the child used so far plus the call's budget;
- wall-clock: the caller waits on a pipe (releasing the GIL) until the deadline, then kills the child.

Children are started with ``subprocess`` (a nanny's worker is a daemonic process, which ``multiprocessing``
forbids to have children), import what the caller names before the first call's clock starts (bounded apart, by
:data:`BOOT_SECONDS`), and are kept for reuse, one per concurrent call; a child that failed, or passed a limit, is
killed and the next call gets a new one. A child never outlives its parent for long: an idle child ends when its
requests pipe closes or (a watchdog thread) when its parent process is gone, and a running call has an alarm a
little past its wall-clock bound whose default action ends the process even while the call holds the GIL.

Every child is stopped through :meth:`_Child.kill` (by its own PID), so a process supervisor can take that over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from proximate import config

T = TypeVar("T")

#: The settings of a table partial's limits on a worker (read when a task runs, so an operator sets them in the
#: workers' environment or Dask config); see :meth:`Limits.from_env`.
PARTIAL_LIMIT_KEYS = {
    "cpu_seconds": "tables.partial.cpu-seconds",
    "memory_bytes": "tables.partial.memory-mb",
    "wall_seconds": "tables.partial.wall-seconds",
}
#: The environment variables of those settings.
CPU_ENV = config.env_var(PARTIAL_LIMIT_KEYS["cpu_seconds"])
MEMORY_ENV = config.env_var(PARTIAL_LIMIT_KEYS["memory_bytes"])
WALL_ENV = config.env_var(PARTIAL_LIMIT_KEYS["wall_seconds"])
#: Children kept idle per process for reuse, across callers: one per task a worker runs at once (its threads, by
#: default one per core) for each of the two callers, since a new child costs an interpreter start and its imports
#: (1.5-6.5 s measured on a loaded 2-core machine, against 4 ms a call for a kept one). Each idle child holds
#: ~150 MB; past this count the child idle longest is stopped.
MAX_IDLE_CHILDREN = 2 * max(2, os.cpu_count() or 1)
#: Seconds a new child may take to start and import what its caller preloads (a busy machine may take many).
BOOT_SECONDS = 120.0
#: Seconds past a call's wall-clock bound after which the child's own alarm ends it (the parent kills it at the
#: bound; the alarm is for a parent that is gone or stuck).
ALARM_GRACE_SECONDS = 5
#: How often an idle or running child checks that its parent is still there.
PARENT_CHECK_SECONDS = 1.0
_HEADER = 8
#: What a child writes once it has read a call, before running it: a child that dies before writing it died idle.
_RECEIVED = b"\x01"

#: The child's command: the parent's import path first (a worker may have extended it), then the serving loop.
_BOOT = (
    "import json, sys; sys.path[:0] = [p for p in json.loads(sys.argv[1]) if p not in sys.path]; "
    "from proximate.sandbox import _serve; _serve(*json.loads(sys.argv[2]))"
)


class LimitExceeded(RuntimeError):
    """The bounded function ran past a limit (CPU time, memory or wall-clock time) and its child was stopped, or
    the child died or did not start."""

    def __init__(self, limit: str, message: str, *, limits: Limits | None = None, returncode: int | None = None):
        super().__init__(message)
        #: Which limit: ``"cpu"``, ``"memory"`` or ``"wall"``; ``"crash"`` for a child that died otherwise,
        #: ``"start"`` for one that did not start (or could not import what it preloads).
        self.limit = limit
        #: The limits of the call.
        self.limits = limits
        #: The child's exit status (``-N`` for signal N), when it died.
        self.returncode = returncode


@dataclass(frozen=True)
class Limits:
    """What one bounded call may use.

    Attributes:
        cpu_seconds: CPU time of the call (user + system), enforced by ``RLIMIT_CPU`` in the child.
        memory_bytes: Address space of the child (``RLIMIT_AS``): an allocation past it is a ``MemoryError``.
        wall_seconds: Elapsed time before the child is killed (a call blocked without using CPU).
    """

    cpu_seconds: float = float(config.default(PARTIAL_LIMIT_KEYS["cpu_seconds"]))
    memory_bytes: int = int(config.default(PARTIAL_LIMIT_KEYS["memory_bytes"]) * 2**20)
    wall_seconds: float = float(config.default(PARTIAL_LIMIT_KEYS["wall_seconds"]))

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "wall_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit {name} must be positive, got {getattr(self, name)!r}")

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        variables: Mapping[str, str] | None = None,
        defaults: Limits | None = None,
    ) -> Limits:
        """The limits the settings give (:mod:`proximate.config`: a ``PROXIMATE_*`` variable, else Dask's config),
        ``defaults`` otherwise.

        Args:
            environ: Where to read the variables; ``os.environ`` when omitted.
            variables: Which setting (a ``proximate.`` key without its prefix) sets which field (``cpu_seconds``,
                ``memory_bytes`` in MiB, ``wall_seconds``); a table partial's (:data:`PARTIAL_LIMIT_KEYS`) when
                omitted.
            defaults: The limits of the fields no variable sets; ``Limits()`` when omitted.

        Returns:
            The limits.

        Raises:
            ValueError: a setting that is not a positive number, naming its variable (or key).

        Examples:
            >>> Limits.from_env({"PROXIMATE_PARTIAL_CPU_SECONDS": "30"}).cpu_seconds
            30.0
            >>> Limits.from_env({"PROXIMATE_EXTRACT_TIMEOUT": "5"},
            ...                 variables={"wall_seconds": "catalog.extract.timeout"}).wall_seconds
            5.0
        """
        values: dict[str, Any] = {}
        for field_name, key in (PARTIAL_LIMIT_KEYS if variables is None else variables).items():
            number = config.get_float(key, environ, positive=True)
            if number is None:
                continue
            values[field_name] = int(number * 2**20) if field_name == "memory_bytes" else number
        return dataclasses.replace(defaults or cls(), **values)


def describe_exit(returncode: int) -> str:
    """How a process ended, in words.

    Args:
        returncode: Its exit status as ``subprocess`` gives it (``-N`` for signal N).

    Returns:
        ``killed by signal N`` or ``exit status N``.

    Examples:
        >>> describe_exit(-9)
        'killed by signal 9'
    """
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"


class _DiedIdle(Exception):
    """The child handed out was already dead (or died) before it read the call."""


class _Child:
    """One child process serving bounded calls over its stdin/stdout, started with a fixed address-space limit,
    import path, environment and preloaded modules (:attr:`started_with`)."""

    def __init__(self, memory_bytes: int, preload: tuple[str, ...]) -> None:
        self.started_with = _started_with(memory_bytes, preload)
        env = dict(os.environ)
        # One BLAS/OpenMP thread and two malloc arenas: each extra thread or arena reserves address space that
        # RLIMIT_AS counts, and the worker already has its own threads for parallelism.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, json.dumps(sys.path), json.dumps([memory_bytes, list(preload), os.getpid()])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            start_new_session=True,  # a signal to the worker's group (Ctrl-C) is the worker's, not the child's
        )

    def boot(self, seconds: float) -> None:
        """Wait until the child has imported what it preloads.

        Raises:
            LimitExceeded: (``"start"``) it did not within ``seconds``, died, or an import failed; it is stopped.
        """
        try:
            status, value = pickle.loads(self._read_frame(time.monotonic() + seconds))
        except TimeoutError:
            self.kill()
            raise LimitExceeded("start", f"did not start within {seconds:g} s") from None
        except EOFError:
            code = self.process.wait()
            raise LimitExceeded("start", f"died while starting ({describe_exit(code)})", returncode=code) from None
        if status != "ok":
            self.kill()
            raise LimitExceeded("start", f"could not start: {type(value).__name__}: {value}")

    def call(self, fn: Callable[..., T], args: tuple[Any, ...], limits: Limits) -> T:
        """Run ``fn(*args)`` in the child; its exception is raised here.

        Raises:
            LimitExceeded: the child passed a limit (or died) and is gone.
        """
        payload = pickle.dumps((fn, args, limits.cpu_seconds, limits.wall_seconds), protocol=pickle.HIGHEST_PROTOCOL)
        deadline = time.monotonic() + limits.wall_seconds
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(len(payload).to_bytes(_HEADER, "big") + payload)
            self.process.stdin.flush()
            self._read(len(_RECEIVED), deadline)
        except (BrokenPipeError, EOFError):
            # Gone before it took the call: it died while idle (killed from outside, say), after the idle check
            # that handed it out. Nothing of the call ran; the caller retries on a new child.
            self.kill()
            raise _DiedIdle from None
        except TimeoutError:
            self.kill()
            raise LimitExceeded(
                "wall", f"ran longer than {limits.wall_seconds:g} s of wall-clock time and was stopped", limits=limits
            ) from None
        try:
            reply = self._read_frame(deadline)
        except EOFError:
            raise self._died(limits) from None
        except TimeoutError:
            self.kill()
            raise LimitExceeded(
                "wall", f"ran longer than {limits.wall_seconds:g} s of wall-clock time and was stopped", limits=limits
            ) from None
        status, value = pickle.loads(reply)
        if status == "ok":
            return value
        raise value

    def _read_frame(self, deadline: float) -> bytes:
        """One length-prefixed message from the child, read no later than ``deadline``."""
        return self._read(int.from_bytes(self._read(_HEADER, deadline), "big"), deadline)

    def _read(self, size: int, deadline: float) -> bytes:
        """``size`` bytes from the child, waiting no later than ``deadline`` (the wait releases the GIL)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks, missing = [], size
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while missing:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    raise TimeoutError
                chunk = os.read(fd, min(missing, 1 << 20))
                if not chunk:
                    raise EOFError
                chunks.append(chunk)
                missing -= len(chunk)
        return b"".join(chunks)

    def _died(self, limits: Limits) -> LimitExceeded:
        code = self.process.wait()
        if code == -signal.SIGXCPU:
            return LimitExceeded(
                "cpu", f"used more than {limits.cpu_seconds:g} s of CPU time and was stopped", limits=limits,
                returncode=code,
            )  # fmt: skip
        if code == -signal.SIGALRM:  # its own alarm, a little past the wall-clock bound, beat the parent's wait
            return LimitExceeded(
                "wall", f"ran longer than {limits.wall_seconds:g} s of wall-clock time and was stopped", limits=limits,
                returncode=code,
            )  # fmt: skip
        if code == -signal.SIGKILL:
            # The kernel's OOM killer (or an operator) killed it: memory is the likely cause.
            return LimitExceeded(
                "memory", f"was killed (SIGKILL) within its {limits.memory_bytes} B memory limit", limits=limits,
                returncode=code,
            )  # fmt: skip
        return LimitExceeded("crash", f"its process died (exit code {code})", limits=limits, returncode=code)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop the child (SIGKILL by its own PID: it may be stuck in C code that ignores gentler signals) and
        reap it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _started_with(memory_bytes: int, preload: tuple[str, ...]) -> tuple[Any, ...]:
    """What a child is started with. A call reuses only a child started as it would start one now: same memory
    limit and preloads, same import path and environment (a worker's region and root are environment variables)."""
    return memory_bytes, preload, tuple(sys.path), tuple(sorted(os.environ.items()))


_idle: list[_Child] = []  # oldest first
_idle_lock = threading.Lock()


def _take(memory_bytes: int, preload: tuple[str, ...], *, new: bool = False) -> _Child:
    """An idle child started as this call would start one, or (also when ``new``) a new one, booted."""
    wanted = _started_with(memory_bytes, preload)
    with _idle_lock:
        kept = () if new else range(len(_idle) - 1, -1, -1)  # the most recently used first: its pages are the warmest
        for i in kept:
            if _idle[i].started_with == wanted and _idle[i].alive():
                return _idle.pop(i)
    child = _Child(memory_bytes, preload)
    child.boot(BOOT_SECONDS)
    return child


def _give_back(child: _Child) -> None:
    """Keep ``child`` for reuse; stop the one idle longest past :data:`MAX_IDLE_CHILDREN`."""
    with _idle_lock:
        _idle.append(child)
        surplus = [c for c in _idle if not c.alive()] + _idle[: max(0, len(_idle) - MAX_IDLE_CHILDREN)]
        for stale in surplus:
            with contextlib.suppress(ValueError):
                _idle.remove(stale)
    for stale in surplus:
        stale.kill()


def run_bounded(fn: Callable[..., T], *args: Any, limits: Limits | None = None, preload: tuple[str, ...] = ()) -> T:
    """``fn(*args)`` computed in a child process within ``limits``; the calling thread only waits.

    ``fn`` and ``args`` must pickle (a module-level function or a method of a picklable object), and so must the
    result. A call reuses an idle child started with the same memory limit, preloads, import path and environment,
    or starts one.

    Args:
        fn: The function to run.
        *args: Its arguments.
        limits: CPU, memory and wall-clock bounds; :meth:`Limits.from_env` when omitted.
        preload: Modules a new child imports before its first call, so their import is not counted in the call's
            time (bounded by :data:`BOOT_SECONDS` instead).

    Returns:
        What ``fn`` returned.

    Raises:
        LimitExceeded: the call passed a limit, its process died, or a new process did not start; the child was
            stopped and is not reused.
        MemoryError: an allocation in ``fn`` went past the memory limit (the child is discarded).
        Exception: whatever ``fn`` raised (the child is discarded).

    Examples:
        >>> run_bounded(sum, [1, 2, 3], limits=Limits(cpu_seconds=10))
        6
    """
    limits = limits or Limits.from_env()
    child = _take(limits.memory_bytes, tuple(preload))
    try:
        try:
            result = child.call(fn, args, limits)
        except _DiedIdle:
            # Only a kept child can die idle; a new one that dies before reading its first call is a real failure.
            child = _take(limits.memory_bytes, tuple(preload), new=True)
            try:
                result = child.call(fn, args, limits)
            except _DiedIdle:
                raise child._died(limits) from None
    except BaseException:
        child.kill()  # a child that failed may hold a half-freed heap or a lowered limit: never reuse it
        raise
    _give_back(child)
    return result


# -- the child's side ---------------------------------------------------------------------------------------------


def _watch_parent(parent_pid: int) -> None:
    """End this process once its parent is gone (it is then re-parented). Needs the GIL, so a call that holds it
    in one C call is ended by its alarm instead."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)


def _serve(memory_bytes: int, preload: list[str], parent_pid: int) -> None:
    """The child's loop: limits, preloads, then read a call, run it under the CPU limit and an alarm, write its
    result; exit at end of input."""
    # The protocol owns the real stdout; anything the function (or a C library) prints goes to stderr instead of
    # corrupting it.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if os.getppid() != parent_pid:
        return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()

    def reply(status: str, value: Any) -> None:
        try:
            data = pickle.dumps((status, value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result or exception still gets an answer
            data = pickle.dumps(("error", RuntimeError(f"{type(value).__name__}: {value} ({exc})")))
        replies.write(len(data).to_bytes(_HEADER, "big") + data)
        replies.flush()

    try:
        for module in preload:
            __import__(module)
    except BaseException as exc:
        reply("error", exc)
        return
    reply("ok", None)  # ready: the first call's clock starts now
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    while True:
        header = requests.read(_HEADER)
        if len(header) < _HEADER:
            return
        request = requests.read(int.from_bytes(header, "big"))
        replies.write(_RECEIVED)
        replies.flush()
        fn, args, cpu_seconds, wall_seconds = pickle.loads(request)
        # RLIMIT_CPU counts the process's whole life: allow this call its budget on top of what was used so far.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime + cpu_seconds) + 1
        if cpu_hard != resource.RLIM_INFINITY:
            soft = min(soft, cpu_hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
        # SIGALRM's default action ends the process without Python: it works while the call holds the GIL, and
        # when the parent that should have killed it at the bound is gone.
        signal.alarm(math.ceil(wall_seconds) + ALARM_GRACE_SECONDS)
        try:
            outcome = ("ok", fn(*args))
        except BaseException as exc:  # every failure goes back to the caller
            outcome = ("error", exc)
        signal.alarm(0)
        reply(*outcome)
