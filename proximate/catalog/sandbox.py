"""Extraction in a child process with a time and memory bound, so a file nobody foresaw ends as an error record.

The extractor caps what it reads (coordinates sampled, attributes and records cut), but a header is whatever a
file says, and the C libraries under it (netCDF-C, HDF5, GDAL, ecCodes) have their own ways of taking hours or
gigabytes. Each file is therefore extracted in a child of the worker: its address space limited
(``RLIMIT_AS``, :data:`MEMORY_ENV`) and its time bounded (:data:`TIMEOUT_ENV`); a child over time is killed
(an alarm kills it too if the worker is gone) and the file gets an error record saying so. A child serves one
file after another, so its imports are paid once per worker thread, not per file.

The protocol is pickles over the child's stdin/stdout, each preceded by its length.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from proximate.regions import REGION_ENV, ROOT_ENV

#: Seconds one file may take (environment variable; default :data:`DEFAULT_TIMEOUT`).
TIMEOUT_ENV = "PROXIMATE_EXTRACT_TIMEOUT"
#: Address space of an extraction process, in MiB (environment variable; default :data:`DEFAULT_MEMORY_MIB`).
MEMORY_ENV = "PROXIMATE_EXTRACT_MEMORY_MB"
DEFAULT_TIMEOUT = 120.0
DEFAULT_MEMORY_MIB = 4096

#: Seconds a new extraction process may take to import its libraries.
BOOT_SECONDS = 120.0

_HEADER = struct.Struct("!Q")

#: The child: limits first, then the extractor, then one request after another until stdin closes.
_CHILD = r"""
import json, os, pickle, resource, signal, struct, sys
sys.path[:0] = [p for p in json.loads(sys.argv[1]) if p not in sys.path]
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
header = struct.Struct("!Q")
inp, out = sys.stdin.buffer, sys.stdout.buffer
sys.stdout = sys.stderr  # a library printing must not corrupt the replies
from proximate.catalog.sandbox import serve_one
import proximate.catalog.extract  # the imports are paid before the first file's clock starts
out.write(header.pack(0))  # ready
out.flush()
while True:
    raw = inp.read(header.size)
    if len(raw) < header.size:
        break
    request = pickle.loads(inp.read(header.unpack(raw)[0]))
    signal.alarm(int(request[-1]) + 5)  # the worker may be gone: never outlive the bound
    reply = pickle.dumps(serve_one(*request[:-1]), protocol=5)
    signal.alarm(0)
    out.write(header.pack(len(reply)) + reply)
    out.flush()
"""


def limits() -> tuple[float, int]:
    """(seconds per file, bytes of address space) from the environment.

    Returns:
        The timeout in seconds and the memory limit in bytes.

    Raises:
        ValueError: Naming the variable whose value is not a positive number.

    Examples:
        >>> limits()  # doctest: +SKIP
        (120.0, 4294967296)
    """
    try:
        seconds = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
        mib = int(os.environ.get(MEMORY_ENV) or DEFAULT_MEMORY_MIB)
    except ValueError as exc:
        raise ValueError(f"{TIMEOUT_ENV} and {MEMORY_ENV} must be numbers: {exc}") from None
    if seconds <= 0 or mib <= 0:
        raise ValueError(f"{TIMEOUT_ENV} and {MEMORY_ENV} must be positive")
    return seconds, mib * 2**20


def serve_one(region: str, path: str, etag: str | None) -> tuple[str, Any]:
    """Child side: ``("record", DatasetRecord)``, ``("vanished", path)`` or ``("raise", exception)``."""
    from proximate.catalog.extract import extract_in_region

    try:
        return "record", extract_in_region(region, path, etag)
    except FileNotFoundError:  # the caller checked the route (it runs in the region): nothing there any more
        return "vanished", path
    except BaseException as exc:
        return "raise", exc


class ExtractionTimeout(Exception):
    """A file's extraction exceeded its time or its process died."""


class Sandbox:
    """One extraction child, started on first use and again after it was killed."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        #: What the child was started with: a change (another region's root, other limits) starts a new one.
        self.started_with: tuple[Any, ...] = ()

    def _start(self, memory: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.setdefault("MALLOC_ARENA_MAX", "2")  # glibc arenas reserve address space per thread
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(sys.path), str(memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )

    def extract(self, region: str, path: str, etag: str | None) -> tuple[str, Any]:
        """One file's result from the child (see :func:`serve_one`).

        Raises:
            ExtractionTimeout: The child took longer than the bound, or died (out of memory in C code).
        """
        seconds, memory = limits()
        started_with = (memory, os.environ.get(REGION_ENV), os.environ.get(ROOT_ENV), tuple(sys.path))
        if self.proc is not None and (self.proc.poll() is not None or started_with != self.started_with):
            self.close()
        if self.proc is None:
            self.proc, self.started_with = self._start(memory), started_with
            try:  # the imports, bounded apart from the file's time (a busy machine may take seconds)
                self._read(_HEADER.size, time.monotonic() + max(BOOT_SECONDS, seconds))
            except ExtractionTimeout as exc:
                self.close()
                raise ExtractionTimeout(f"the extraction process did not start: {exc}") from None
        request = pickle.dumps((region, path, etag, seconds), protocol=5)
        try:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(_HEADER.pack(len(request)) + request)
            self.proc.stdin.flush()
            raw = self._read(_HEADER.size, time.monotonic() + seconds)
            return pickle.loads(self._read(_HEADER.unpack(raw)[0], time.monotonic() + seconds))
        except ExtractionTimeout:
            self.close()
            raise
        except (BrokenPipeError, OSError, EOFError) as exc:
            self.close()
            raise ExtractionTimeout(f"the extraction process failed: {exc}") from None

    def _read(self, n: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExtractionTimeout(f"took longer than {limits()[0]:g} s ({TIMEOUT_ENV}): stopped")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, min(n - got, 1 << 20))
            if not chunk:
                code = self.proc.wait()
                why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                _, memory = limits()
                raise ExtractionTimeout(
                    f"the extraction process died ({why}; memory limit {memory // 2**20} MiB, {MEMORY_ENV})"
                )
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Stop the child (killed: it may be stuck in C code that ignores gentler signals) and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        self.proc.wait()
        self.proc = None


_IDLE: list[Sandbox] = []
_IDLE_LOCK = threading.Lock()


@contextlib.contextmanager
def sandbox() -> Iterator[Sandbox]:
    """An idle extraction child of this process (one per concurrent caller), returned to the pool after use.

    Examples:
        >>> with sandbox() as box:  # doctest: +SKIP
        ...     kind, record = box.extract("eu-west-2", "tas.nc", None)
    """
    with _IDLE_LOCK:
        box = _IDLE.pop() if _IDLE else Sandbox()
    try:
        yield box
    finally:
        with _IDLE_LOCK:
            _IDLE.append(box)
