"""Mirror a source tree into a local root: plan (list and diff), transfer (parallel, atomic), finish (delete).

Every file is written under a temporary name in its own folder, checked (size; MD5 where the ETag is one, or
the multipart ETag recomputed from the part size the store reports), fsynced and renamed into place, then
journaled. A kill at any point leaves only temporaries (removed by the next run) and complete files.
Memory is bounded by ``concurrency * block_size``: an object larger than a block is fetched as concurrent
ranged reads written with ``os.pwrite``, never held whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import stat
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from proximate.sync.keys import STATE_DIR, TEMP_PREFIX, HostileKeyError, safe_relative_path
from proximate.sync.manifest import Entry, Manifest
from proximate.sync.result import SyncResult
from proximate.sync.source import ChecksumError, RemoteObject, Source, describe

T = TypeVar("T")
MiB = 2**20
DEFAULT_CONCURRENCY = 16
DEFAULT_BLOCK_SIZE = 8 * MiB
#: Called with (objects done, objects planned, bytes done, bytes planned), at most every PROGRESS_EVERY s.
Progress = Callable[[int, int, int, int], None]
PROGRESS_EVERY = 0.5


@dataclass
class SyncPlan:
    """The diff between the source listing and the manifest: what to fetch, what is gone, what was refused."""

    source_url: str
    dest_root: str
    listed: int = 0
    fetch: list[RemoteObject] = field(default_factory=list)
    new: set[str] = field(default_factory=set)
    skipped: int = 0
    gone: list[str] = field(default_factory=list)
    refused: list[list[str]] = field(default_factory=list)
    temp_files_removed: int = 0

    @property
    def bytes_to_fetch(self) -> int:
        return sum(o.size for o in self.fetch)

    def result(self) -> SyncResult:
        """The part of the run's result known before anything moves."""
        return SyncResult(
            source_url=self.source_url,
            dest_root=self.dest_root,
            listed=self.listed,
            skipped=self.skipped,
            failed=[list(f) for f in self.refused],
            temp_files_removed=self.temp_files_removed,
        )

    def batches(self, max_objects: int = 2000, max_bytes: int = 4 * 2**30) -> list[list[RemoteObject]]:
        """Split ``fetch`` into coarse batches (one Prefect task each)."""
        out: list[list[RemoteObject]] = []
        cur: list[RemoteObject] = []
        size = 0
        for obj in self.fetch:
            if cur and (len(cur) >= max_objects or size + obj.size > max_bytes):
                out.append(cur)
                cur, size = [], 0
            cur.append(obj)
            size += obj.size
        if cur:
            out.append(cur)
        return out


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def remove_temp_files(root: Path) -> int:
    """Delete temporaries a killed run left behind (never follows links, never enters the state folder)."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root) and STATE_DIR in dirnames:
            dirnames.remove(STATE_DIR)
        for name in filenames:
            if name.startswith(TEMP_PREFIX):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _unchanged_on_disk(path: Path, entry: Entry) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns


# -- plan ------------------------------------------------------------------------------------------------------


async def _plan(src: Source, root: Path) -> SyncPlan:
    plan = SyncPlan(source_url=src.url, dest_root=str(root))
    with Manifest(root, src.url) as manifest:
        plan.temp_files_removed = remove_temp_files(root)
        objects = await src.list()
        seen: set[str] = set()
        for path, rel, size, fingerprint, etag in objects:
            if size == 0 and (rel == "" or rel.endswith("/")):
                continue  # a folder marker, not data
            plan.listed += 1
            try:
                safe_relative_path(rel)
            except HostileKeyError as exc:
                plan.refused.append([path, f"refused: {exc}"])
                continue
            seen.add(rel)
            entry = manifest.entries.get(rel)
            if (
                entry is not None
                and entry.size == size
                and entry.fingerprint == fingerprint
                and _unchanged_on_disk(root / rel, entry)
            ):
                plan.skipped += 1
                continue
            if entry is None:
                plan.new.add(rel)
            plan.fetch.append(RemoteObject(path=path, rel=rel, size=size, fingerprint=fingerprint, etag=etag))
        plan.gone = sorted(rel for rel in manifest.entries if rel not in seen)
    return plan


def plan_sync(
    source_url: str,
    dest_root: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    retries: int = 4,
    backoff: float = 0.25,
) -> SyncPlan:
    """List the source once and compare with the manifest; refuse hostile keys; clean old temporaries.

    Raises :class:`~proximate.sync.source.SourceError` when the source cannot be listed; nothing is written.
    """
    root = Path(dest_root)
    root.mkdir(parents=True, exist_ok=True)

    async def go() -> SyncPlan:
        async with Source(source_url, storage_options, retries=retries, backoff=backoff) as src:
            return await _plan(src, root)

    return _run(go())


# -- transfer --------------------------------------------------------------------------------------------------


class _Writer:
    """Atomic placement of files below one root, refusing to pass through links or non-folders."""

    def __init__(self, root: Path, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
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
        final = self.root / rel
        os.rename(tmp, final)
        return os.lstat(final).st_mtime_ns

    def write_small(self, rel: str, data: bytes, check: Callable[[Callable[[int, int], bytes]], None]) -> int:
        view = memoryview(data)
        check(lambda off, n: view[off : off + n])
        tmp = self.temp_for(rel)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            while view:
                view = view[os.write(fd, view) :]
            return self.place(fd, tmp, rel)
        except BaseException:
            _discard(tmp)
            raise


def _discard(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


async def _finish_in_thread(func: Callable[..., T], *args: Any) -> T:
    """Run ``func`` in a thread; if cancelled, wait for the thread before re-raising, so a file descriptor is
    never closed (and its number reused) while a thread still writes through it."""
    future = asyncio.get_running_loop().run_in_executor(None, func, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _checker(obj: RemoteObject, part_size: int | None, verify: bool) -> Callable[[Callable[[int, int], bytes]], None]:
    """A check of the bytes against the ETag: plain MD5, or the multipart MD5-of-part-MD5s when parts are known."""

    def check(read_at: Callable[[int, int], bytes]) -> None:
        if not verify:
            return
        chunk = 8 * MiB
        if obj.md5:
            h = hashlib.md5()
            for off in range(0, obj.size, chunk):
                h.update(read_at(off, min(chunk, obj.size - off)))
            if h.hexdigest() != obj.md5:
                raise ChecksumError(f"MD5 of {obj.path!r} is {h.hexdigest()}, its ETag says {obj.md5}")
        elif obj.parts and part_size:
            digests = []
            for start in range(0, obj.size, part_size):
                h = hashlib.md5()
                end = min(obj.size, start + part_size)
                for off in range(start, end, chunk):
                    h.update(read_at(off, min(chunk, end - off)))
                digests.append(h.digest())
            got = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
            if got != obj.etag:
                raise ChecksumError(f"multipart checksum of {obj.path!r} is {got}, its ETag says {obj.etag}")

    return check


async def _transfer(
    src: Source,
    objects: list[RemoteObject],
    result: SyncResult,
    *,
    new: Iterable[str],
    concurrency: int,
    block_size: int,
    fsync: bool,
    verify: bool,
    progress: Progress | None,
) -> None:
    # File work (write, fsync, hash) runs in threads: as many as requests in flight, so fsyncs overlap.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=concurrency + 2, thread_name_prefix="proximate-sync")
    )
    root = Path(result.dest_root)
    new_set = set(new)
    writer = _Writer(root, fsync)
    requests = asyncio.Semaphore(concurrency)
    todo = iter(objects)
    total_bytes = sum(o.size for o in objects)
    state = {"done": 0, "bytes": 0, "last": 0.0}

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if progress is not None and (force or now - state["last"] >= PROGRESS_EVERY):
            state["last"] = now
            progress(state["done"], len(objects), state["bytes"], total_bytes)

    async def fetch_small(obj: RemoteObject, check: Callable) -> int:
        async with requests:
            data = await src.read(obj, 0, obj.size)
            return await asyncio.to_thread(writer.write_small, obj.rel, data, check)

    async def fetch_large(obj: RemoteObject, check: Callable) -> int:
        tmp = await asyncio.to_thread(writer.temp_for, obj.rel)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fd_open, placed = True, False
        try:

            async def block(start: int) -> None:
                async with requests:
                    data = await src.read(obj, start, min(obj.size, start + block_size))
                    await _finish_in_thread(_pwrite_all, fd, data, start)

            async with asyncio.TaskGroup() as tg:
                for start in range(0, obj.size, block_size):
                    tg.create_task(block(start))
            size = os.fstat(fd).st_size
            if size != obj.size:
                raise ChecksumError(f"{obj.path!r} came out {size} bytes, the source says {obj.size}")
            await _finish_in_thread(check, lambda off, n: os.pread(fd, n, off))
            fd_open = False  # place() closes it, whatever happens
            mtime = await _finish_in_thread(writer.place, fd, tmp, obj.rel)
            placed = True
            return mtime
        finally:
            if not placed:
                if fd_open:
                    os.close(fd)
                _discard(tmp)

    async def one(obj: RemoteObject) -> None:
        attempts = 2  # a checksum mismatch gets one fresh download; transient faults retry per request
        for attempt in range(attempts):
            try:
                part_size = await src.part_size(obj) if (verify and obj.parts) else None
                check = _checker(obj, part_size, verify)
                if obj.size <= block_size:
                    mtime = await fetch_small(obj, check)
                else:
                    mtime = await fetch_large(obj, check)
            except Exception as exc:
                if isinstance(exc, ExceptionGroup):
                    exc = exc.exceptions[0]
                if isinstance(exc, ChecksumError) and attempt + 1 < attempts:
                    continue
                result.failed.append([obj.path, describe(exc)])
                break
            manifest.record_put(obj.rel, Entry(obj.size, obj.fingerprint, mtime))
            result.transferred += 1
            result.bytes_transferred += obj.size
            result.changed.append(obj.rel)
            if obj.rel in new_set:
                result.new += 1
            break
        state["done"] += 1
        state["bytes"] += obj.size
        if state["done"] % 1000 == 0:
            manifest.maybe_compact()
        report()

    async def worker() -> None:
        for obj in todo:
            await one(obj)

    with Manifest(root, result.source_url) as manifest:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        report(force=True)


def transfer(
    objects: list[RemoteObject],
    source_url: str,
    dest_root: str | os.PathLike[str],
    *,
    new: Iterable[str] = (),
    storage_options: dict[str, Any] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    block_size: int = DEFAULT_BLOCK_SIZE,
    retries: int = 4,
    backoff: float = 0.25,
    fsync: bool = True,
    verify: bool = True,
    progress: Progress | None = None,
) -> SyncResult:
    """Fetch ``objects`` (from :func:`plan_sync`) into the root; one object's failure never stops the rest."""
    t0 = time.monotonic()
    result = SyncResult(source_url=source_url, dest_root=str(Path(dest_root)))

    async def go() -> None:
        async with Source(
            source_url, storage_options, concurrency=concurrency, retries=retries, backoff=backoff
        ) as src:
            await _transfer(
                src,
                objects,
                result,
                new=new,
                concurrency=concurrency,
                block_size=block_size,
                fsync=fsync,
                verify=verify,
                progress=progress,
            )

    if objects:
        _run(go())
    result.seconds = time.monotonic() - t0
    return result


# -- finish ----------------------------------------------------------------------------------------------------


def _prune_empty_parents(root: Path, path: Path) -> None:
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            os.rmdir(parent)
        except OSError:
            return
        parent = parent.parent


def finish_sync(plan: SyncPlan, *, delete: bool = False) -> SyncResult:
    """With ``delete``, remove files whose objects are gone, but only files this sync wrote and nobody has
    touched since (same size and mtime as recorded); then compact the manifest."""
    t0 = time.monotonic()
    root = Path(plan.dest_root)
    result = SyncResult(source_url=plan.source_url, dest_root=plan.dest_root)
    with Manifest(root, plan.source_url) as manifest:
        if delete:
            for rel in plan.gone:
                entry = manifest.entries.get(rel)
                if entry is None:
                    continue
                path = root / rel
                if _unchanged_on_disk(path, entry):
                    os.unlink(path)
                    _prune_empty_parents(root, path)
                    result.deleted += 1
                    result.deleted_paths.append(rel)
                elif not os.path.lexists(path):
                    result.deleted_paths.append(rel)
                # else: replaced by someone else since; leave their file, forget ours.
                manifest.record_delete(rel)
        if manifest.journal_lines:
            manifest.compact()
    result.seconds = time.monotonic() - t0
    return result


def sync(
    source_url: str,
    dest_root: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    delete: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    block_size: int = DEFAULT_BLOCK_SIZE,
    retries: int = 4,
    backoff: float = 0.25,
    fsync: bool = True,
    verify: bool = True,
    progress: Progress | None = None,
) -> SyncResult:
    """Mirror the fsspec tree at ``source_url`` into ``dest_root``; see the module docstring for guarantees.

    Raises :class:`~proximate.sync.source.SourceError` if the source cannot be listed; per-object failures
    (refused keys, server faults, checksum mismatches) are collected in ``result.failed`` instead.
    """
    t0 = time.monotonic()
    root = Path(dest_root)
    root.mkdir(parents=True, exist_ok=True)

    async def go() -> tuple[SyncPlan, SyncResult]:
        # One client for listing and transfer: building an S3 client costs a noticeable share of a small run.
        async with Source(
            source_url, storage_options, concurrency=concurrency, retries=retries, backoff=backoff
        ) as src:
            plan = await _plan(src, root)
            fetched = SyncResult(source_url=source_url, dest_root=str(root))
            if plan.fetch:
                await _transfer(
                    src,
                    plan.fetch,
                    fetched,
                    new=plan.new,
                    concurrency=concurrency,
                    block_size=block_size,
                    fsync=fsync,
                    verify=verify,
                    progress=progress,
                )
            return plan, fetched

    plan, fetched = _run(go())
    result = plan.result().merge(fetched)
    result.merge(finish_sync(plan, delete=delete))
    result.seconds = time.monotonic() - t0
    return result
