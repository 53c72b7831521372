"""Durable, atomic file writes below a root: temporaries, O_DIRECT, aligned buffers, group sync, placement.

Every file is written under a temporary name in its own folder, made durable, then renamed into place. Small
files are made durable in groups (:class:`GroupSync`: one ``syncfs`` per group, not one ``fsync`` per file); big
ones are fsynced one by one. Durable writes bypass the page cache (O_DIRECT, from each reading thread's aligned
buffer) where the file system allows it: the disk then takes the bytes as they come, instead of a copy into the
cache and a writeback at the fsync, which cost more than the disk write itself.

The sinks here (:class:`Held`, :class:`RangeWriter`, :class:`DirectRangeWriter`) are what
:meth:`~proximate.sync.sources.Source.fetch` feeds, in the reading thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import fcntl
import functools
import mmap
import os
import stat
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from proximate import config
from proximate.regions import RegionPathError
from proximate.sync.checksums import Hasher
from proximate.sync.confined import ConfinedRoot
from proximate.sync.keys import TEMP_PREFIX, HostileKeyError

T = TypeVar("T")
Buffer = bytes | bytearray | memoryview
MiB = 2**20
#: The environment variable that, set to ``0``, keeps durable writes in the page cache (see :func:`direct_wanted`).
DIRECT_ENV = config.env_var("sync.direct")
#: Direct I/O wants offsets, lengths and memory aligned to the device's logical block (512 B or 4 KiB) and, on
#: Lustre, to the page: one page, at least 4 KiB, satisfies both.
DIRECT_ALIGN = max(4096, mmap.PAGESIZE)
#: Bytes received and written per step on the direct path (a multiple of DIRECT_ALIGN).
DIRECT_CHUNK = 2**20
#: Bytes of a big file written between two writeback requests.
WRITEBACK_EVERY = 8 * MiB
#: sync_file_range(2)'s flag to start writeback without waiting for it.
SYNC_FILE_RANGE_WRITE = 2
#: At most this many buffers per pwritev(2) call (IOV_MAX on Linux).
IOV_MAX = 1024


def direct_wanted(direct: bool | None) -> bool:
    """Whether durable writes may use O_DIRECT: ``direct`` when given, else the environment's say at this call
    (``PROXIMATE_SYNC_DIRECT=0`` turns it off; anything else, or unset, leaves it on)."""
    if direct is not None:
        return direct
    return config.get_bool("sync.direct")


# -- system calls Python's os module lacks ---------------------------------------------------------------------


def _load_libc() -> Any:
    """libc, for syncfs(2) (Linux): Python's os module has sync() for every file system but not syncfs."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "syncfs") else None
    except OSError:
        return None


_LIBC = _load_libc()


def _load_sync_file_range() -> Any:
    """sync_file_range(2) (Linux), to start a file's writeback early; None where libc has none."""
    func = getattr(_LIBC, "sync_file_range", None) if _LIBC is not None else None
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return func


_SYNC_FILE_RANGE = _load_sync_file_range()


def syncfs(root: Path) -> None:
    """Flush the file system holding ``root`` (syncfs(2); os.sync() where libc has no syncfs)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _LIBC is not None and _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of {root}: {os.strerror(err)}")
        if _LIBC is None:
            os.sync()
    finally:
        os.close(fd)


# -- writing ---------------------------------------------------------------------------------------------------


def pwritev_all(fd: int, chunks: Sequence[Buffer], offset: int) -> None:
    """Write ``chunks`` back to back at ``offset`` with as few system calls (and no joining copy) as possible."""
    pending = [memoryview(c) for c in chunks if len(c)]
    while pending:
        n = os.pwritev(fd, pending[:IOV_MAX], offset)
        offset += n
        while n and pending:
            if n >= len(pending[0]):
                n -= len(pending.pop(0))
            else:
                pending[0], n = pending[0][n:], 0


def aligned(size: int) -> int:
    """``size`` rounded up to a multiple of DIRECT_ALIGN."""
    return -(-size // DIRECT_ALIGN) * DIRECT_ALIGN


_thread_buffers = threading.local()


def thread_buffer(size: int = 0) -> memoryview:
    """This thread's page-aligned receive buffer, at least ``size`` bytes and one DIRECT_CHUNK (an anonymous
    mapping, reused for every object and range the thread reads: no fresh pages per object)."""
    view: memoryview | None = getattr(_thread_buffers, "view", None)
    if view is None or len(view) < size:
        view = _thread_buffers.view = memoryview(mmap.mmap(-1, max(DIRECT_CHUNK, -(-size // MiB) * MiB)))
    return view


def discard(tmp: Path) -> None:
    """Remove a temporary, if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def open_temp(tmp: Path, direct: bool) -> tuple[int, bool]:
    """Create ``tmp`` exclusively, with O_DIRECT when asked and the file system supports it; returns the file
    descriptor and whether it is direct."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    if direct and hasattr(os, "O_DIRECT"):
        try:
            return os.open(tmp, flags | os.O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: no direct I/O here (tmpfs before Linux 6.6, some FUSE)
                raise
            discard(tmp)
    return os.open(tmp, flags, 0o644), False


def write_direct(fd: int, view: memoryview, offset: int) -> None:
    """Write an aligned block through a direct descriptor; if the file system refuses direct I/O on it after
    all (EINVAL), turn O_DIRECT off for the descriptor and write through the page cache instead."""
    try:
        pwritev_all(fd, [view], offset)
    except OSError as exc:
        if exc.errno != errno.EINVAL or not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        pwritev_all(fd, [view], offset)


# -- sinks (fed by Source.fetch in the reading thread) ---------------------------------------------------------


class Held:
    """A sink that holds a small object's bytes (at most one block) in this thread's reused buffer, to check them
    and write them once they are all in: no bytes object (and no fresh pages) per chunk or per object. Only the
    thread that received them may use :attr:`chunks`; :meth:`detach` copies them out for any other."""

    def __init__(self, size: int) -> None:
        self.view = thread_buffer(aligned(size))
        self.received = 0

    def buffer(self, limit: int) -> memoryview:
        return self.view[self.received : self.received + limit]

    def filled(self, n: int) -> None:
        self.received += n

    def feed(self, data: bytes) -> None:
        self.view[self.received : self.received + len(data)] = data
        self.received += len(data)

    @property
    def chunks(self) -> list[memoryview]:
        return [self.view[: self.received]]

    def padded(self) -> memoryview:
        """The bytes received, followed by zeros up to the next DIRECT_ALIGN boundary (for a direct write)."""
        length = aligned(self.received)
        self.view[self.received : length] = bytes(length - self.received)
        return self.view[:length]

    def detach(self) -> Detached:
        return Detached([bytes(self.view[: self.received])])


@dataclass
class Detached:
    """Bytes of a :class:`Held` sink copied out of its thread's buffer."""

    chunks: list[bytes]


class RangeWriter:
    """A sink that writes a range of a file at its offset as it streams in, hashing it on the way (in the
    fetching thread: pwrite and hashlib/zlib release the GIL). With ``writeback``, every WRITEBACK_EVERY bytes
    it asks the kernel to start writing them to disk: a big file's bytes then reach the disk while the rest are
    still arriving, instead of all at the final fsync (the kernel alone starts only past its dirty-page limits,
    gigabytes on a large machine)."""

    def __init__(self, fd: int, start: int, hasher: Hasher | None, writeback: bool = False) -> None:
        self.fd, self.offset, self.hasher = fd, start, hasher
        self.received = 0
        self._unflushed_from = start if writeback and _SYNC_FILE_RANGE is not None else None

    def feed(self, data: bytes) -> None:
        pwritev_all(self.fd, [data], self.offset)
        self.offset += len(data)
        self.received += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        if self._unflushed_from is not None and self.offset - self._unflushed_from >= WRITEBACK_EVERY:
            assert _SYNC_FILE_RANGE is not None
            # start writeback, do not wait for it; the fsync before rename still does
            _SYNC_FILE_RANGE(self.fd, self._unflushed_from, self.offset - self._unflushed_from, SYNC_FILE_RANGE_WRITE)
            self._unflushed_from = self.offset

    def digest(self) -> bytes:
        return self.hasher.digest() if self.hasher is not None else b""


class DirectRangeWriter:
    """A sink for a big file opened with O_DIRECT: bytes go from the socket into this thread's aligned buffer,
    are hashed there, and go from there to the device, bypassing the page cache. A durable write through the
    page cache costs a copy into it plus the kernel's writeback work, more than the direct write of the same
    bytes, fsync included. The range must start on an aligned offset."""

    def __init__(self, fd: int, start: int, hasher: Hasher | None) -> None:
        self.fd, self.offset, self.hasher = fd, start, hasher
        self.received = 0

    def buffer(self, limit: int) -> memoryview:
        return thread_buffer()[: min(limit, DIRECT_CHUNK)]

    def filled(self, n: int) -> None:
        view = thread_buffer()
        if self.hasher is not None:
            self.hasher.update(view[:n])
        # An unaligned count comes only at the file's end (padded here, truncated away before the file is named)
        # or from a response cut short, whose range the count check in Source.fetch then retries whole.
        length = aligned(n)
        view[n:length] = bytes(length - n)
        write_direct(self.fd, view[:length], self.offset)
        self.offset += n
        self.received += n

    def feed(self, data: bytes) -> None:
        """Bytes from a source that hands them over (a local or mounted one): staged through the buffer."""
        done = 0
        while done < len(data):
            view = self.buffer(len(data) - done)
            view[:] = data[done : done + len(view)]
            self.filled(len(view))
            done += len(view)

    def digest(self) -> bytes:
        return self.hasher.digest() if self.hasher is not None else b""


# -- placement -------------------------------------------------------------------------------------------------


class Writer:
    """Atomic placement of files below one root, refusing to pass through links or non-folders.

    Args:
        root: The destination root.
        fsync: Make every file durable before it gets its final name.
        direct: Durable writes may use O_DIRECT (only with ``fsync``: without it nothing waits for the disk).
    """

    def __init__(self, root: Path, fsync: bool, direct: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.direct = fsync and direct
        self._ready: set[str] = set()

    def parent(self, rel: str) -> Path:
        """Create the folders of ``rel`` one by one; a symlink on the way is refused, not followed."""
        parts = rel.split("/")[:-1]
        cur = self.root
        for i, part in enumerate(parts):
            cur = cur / part
            key = "/".join(parts[: i + 1])
            if key in self._ready:
                continue
            try:
                os.mkdir(cur)
            except FileExistsError:
                st = os.lstat(cur)
                if stat.S_ISLNK(st.st_mode):
                    raise HostileKeyError(f"{key!r} is a symbolic link under the root; not following it") from None
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(f"{key!r} exists under the root and is not a folder") from None
            self._ready.add(key)
        return cur

    def temp_for(self, rel: str) -> Path:
        return self.parent(rel) / f"{TEMP_PREFIX}{uuid.uuid4().hex}"

    def place(self, fd: int, tmp: Path, rel: str) -> int:
        """fsync (if asked), close and rename ``tmp`` over ``rel``; returns the file's mtime_ns."""
        try:
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return self.rename(tmp, rel)

    def rename(self, tmp: Path, rel: str) -> int:
        """Give a finished temporary its final name; returns the file's mtime_ns (what the manifest records).

        The rename goes through the descriptor of ``rel``'s folder, walked afresh from the root without following
        a link (a few ``openat`` calls, next to a rename and its journal commit): a folder replaced by a link
        since :meth:`parent` checked it never receives the file.

        Raises:
            SymlinkRefusedError: a folder on the way is a symbolic link now (the temporary stays for the caller to
                discard).
        """
        with ConfinedRoot(self.root) as tree:
            fd, name = tree.folder(rel)
            os.rename(tmp.name, name, src_dir_fd=fd, dst_dir_fd=fd)
            return os.lstat(name, dir_fd=fd).st_mtime_ns

    def write_temp(
        self,
        rel: str,
        chunks: Sequence[Buffer],
        check: Callable[[Sequence[Buffer]], None],
        padded: memoryview | None = None,
    ) -> Path:
        """Check a small object's bytes (held in memory) and write them to a temporary, not yet synced: one
        thread hop; :class:`GroupSync` makes it durable and places it. ``padded``, the same bytes in aligned
        memory with zeros up to an aligned length (:meth:`Held.padded`), lets a durable write go with O_DIRECT:
        the group's syncfs then commits metadata only, where through the page cache it would also write every
        file's data back."""
        check(chunks)
        tmp = self.temp_for(rel)
        fd, direct = open_temp(tmp, self.direct and padded is not None)
        try:
            try:
                if direct:
                    assert padded is not None
                    size = sum(len(c) for c in chunks)
                    write_direct(fd, padded, 0)
                    if len(padded) != size:
                        os.ftruncate(fd, size)
                else:
                    pwritev_all(fd, chunks, 0)
            finally:
                os.close(fd)
        except BaseException:
            discard(tmp)
            raise
        return tmp

    def rename_all(self, batch: list[tuple[Path, str]]) -> list[int | BaseException]:
        """Rename temporaries into place; each one's mtime_ns, or the error that stopped it."""
        out: list[int | BaseException] = []
        for tmp, rel in batch:
            try:
                out.append(self.rename(tmp, rel))
            except (OSError, RegionPathError) as exc:  # a link on the way fails its own file, not the group
                discard(tmp)
                out.append(exc)
        return out

    def sync_fs(self) -> None:
        """Flush the destination file system: every temporary written so far becomes durable at once."""
        if self.fsync:
            syncfs(self.root)


async def finish_in_thread(
    executor: concurrent.futures.Executor | None, func: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run ``func`` in a thread of ``executor``; if cancelled, wait for the thread before re-raising, so a file
    descriptor is never closed (and its number reused) while a thread still writes through it."""
    call = functools.partial(func, *args, **kwargs) if kwargs else func
    future = asyncio.get_running_loop().run_in_executor(executor, call, *(() if kwargs else args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


class GroupSync:
    """Durability for many small files at the price of one: their temporaries are written unsynced, then one
    syncfs() of the destination (one journal commit) precedes all their renames. A group closes when every
    request slot waits on it or after ``delay`` seconds, so a slow trickle still lands promptly.

    Args:
        writer: Places the files (and flushes their file system).
        max_files: Files at most in one group: the request slots, which all wait on the group when it is full.
        executor: The threads the flush and the renames run in.
        delay: Seconds at most a group stays open for more files.
    """

    def __init__(
        self, writer: Writer, max_files: int, executor: concurrent.futures.Executor, delay: float = 0.02
    ) -> None:
        self.writer, self.max_files, self.executor, self.delay = writer, max_files, executor, delay
        self.pending: list[tuple[Path, str, asyncio.Future[int]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._commits: set[asyncio.Task[None]] = set()

    async def place(self, tmp: Path, rel: str) -> int:
        """Wait until ``tmp`` is durable and renamed over ``rel``; returns the file's mtime_ns."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self.pending.append((tmp, rel, future))
        if len(self.pending) >= self.max_files:
            self._close_group()
        elif self._timer is None:
            self._timer = loop.call_later(self.delay, self._close_group)
        return await future

    def _close_group(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self.pending = self.pending, []
        if group:
            task = asyncio.get_running_loop().create_task(self._commit(group))
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)

    async def _commit(self, group: list[tuple[Path, str, asyncio.Future[int]]]) -> None:
        try:
            await finish_in_thread(self.executor, self.writer.sync_fs)
            outcomes: list[int | BaseException] = await finish_in_thread(
                self.executor, self.writer.rename_all, [(tmp, rel) for tmp, rel, _ in group]
            )
        except BaseException as exc:  # not durable: nothing of this group goes under a final name
            for tmp, _, _ in group:
                discard(tmp)
            outcomes = [exc] * len(group)
        for (_, _, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
