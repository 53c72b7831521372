"""Prefect tasks of the sync, each run on a worker of the region it syncs (the flow submits them inside
``pool(region)``): the bytes go from the region's bucket to the region's file system and never through the
flow's process, which may sit in another region and cannot reach the bucket anyway.

Tasks take the region's name and load its block where they run, so credentials never travel as task parameters,
results or logs.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from blocks.region import Region
from proximate.regions import local_root
from proximate.sync import IndexBacklog, SyncResult, acknowledge, read_backlog, sync

#: Seconds between updates of a running sync's progress artifact.
PROGRESS_EVERY = 5.0


@dataclass
class RegionSync:
    """What a region's sync sends back to the flow: its result and the index backlog (metadata only)."""

    result: SyncResult
    backlog: IndexBacklog


def region_root(region: str, block: Region) -> Path:
    """This worker's root of ``region``, checked against the block: the sync writes where the indexer and the
    analyses read.

    Raises:
        FileNotFoundError: This process is not a worker of ``region`` (the task was not pinned to its pool).
        ValueError: The block's root is not this worker's root.
    """
    root = local_root(region)
    if Path(block.root).resolve() != root.resolve():
        raise ValueError(
            f"region {region!r}: its Region block's root {block.root!r} is not the root its workers serve ({root}):"
            " set the block's root to the workers' --root"
        )
    return root


class _ProgressArtifact:
    """A progress artifact the sync's progress callback feeds, updated every few seconds from a thread that
    carries the task's Prefect context (the callback runs inside the sync's event loop, where Prefect's
    artifact calls would return coroutines)."""

    def __init__(self, region: str) -> None:
        self.id = create_progress_artifact(
            progress=0.0, key=f"sync-{region}-progress", description=f"Sync of region {region}"
        )
        self.share = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._loop,), daemon=True)
        self._thread.start()

    def __call__(self, done: int, planned: int, bytes_done: int, bytes_planned: int) -> None:
        self.share = (bytes_done + done) / max(1, bytes_planned + planned)  # objects count too: empty files are work

    def _loop(self) -> None:
        reported = -1.0
        while not self._stop.wait(PROGRESS_EVERY):
            if self.share != reported:
                reported = self.share
                update_progress_artifact(self.id, progress=round(100.0 * reported, 1))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        update_progress_artifact(self.id, progress=100.0)


@task(name="sync-in-region", cache_policy=NO_CACHE)
def sync_in_region(region: str, delete: bool, max_delete: int | None = None, delete_all: bool = False) -> RegionSync:
    """Mirror the region's source into its root, plan to finish under the root's run lock (an overlapping run is
    refused), and return the result with the index backlog.

    Args:
        region: The Region block to sync; this task must run on one of its workers.
        delete: Remove files whose objects are gone (refused past ``max_delete``, by default half the mirror, or
            of every file without ``delete_all``).
        max_delete: Files this run may delete at most.
        delete_all: Allow a delete of every mirrored file.

    Returns:
        The sync's result and what the catalog has yet to index.
    """
    block = Region.load(region)
    if not block.source_url:
        raise ValueError(f"region {region!r} has no source_url: nothing to sync from (set it on its Region block)")
    root = region_root(region, block)
    progress = _ProgressArtifact(region)
    try:
        result = sync(
            block.source_url,
            root,
            storage_options=block.storage_options(),
            delete=delete,
            max_delete=max_delete,
            delete_all=delete_all,
            progress=progress,
            # the id only: it comes from the task's context, where the run's name would cost an API call that
            # Prefect makes through its global loop thread, which on a Dask worker can wait forever
            what=f"of flow run {flow_run.get_id() or '(outside Prefect)'}",
        )
    finally:
        progress.close()
    return RegionSync(result, read_backlog(root))


@task(name="acknowledge-indexed", cache_policy=NO_CACHE)
def acknowledge_indexed(region: str, indexed: IndexBacklog) -> dict[str, Any]:
    """Drop what the catalog indexed from the region's backlog (runs on a worker of the region).

    Returns:
        How much of the backlog is left: files to index (``changed``) and records to remove (``deleted``).
    """
    left = acknowledge(local_root(region), indexed)
    return {"changed": len(left.changed), "deleted": len(left.deleted)}
