"""Mirror a source tree into a local root: plan (list and diff), transfer (parallel, atomic), finish (delete).

Every file is written under a temporary name in its own folder, checked against the cheapest checksum the
store offers (see :mod:`proximate.sync.checksums`: a CRC or SHA stored with the object, else the MD5 or multipart
ETag) and its size, made durable, renamed into place, then journaled. A kill at any point leaves only
temporaries (removed by the next run) and complete files. How files are made durable is
:mod:`proximate.sync.durable`'s; how objects move, :mod:`proximate.sync.pipeline`'s; where they come from,
:mod:`proximate.sync.sources`'; the plan and the deletes, :mod:`proximate.sync.plan`'s.

Each entry point here opens one source for its run (:func:`run_with_source`) and runs its steps in it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from proximate.sync.backlog import add_to_backlog
from proximate.sync.durable import direct_wanted
from proximate.sync.pipeline import Progress, TransferPipeline, TransferSettings
from proximate.sync.plan import DEFAULT_MAX_DELETE_SHARE, SyncPlan, finish_sync, plan_from
from proximate.sync.result import SyncResult
from proximate.sync.runlock import hold_run
from proximate.sync.sources import RemoteObject, Source, open_source

T = TypeVar("T")
MiB = 2**20
DEFAULT_CONCURRENCY = 16
DEFAULT_BLOCK_SIZE = 8 * MiB
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 0.25


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _in_source(
    work: Callable[[Source], Awaitable[T]],
    source_url: str,
    storage_options: dict[str, Any] | None,
    concurrency: int,
    retries: int,
    backoff: float,
) -> T:
    async with open_source(
        source_url, storage_options, concurrency=concurrency, retries=retries, backoff=backoff
    ) as src:
        return await work(src)


def run_with_source(
    work: Callable[[Source], Awaitable[T]],
    source_url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
) -> T:
    """Open the source at ``source_url``, await ``work(source)`` and close the source, from sync code.

    Args:
        work: What to do with the open source.
        source_url: The source (see :func:`~proximate.sync.sources.open_source`).
        storage_options: Its storage options.
        concurrency: Its request slots.
        retries: Retries of a transient fault, per request.
        backoff: Seconds of the first retry's backoff.

    Returns:
        What ``work`` returned.
    """
    return _run(_in_source(work, source_url, storage_options, concurrency, retries, backoff))


def plan_sync(
    source_url: str,
    dest_root: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
) -> SyncPlan:
    """List the source once and compare with the manifest; refuse hostile keys; clean old temporaries.

    Args:
        source_url: ``s3://bucket/prefix`` or any fsspec URL (``file:///staging``, ...).
        dest_root: The local root; created if missing.
        storage_options: s3fs-style options for S3 (``key``, ``secret``, ``token``, ``anon``, ``profile``,
            ``endpoint_url``, ``client_kwargs``, ``config_kwargs``, ...), the file system's options otherwise.
        retries: Retries of a transient listing fault, per request.
        backoff: Seconds of the first retry's backoff (doubled each time, with jitter).

    Returns:
        The plan: what to fetch (and which of it is new), what is gone, what was refused and why.

    Raises:
        SourceError: The source cannot be listed; nothing is written.
        SyncLockedError: Another sync holds the root's manifest.

    Examples:
        >>> plan = plan_sync("s3://bucket/era5/", "/fsx/eu-west-2", storage_options={"anon": True})
    """
    root = Path(dest_root)
    root.mkdir(parents=True, exist_ok=True)

    async def plan(src: Source) -> SyncPlan:
        return await plan_from(src, root)

    return run_with_source(plan, source_url, storage_options, retries=retries, backoff=backoff)


def transfer(
    objects: list[RemoteObject],
    source_url: str,
    dest_root: str | os.PathLike[str],
    *,
    new: Iterable[str] = (),
    storage_options: dict[str, Any] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    block_size: int = DEFAULT_BLOCK_SIZE,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    fsync: bool = True,
    verify: bool = True,
    progress: Progress | None = None,
    direct: bool | None = None,
) -> SyncResult:
    """Fetch ``objects`` (from :func:`plan_sync`) into the root; one object's failure never stops the rest.

    Args:
        objects: What to fetch (a plan's ``fetch``, or one of its batches).
        source_url: The source the plan listed.
        dest_root: The local root the plan was made for.
        new: Keys not in the manifest before (a plan's ``new``): counted in ``result.new`` when they land.
        storage_options: The source's options (see :func:`plan_sync`).
        concurrency: Requests at once; memory stays near ``concurrency * block_size``.
        block_size: Objects up to this size are fetched in one GET and held; larger ones stream in ranges (one
            per part of a multipart upload, else of this size).
        retries: Retries of a transient fault, per request; a checksum mismatch also gets one fresh download.
        backoff: Seconds of the first retry's backoff (doubled each time, with jitter).
        fsync: Make every file durable before it gets its final name (off: faster, not crash-safe).
        verify: Check bytes against the checksum the store keeps (size is always checked).
        progress: Called with (objects done, objects planned, bytes done, bytes planned) every half second or so,
            and once at the end.
        direct: Whether durable writes may bypass the page cache (O_DIRECT) where the file system allows it;
            None reads ``PROXIMATE_SYNC_DIRECT`` now (``0`` turns it off; on otherwise).

    Returns:
        The result: counts, bytes, ``changed`` keys and ``failed`` ``[key, reason]`` pairs.

    Raises:
        SourceError: An S3 source URL names no bucket.
        SyncLockedError: Another sync holds the root's manifest.
    """
    t0 = time.monotonic()
    result = SyncResult(source_url=source_url, dest_root=str(Path(dest_root)))
    settings = TransferSettings(concurrency, block_size, fsync, verify, direct_wanted(direct), progress)

    async def fetch(src: Source) -> None:
        await TransferPipeline(src, result, new, settings).run(objects)

    if objects:
        run_with_source(fetch, source_url, storage_options, concurrency=concurrency, retries=retries, backoff=backoff)
    result.seconds = time.monotonic() - t0
    return result


def sync(
    source_url: str,
    dest_root: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    delete: bool = False,
    max_delete: int | None = None,
    delete_all: bool = False,
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE,
    concurrency: int = DEFAULT_CONCURRENCY,
    block_size: int = DEFAULT_BLOCK_SIZE,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    fsync: bool = True,
    verify: bool = True,
    progress: Progress | None = None,
    direct: bool | None = None,
    what: str = "",
) -> SyncResult:
    """Mirror the tree at ``source_url`` into ``dest_root``: plan, transfer and finish in one run.

    See the module docstring for the guarantees (atomic, verified, durable, resumable). One source (and so one
    S3 client) serves the listing and the transfer. The run holds the root's run lock from its plan to its finish
    (:mod:`proximate.sync.runlock`: an overlapping run is refused, so no delete ever follows a stale plan), and
    adds what it wrote and deleted to the root's index backlog (:mod:`proximate.sync.backlog`).

    Args:
        source_url: ``s3://bucket/prefix`` or any fsspec URL (``file:///staging``, ...).
        dest_root: The local root; created if missing.
        storage_options: The source's options (see :func:`plan_sync`).
        delete: Remove files whose objects are gone from the source (only files this sync wrote and nobody
            changed since; see :func:`finish_sync`). Deletes of every mirrored file, or of more than
            ``max_delete`` (default: ``max_delete_share`` of the mirror), are refused whole: nothing is deleted and
            ``result.delete_refused`` says why.
        max_delete: Files this run may delete at most.
        delete_all: Allow any number of deletes, every mirrored file included.
        max_delete_share: The share of the mirror a run may delete without ``max_delete`` (default half).
        concurrency: Requests at once (see :func:`transfer`).
        block_size: Objects up to this size are held whole, larger ones stream (see :func:`transfer`).
        retries: Retries of a transient fault, per request.
        backoff: Seconds of the first retry's backoff (doubled each time, with jitter).
        fsync: Make every file durable before it gets its final name.
        verify: Check bytes against the checksum the store keeps (size is always checked).
        progress: Called with progress now and then (see :func:`transfer`).
        direct: Whether durable writes may use O_DIRECT; None reads ``PROXIMATE_SYNC_DIRECT`` when the sync
            starts (see :func:`transfer`).
        what: Names this run in the message an overlapping run gets.

    Returns:
        The run's result; per-object failures (refused keys, server faults, checksum mismatches) are in
        ``result.failed``, not raised; objects archived and not restored in ``result.cold``; a refused delete in
        ``result.delete_refused``.

    Raises:
        SourceError: The source cannot be listed (or its listing is incomplete); nothing is written.
        SyncLockedError: Another sync is running into the root (its message names it); nothing was changed.
        ManifestWriteError: The manifest could not be written (a full disk); what it recorded stays valid.

    Examples:
        >>> result = sync("s3://bucket/era5/", "/fsx/eu-west-2", storage_options={"profile": "ingest"}, delete=True)
        >>> result.transferred, result.bytes_transferred, result.failed, result.delete_refused
    """
    t0 = time.monotonic()
    root = Path(dest_root)
    root.mkdir(parents=True, exist_ok=True)
    settings = TransferSettings(concurrency, block_size, fsync, verify, direct_wanted(direct), progress)

    async def plan_and_fetch(src: Source) -> tuple[SyncPlan, SyncResult]:
        plan = await plan_from(src, root)
        fetched = SyncResult(source_url=source_url, dest_root=str(root))
        if plan.fetch:
            await TransferPipeline(src, fetched, plan.new, settings).run(plan.fetch)
        return plan, fetched

    with hold_run(root, what):
        plan, fetched = run_with_source(
            plan_and_fetch, source_url, storage_options, concurrency=concurrency, retries=retries, backoff=backoff
        )
        result = plan.result().merge(fetched)
        result.merge(
            finish_sync(
                plan, delete=delete, max_delete=max_delete, delete_all=delete_all, max_delete_share=max_delete_share
            )
        )
        if result.changed or result.deleted_paths:
            landed = set(result.changed)  # recorded in the manifest with the fingerprint their listing gave
            written = {o.rel: o.fingerprint for o in plan.fetch if o.rel in landed}
            add_to_backlog(root, written, result.deleted_paths)
    result.seconds = time.monotonic() - t0
    return result
