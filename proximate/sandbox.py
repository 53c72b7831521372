"""Run a function in a child process bounded in CPU time, memory and wall-clock time.

A Dask worker runs tasks in threads of the process that also runs its event loop and heartbeats. A task that holds
the GIL inside one C call (a huge integer power, a giant string repeat) starves that loop: the scheduler loses the
worker, restarts it, and unrelated runs that had data or tasks on it fail. :func:`run_bounded` moves such work into
a child process: the task's thread only waits on a pipe (releasing the GIL), the child runs under ``RLIMIT_CPU``
and ``RLIMIT_AS``, and a child past its wall-clock bound is killed. A runaway therefore fails its own task with
:class:`LimitExceeded`, and the worker keeps answering.

Children are started with ``subprocess`` (a nanny's worker is a daemonic process, which ``multiprocessing`` forbids
to have children) and kept for reuse, one per concurrent task; a child that failed is never reused.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Environment variables that set the default limits on a worker (read when a task runs, so an operator sets them
#: in the workers' environment).
CPU_ENV = "PROXIMATE_PARTIAL_CPU_SECONDS"
MEMORY_ENV = "PROXIMATE_PARTIAL_MEMORY_MB"
WALL_ENV = "PROXIMATE_PARTIAL_WALL_SECONDS"
#: Children kept idle per process for reuse: one per task a worker runs at once (its threads, by default one per
#: core), since a new child costs an interpreter start and the imports of its first call (1.5-6.5 s measured on
#: a loaded 2-core machine, against 4 ms a call for a kept one). Each idle child holds ~150 MB.
MAX_IDLE_CHILDREN = max(2, os.cpu_count() or 1)
_HEADER = 8


class LimitExceeded(RuntimeError):
    """The bounded function ran past a limit (CPU time, memory or wall-clock time) and its child was stopped."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        #: Which limit: ``"cpu"``, ``"memory"`` or ``"wall"`` (``"crash"`` for a child that died otherwise).
        self.limit = limit


@dataclass(frozen=True)
class Limits:
    """What one bounded call may use.

    Attributes:
        cpu_seconds: CPU time of the call (user + system), enforced by ``RLIMIT_CPU`` in the child.
        memory_bytes: Address space of the child (``RLIMIT_AS``): an allocation past it is a ``MemoryError``.
        wall_seconds: Elapsed time before the child is killed (a call blocked without using CPU).
    """

    cpu_seconds: float = 300.0
    memory_bytes: int = 4 * 2**30
    wall_seconds: float = 900.0

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "wall_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit {name} must be positive, got {getattr(self, name)!r}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """The limits the environment sets (:data:`CPU_ENV`, :data:`MEMORY_ENV` in MiB, :data:`WALL_ENV`),
        defaults otherwise.

        Raises:
            ValueError: a variable that is not a positive number, naming it.

        Examples:
            >>> Limits.from_env({"PROXIMATE_PARTIAL_CPU_SECONDS": "30"}).cpu_seconds
            30.0
        """
        env = os.environ if environ is None else environ
        default = cls()
        values: dict[str, Any] = {}
        for var, field_name, scale in ((CPU_ENV, "cpu_seconds", 1), (MEMORY_ENV, "memory_bytes", 2**20),
                                       (WALL_ENV, "wall_seconds", 1)):  # fmt: skip
            text = env.get(var, "").strip()
            if not text:
                values[field_name] = getattr(default, field_name)
                continue
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{var}={text!r} is not a number") from None
            if not number > 0:
                raise ValueError(f"{var}={text!r} must be positive")
            values[field_name] = int(number * scale) if scale != 1 else number
        return cls(**values)


class _Child:
    """One child process serving bounded calls over its stdin/stdout, with a fixed address-space limit."""

    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        env = dict(os.environ)
        # One BLAS/OpenMP thread: each extra thread reserves address space that RLIMIT_AS counts, and the worker
        # already has its own threads for parallelism.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proximate.sandbox", str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a signal to the worker's group (Ctrl-C) is the worker's, not the child's
        )

    def call(self, fn: Callable[..., T], args: tuple[Any, ...], limits: Limits) -> T:
        """Run ``fn(*args)`` in the child; its exception is raised here.

        Raises:
            LimitExceeded: the child passed a limit (or died) and is gone.
        """
        payload = pickle.dumps((fn, args, limits.cpu_seconds), protocol=pickle.HIGHEST_PROTOCOL)
        deadline = time.monotonic() + limits.wall_seconds
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(len(payload).to_bytes(_HEADER, "big") + payload)
            self.process.stdin.flush()
            header = self._read(_HEADER, deadline)
            reply = self._read(int.from_bytes(header, "big"), deadline)
        except (BrokenPipeError, EOFError):
            raise self._died(limits) from None
        except TimeoutError:
            self.kill()
            raise LimitExceeded(
                "wall", f"ran longer than {limits.wall_seconds:g} s of wall-clock time and was stopped"
            ) from None
        status, value = pickle.loads(reply)
        if status == "ok":
            return value
        raise value

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
            return LimitExceeded("cpu", f"used more than {limits.cpu_seconds:g} s of CPU time and was stopped")
        if code == -signal.SIGKILL:
            # The kernel's OOM killer (or an operator) killed it: memory is the likely cause.
            return LimitExceeded("memory", f"was killed (SIGKILL) within its {limits.memory_bytes} B memory limit")
        return LimitExceeded("crash", f"its process died (exit code {code})")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop the child (by its own PID) and reap it."""
        if self.alive():
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_idle: list[_Child] = []
_idle_lock = threading.Lock()


def _take(memory_bytes: int) -> _Child:
    with _idle_lock:
        for i, child in enumerate(_idle):
            if child.memory_bytes == memory_bytes and child.alive():
                return _idle.pop(i)
    return _Child(memory_bytes)


def _give_back(child: _Child) -> None:
    with _idle_lock:
        if len(_idle) < MAX_IDLE_CHILDREN and child.alive():
            _idle.append(child)
            return
    child.kill()


def run_bounded(fn: Callable[..., T], *args: Any, limits: Limits | None = None) -> T:
    """``fn(*args)`` computed in a child process within ``limits``; the calling thread only waits.

    ``fn`` and ``args`` must pickle (a module-level function or a method of a picklable object), and so must the
    result.

    Args:
        fn: The function to run.
        *args: Its arguments.
        limits: CPU, memory and wall-clock bounds; :meth:`Limits.from_env` when omitted.

    Returns:
        What ``fn`` returned.

    Raises:
        LimitExceeded: the call passed a limit (or its process died); the child was stopped and is not reused.
        MemoryError: an allocation in ``fn`` went past the memory limit (the child is discarded).
        Exception: whatever ``fn`` raised.

    Examples:
        >>> run_bounded(sum, [1, 2, 3], limits=Limits(cpu_seconds=10))
        6
    """
    limits = limits or Limits.from_env()
    child = _take(limits.memory_bytes)
    try:
        result = child.call(fn, args, limits)
    except BaseException:
        child.kill()  # a child that failed may hold a half-freed heap or a lowered limit: never reuse it
        raise
    _give_back(child)
    return result


# -- the child's side ---------------------------------------------------------------------------------------------


def _serve(memory_bytes: int) -> None:
    """The child's loop: read a call, run it under the CPU limit, write its result; exit at end of input."""
    # The protocol owns the real stdout; anything the function prints goes to stderr instead of corrupting it.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    while True:
        header = requests.read(_HEADER)
        if len(header) < _HEADER:
            return
        fn, args, cpu_seconds = pickle.loads(requests.read(int.from_bytes(header, "big")))
        # RLIMIT_CPU counts the process's whole life: allow this call its budget on top of what was used so far.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime + cpu_seconds) + 1
        if cpu_hard != resource.RLIM_INFINITY:
            soft = min(soft, cpu_hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
        try:
            reply = ("ok", fn(*args))
        except BaseException as exc:  # every failure goes back to the caller
            reply = ("error", exc)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result or exception still gets an answer
            data = pickle.dumps(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]} ({exc})")))
        replies.write(len(data).to_bytes(_HEADER, "big") + data)
        replies.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
