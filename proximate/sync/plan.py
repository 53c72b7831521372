"""Planning and finishing a sync: the diff of a source listing against the manifest, and the deletes after it."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from proximate.sync.keys import STATE_DIR, TEMP_PREFIX, HostileKeyError, safe_relative_path
from proximate.sync.manifest import Entry, Manifest
from proximate.sync.result import SyncResult
from proximate.sync.sources import RemoteObject, Source

#: Objects per batch at most (see :meth:`SyncPlan.batches`).
BATCH_OBJECTS = 2000
#: Bytes per batch at most (see :meth:`SyncPlan.batches`).
BATCH_BYTES = 4 * 2**30


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

    def batches(self, max_objects: int = BATCH_OBJECTS, max_bytes: int = BATCH_BYTES) -> list[list[RemoteObject]]:
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


def unchanged_on_disk(path: Path, entry: Entry) -> bool:
    """Whether ``path`` is still the regular file the manifest recorded (same size and mtime)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns


async def plan_from(src: Source, root: Path) -> SyncPlan:
    """List an open source once and diff it against the manifest under ``root`` (see
    :func:`~proximate.sync.plan_sync`)."""
    plan = SyncPlan(source_url=src.url, dest_root=str(root))
    with Manifest(root, src.url) as manifest:
        plan.temp_files_removed = remove_temp_files(root)
        objects = await src.list()
        seen: set[str] = set()
        for obj in objects:
            if obj.size == 0 and (obj.rel == "" or obj.rel.endswith("/")):
                continue  # a folder marker, not data
            plan.listed += 1
            try:
                safe_relative_path(obj.rel)
            except HostileKeyError as exc:
                plan.refused.append([obj.path, f"refused: {exc}"])
                continue
            seen.add(obj.rel)
            entry = manifest.entries.get(obj.rel)
            if (
                entry is not None
                and entry.size == obj.size
                and entry.fingerprint == obj.fingerprint
                and unchanged_on_disk(root / obj.rel, entry)
            ):
                plan.skipped += 1
                continue
            if entry is None:
                plan.new.add(obj.rel)
            plan.fetch.append(obj)
        plan.gone = sorted(rel for rel in manifest.entries if rel not in seen)
    return plan


def _prune_empty_parents(root: Path, path: Path) -> None:
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            os.rmdir(parent)
        except OSError:
            return
        parent = parent.parent


def finish_sync(plan: SyncPlan, *, delete: bool = False) -> SyncResult:
    """Finish a sync: apply the deletes of ``plan`` (with ``delete``), then compact the manifest.

    Only files this sync wrote and nobody has touched since (same size and mtime as the manifest recorded) are
    removed; a file replaced by someone else since is left alone, and forgotten by the manifest. Folders emptied
    by the deletes are removed too.

    Args:
        plan: The plan of this run (from :func:`~proximate.sync.plan_sync`); its ``gone`` keys are the candidates.
        delete: Remove the files of objects gone from the source. Without it nothing is deleted, and the manifest
            is only compacted.

    Returns:
        A result with ``deleted`` (files removed), ``deleted_paths`` (keys removed, or already missing, from the
        root) and ``seconds`` set.

    Raises:
        SyncLockedError: Another sync holds the root's manifest.
        OSError: A file or the manifest could not be removed or written.
    """
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
                if unchanged_on_disk(path, entry):
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
