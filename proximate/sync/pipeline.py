"""The transfer: planned objects fetched into the root, many at once, each atomically, one failure never
stopping the rest.

An object no larger than a block is received whole into its reading thread's buffer, checked, written to a
temporary and made durable with its group (:class:`~proximate.sync.durable.GroupSync`). A larger one is streamed:
one ranged GET per part (each part hashed as it arrives, written at its offset as it arrives), never held
whole, then fsynced and renamed. Memory is so bounded by about ``concurrency * block_size``.

The event loop plans (HEADs, signing) and commits (groups, manifest); the bytes themselves are received, hashed
and written by the source's reading threads, one per request slot, in one hop per object or part. The rest of
the file work (small writes, fsyncs, renames) runs in the pipeline's own file threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from proximate.sync.checksums import ChecksumError, Expected, choose
from proximate.sync.durable import (
    DIRECT_ALIGN,
    Buffer,
    Detached,
    DirectRangeWriter,
    GroupSync,
    Held,
    RangeWriter,
    Writer,
    discard,
    finish_in_thread,
    open_temp,
)
from proximate.sync.manifest import Entry, Manifest
from proximate.sync.result import SyncResult
from proximate.sync.retry import describe
from proximate.sync.sources import ColdObjectError, ObjectAddress, RemoteObject, Source

log = logging.getLogger("proximate.sync")

#: Called with (objects done, objects planned, bytes done, bytes planned), at most every PROGRESS_EVERY s.
Progress = Callable[[int, int, int, int], None]
PROGRESS_EVERY = 0.5
#: Threads for file work, one per core: more only fight the event loop for the GIL.
FILE_THREADS = max(2, os.cpu_count() or 2)
#: Downloads per object: a checksum mismatch gets one fresh download; transient faults retry per request.
ATTEMPTS = 2
#: Workers per request slot. More workers than slots: a worker whose file waits for its group to be made
#: durable must not hold a slot, or every group would drain the pipeline before it closes.
WORKERS_PER_SLOT = 4
#: Objects finished between two chances for the manifest to compact its journal.
COMPACT_EVERY = 1000


@dataclass
class Counters:
    """How far a transfer has come: objects and bytes planned and finished (landed or failed), and when that was
    last reported."""

    planned: int = 0
    planned_bytes: int = 0
    done: int = 0
    bytes: int = 0
    reported_at: float = 0.0


@dataclass(frozen=True)
class WholeCheck:
    """A check of a small object's bytes against the checksum its GET answered with (or its MD5 ETag); with a
    part-wise checksum, ``part_size`` says where the parts end. Nothing to check without ``expected``."""

    obj: RemoteObject
    expected: Expected | None
    part_size: int | None = None

    def __call__(self, chunks: Sequence[Buffer]) -> None:
        expected = self.expected
        if expected is None:
            return
        if not expected.parts:
            h = expected.new()
            for c in chunks:
                h.update(c)
            digests = [h.digest()]
        else:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            step = self.part_size or max(1, len(data))
            digests = []
            for start in range(0, max(1, len(data)), step):
                h = expected.new()
                h.update(data[start : start + step])
                digests.append(h.digest())
        expected.verify(self.obj.path, digests)


@dataclass(frozen=True)
class TransferSettings:
    """How a transfer runs (see :func:`~proximate.sync.transfer`, whose parameters these are).

    Attributes:
        concurrency: Requests at once (the source's reading threads serve them).
        block_size: Objects up to this size are held whole; larger ones stream, one range per part or block.
        fsync: Make every file durable before it gets its final name.
        verify: Check bytes against the checksum the store keeps (size is always checked).
        direct: Durable writes may use O_DIRECT where the file system allows it.
        progress: Called with progress now and then (see :data:`Progress`).
    """

    concurrency: int
    block_size: int
    fsync: bool
    verify: bool
    direct: bool
    progress: Progress | None = None


def segments(size: int, step: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of ``step`` bytes (the last one shorter) covering ``size`` bytes."""
    return [(start, min(size, start + step)) for start in range(0, size, step)]


class TransferPipeline:
    """One transfer of planned objects from an open source into the root of ``result``; use once, by :meth:`run`.

    Args:
        src: The open source.
        result: Where the outcome goes (``dest_root`` is the root; counts and failures are added).
        new: Keys not in the manifest before (counted in ``result.new`` when they land).
        settings: How to run.
    """

    def __init__(self, src: Source, result: SyncResult, new: Iterable[str], settings: TransferSettings) -> None:
        self.src, self.result, self.settings = src, result, settings
        self.new = set(new)
        self.root = Path(result.dest_root)
        #: Threads for file work (small writes, fsyncs, renames), owned here and shut down when :meth:`run` ends.
        self.files = concurrent.futures.ThreadPoolExecutor(
            max_workers=FILE_THREADS, thread_name_prefix="proximate-sync"
        )
        self.writer = Writer(self.root, settings.fsync, settings.direct)
        self.group_sync = GroupSync(self.writer, max_files=max(1, settings.concurrency), executor=self.files)
        self.requests = asyncio.Semaphore(settings.concurrency)
        self.counters = Counters()
        self._manifest: Manifest | None = None

    async def run(self, objects: list[RemoteObject]) -> None:
        """Fetch ``objects``, journaling each one that lands; failures go to ``result.failed``."""
        self.counters = Counters(planned=len(objects), planned_bytes=sum(o.size for o in objects))
        workers = WORKERS_PER_SLOT * max(1, self.settings.concurrency)
        todo = iter(objects)
        try:
            with Manifest(self.root, self.result.source_url) as self._manifest:
                await asyncio.gather(*(self._worker(todo) for _ in range(workers)))
                self._report(force=True)
        finally:
            self._manifest = None
            self.files.shutdown(wait=True)

    def _report(self, force: bool = False) -> None:
        progress, counters, now = self.settings.progress, self.counters, time.monotonic()
        if progress is not None and (force or now - counters.reported_at >= PROGRESS_EVERY):
            counters.reported_at = now
            progress(counters.done, counters.planned, counters.bytes, counters.planned_bytes)

    async def _worker(self, todo: Iterator[RemoteObject]) -> None:
        for obj in todo:
            await self._one(obj)

    async def _one(self, obj: RemoteObject) -> None:
        fetch = self._fetch_small if obj.size <= self.settings.block_size else self._fetch_large
        for attempt in range(ATTEMPTS):
            try:
                mtime, checked = await fetch(obj)
            except Exception as exc:
                if isinstance(exc, ExceptionGroup):
                    exc = _telling(exc)
                if isinstance(exc, ChecksumError) and attempt + 1 < ATTEMPTS:
                    continue
                if isinstance(exc, ColdObjectError):  # archived where the listing did not say so (Intelligent-Tiering)
                    log.warning("skipped cold object %r: %s", obj.path, exc)
                    self.result.cold.append(obj.path)
                    break
                self.result.failed.append([obj.path, self._reason(obj, exc)])
                break
            self._landed(obj, mtime)
            if not checked and self.settings.verify:
                self.result.size_only.append(obj.path)
            break
        self.counters.done += 1
        self.counters.bytes += obj.size
        if self.counters.done % COMPACT_EVERY == 0:
            assert self._manifest is not None
            self._manifest.maybe_compact()
        self._report()

    def _reason(self, obj: RemoteObject, exc: BaseException) -> str:
        """The failure as reported: a full disk names the file it could not write (the system call's error names
        no path, and the temporary's name would mean nothing to a reader)."""
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{describe(exc)} (writing {self.root / obj.rel})"
        return describe(exc)

    def _landed(self, obj: RemoteObject, mtime: int) -> None:
        assert self._manifest is not None
        self._manifest.record_put(obj.rel, Entry(obj.size, obj.fingerprint, mtime))
        self.result.transferred += 1
        self.result.bytes_transferred += obj.size
        self.result.changed.append(obj.rel)
        if obj.rel in self.new:
            self.result.new += 1

    # -- objects held whole ------------------------------------------------------------------------------------

    def _receive_small(
        self, obj: RemoteObject, address: ObjectAddress | None
    ) -> tuple[Path | None, Detached | None, Expected | None]:
        """Fetch, check and write a small object in one thread hop; leaves the temporary unwritten (None) when
        a part-wise checksum needs the part size first (a HEAD, asked from the loop), with the bytes copied out."""
        sink, headers = self.src.fetch(obj, 0, obj.size, functools.partial(Held, obj.size), address=address)
        expected = choose(headers, obj.etag, multipart=False) if self.settings.verify else None
        if expected is not None and expected.parts and expected.parts > 1:
            return None, sink.detach(), expected
        return self.writer.write_temp(obj.rel, sink.chunks, WholeCheck(obj, expected), sink.padded()), None, expected

    async def _fetch_small(self, obj: RemoteObject) -> tuple[int, bool]:
        """Fetch a small object; returns its file's mtime_ns and whether a checksum (not only its size) was
        checked."""
        async with self.requests:
            address = await self.src.address(obj)
            tmp, held, expected = await finish_in_thread(self.src.threads, self._receive_small, obj, address)
        if tmp is None:
            assert held is not None
            part_size = await self.src.part_size(obj, expected.parts if expected else None)
            if part_size is None:
                expected = None  # the store cannot say where parts end: size is all that can be checked
            check = WholeCheck(obj, expected, part_size)
            tmp = await finish_in_thread(self.files, self.writer.write_temp, obj.rel, held.chunks, check)
        return await self.group_sync.place(tmp, obj.rel), expected is not None

    # -- objects streamed in ranges ----------------------------------------------------------------------------

    async def _plan_large(self, obj: RemoteObject) -> tuple[Expected | None, list[tuple[int, int]]]:
        """What to check a big object against and how to split it: by part for a part-wise checksum (each part
        hashed as it streams), one stream for a whole-object one, blocks when there is nothing to check."""
        if not self.settings.verify:
            return None, segments(obj.size, self.settings.block_size)
        expected = choose(await self.src.checksum_headers(obj), obj.etag, multipart=bool(obj.parts))
        if expected is None:
            return None, segments(obj.size, self.settings.block_size)
        if not expected.parts:
            return expected, [(0, obj.size)]
        part_size = await self.src.part_size(obj, expected.parts) if expected.parts > 1 else obj.size
        if not part_size or -(-obj.size // part_size) != expected.parts:
            return None, segments(obj.size, self.settings.block_size)
        return expected, segments(obj.size, part_size)

    async def _fetch_large(self, obj: RemoteObject) -> tuple[int, bool]:
        """Stream a big object in; returns its file's mtime_ns and whether a checksum was checked."""
        expected, ranges = await self._plan_large(obj)
        address = await self.src.address(obj)
        loop = asyncio.get_running_loop()
        tmp = await loop.run_in_executor(self.files, self.writer.temp_for, obj.rel)
        # Durable big files bypass the page cache when every range starts on an aligned offset (see
        # DirectRangeWriter); otherwise, or where the file system has no direct I/O, they go through it.
        fd, direct = open_temp(tmp, self.writer.direct and all(start % DIRECT_ALIGN == 0 for start, _ in ranges))
        fd_open, placed = True, False
        try:
            if direct:
                os.ftruncate(fd, obj.size)  # writes inside the file's size, not extending it one by one
            async with asyncio.TaskGroup() as tg:
                parts = [
                    tg.create_task(self._fetch_range(obj, address, fd, start, end, expected, direct))
                    for start, end in ranges
                ]
            if direct:
                os.ftruncate(fd, obj.size)  # drop the padding of the last block
            size = os.fstat(fd).st_size
            if size != obj.size:
                raise ChecksumError(f"{obj.path!r} came out {size} bytes, the source says {obj.size}")
            if expected is not None:
                expected.verify(obj.path, [part.result() for part in parts])
            fd_open = False  # place() closes it, whatever happens
            mtime = await finish_in_thread(self.files, self.writer.place, fd, tmp, obj.rel)
            placed = True
            return mtime, expected is not None
        finally:
            if not placed:
                if fd_open:
                    os.close(fd)
                discard(tmp)

    async def _fetch_range(
        self,
        obj: RemoteObject,
        address: ObjectAddress | None,
        fd: int,
        start: int,
        end: int,
        expected: Expected | None,
        direct: bool,
    ) -> bytes:
        """Stream bytes ``[start, end)`` of ``obj`` into ``fd`` at their offset; returns the range's digest."""
        begin = functools.partial(self._range_sink, fd, start, expected, direct)
        async with self.requests:
            sink, _ = await finish_in_thread(self.src.threads, self.src.fetch, obj, start, end, begin, address=address)
            return sink.digest()

    def _range_sink(
        self, fd: int, start: int, expected: Expected | None, direct: bool
    ) -> RangeWriter | DirectRangeWriter:
        """A fresh sink for one attempt at a range (a retry starts over, hasher included)."""
        hasher = expected.new() if expected else None
        if direct:
            return DirectRangeWriter(fd, start, hasher)
        return RangeWriter(fd, start, hasher, writeback=self.settings.fsync)


def _telling(group: BaseExceptionGroup) -> BaseException:
    """The error of a multi-range read to report: the store's own answer (an HTTP status, a checksum, a cold
    object) over a connection error another range met meanwhile, whichever finished first."""
    from proximate.sync.sources.s3 import S3ReadError

    leaves = list(_leaves(group))
    for kind in (ColdObjectError, ChecksumError, S3ReadError):
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return leaves[0]


def _leaves(group: BaseExceptionGroup):
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
