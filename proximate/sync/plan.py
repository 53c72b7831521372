"""Planning and finishing a sync: the diff of a source listing against the manifest, and the deletes after it."""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from proximate.sync.confined import ConfinedRoot, SymlinkRefusedError
from proximate.sync.keys import STATE_DIR, TEMP_PREFIX, HostileKeyError, safe_relative_path
from proximate.sync.manifest import Entry, Manifest
from proximate.sync.result import SyncResult
from proximate.sync.sources import RemoteObject, Source

#: Objects per batch at most (see :meth:`SyncPlan.batches`).
BATCH_OBJECTS = 2000
#: Bytes per batch at most (see :meth:`SyncPlan.batches`).
BATCH_BYTES = 4 * 2**30
#: Share of the mirrored files one run may delete unless told otherwise (see :func:`delete_refusal`): a source
#: emptied by mistake (a wrong account, a lifecycle rule, a truncated listing) must not empty the mirror.
DEFAULT_MAX_DELETE_SHARE = 0.5

log = logging.getLogger("proximate.sync")


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
    cold: list[str] = field(default_factory=list)
    mirrored: int = 0
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
            cold=list(self.cold),
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


def unchanged_on_disk(tree: ConfinedRoot, rel: str, entry: Entry) -> bool:
    """Whether ``rel`` is still the regular file the manifest recorded (same size and mtime), reached without
    passing through a link: a folder replaced by a link to a look-alike copy elsewhere is not our file.

    Raises:
        SymlinkRefusedError: a folder on the way to ``rel`` is a symbolic link.
    """
    try:
        st = tree.lstat(rel)
    except OSError:
        return False
    return st is not None and stat.S_ISREG(st.st_mode) and st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns


def _unchanged_or_refetch(tree: ConfinedRoot, rel: str, entry: Entry) -> bool:
    """:func:`unchanged_on_disk` for the plan: a link on the way means fetch it again (and the writer, which does
    not pass through links either, reports the key as failed, naming the link)."""
    try:
        return unchanged_on_disk(tree, rel, entry)
    except SymlinkRefusedError:
        return False


def conflicts(rels: set[str]) -> dict[str, str]:
    """Keys that cannot be files because other keys need them as folders (``a`` beside ``a/b``): each such key
    mapped to the first key found below it. The folder wins: its keys may be many (a Zarr store), the file is one.
    """
    out: dict[str, str] = {}
    for rel in sorted(rels):
        parent = rel.rpartition("/")[0]
        while parent:
            if parent in rels and parent not in out:
                out[parent] = rel
            parent = parent.rpartition("/")[0]
    return out


async def plan_from(src: Source, root: Path) -> SyncPlan:
    """List an open source once and diff it against the manifest under ``root`` (see
    :func:`~proximate.sync.plan_sync`)."""
    plan = SyncPlan(source_url=src.url, dest_root=str(root))
    with Manifest(root, src.url) as manifest, ConfinedRoot(root) as tree:
        plan.temp_files_removed = remove_temp_files(root)
        plan.mirrored = len(manifest.entries)
        objects = await src.list()
        safe: list = []
        for obj in objects:
            if obj.size == 0 and (obj.rel == "" or obj.rel.endswith("/")):
                continue  # a folder marker, not data
            plan.listed += 1
            try:
                safe_relative_path(obj.rel)
            except HostileKeyError as exc:
                plan.refused.append([obj.path, f"refused: {exc}"])
                continue
            safe.append(obj)
        seen = {obj.rel for obj in safe}
        clash = conflicts(seen)
        by_rel = {obj.rel: obj.path for obj in safe}
        safe.sort(key=lambda obj: obj.rel)  # each folder walked once (ConfinedRoot)
        for obj in safe:
            if obj.rel in clash:
                below = by_rel[clash[obj.rel]]
                plan.refused.append(
                    [
                        obj.path,
                        f"conflict: key {obj.path!r} and key {below!r} cannot both be mirrored ({obj.rel!r} would "
                        f"be a file and a folder); {obj.path!r} is left out, the keys below it are mirrored",
                    ]
                )
                continue
            entry = manifest.entries.get(obj.rel)
            if (
                entry is not None
                and entry.size == obj.size
                and entry.fingerprint == obj.fingerprint
                and _unchanged_or_refetch(tree, obj.rel, entry)
            ):
                plan.skipped += 1
                continue
            if obj.cold:
                log.warning(
                    "skipped cold object %r (%s, not restored): restore it to have it synced",
                    obj.path,
                    obj.storage_class,
                )
                plan.cold.append(obj.path)
                continue
            if entry is None:
                plan.new.add(obj.rel)
            plan.fetch.append(obj)
        plan.gone = sorted(rel for rel in manifest.entries if rel not in seen)
    return plan


def delete_refusal(
    gone: int,
    mirrored: int,
    root: str,
    *,
    max_delete: int | None = None,
    delete_all: bool = False,
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE,
) -> str | None:
    """Why deleting ``gone`` of the ``mirrored`` files the sync wrote into ``root`` is refused, or None if it may go.

    Every file (of a non-empty mirror) goes only with ``delete_all``; more than ``max_delete`` files (default: the
    ``max_delete_share`` of the mirror) only with a ``max_delete`` that allows them, or ``delete_all``.
    """
    if not gone or delete_all:
        return None
    if gone >= mirrored:
        return (
            f"refusing to delete all {gone} files this sync mirrors into {root}: the source lists none of them "
            "(an emptied prefix, another account, a lifecycle rule?); nothing was deleted. If that is meant, "
            "rerun with --delete-all (delete_all=True)"
        )
    allowed = max_delete if max_delete is not None else int(max_delete_share * mirrored)
    if gone <= allowed:
        return None
    limit = f"--max-delete {max_delete}" if max_delete is not None else f"{max_delete_share:.0%} of the mirror"
    return (
        f"refusing to delete {gone} of the {mirrored} files this sync mirrors into {root} (over {limit}); "
        f"nothing was deleted. If the source really lost them, rerun with --max-delete {gone} "
        f"(max_delete={gone}) or --delete-all (delete_all=True)"
    )


def finish_sync(
    plan: SyncPlan,
    *,
    delete: bool = False,
    max_delete: int | None = None,
    delete_all: bool = False,
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE,
) -> SyncResult:
    """Finish a sync: apply the deletes of ``plan`` (with ``delete``), then compact the manifest.

    Only files this sync wrote and nobody has touched since (same size and mtime as the manifest recorded) are
    removed; a file replaced by someone else since is left alone, and forgotten by the manifest. Folders emptied
    by the deletes are removed too. A file is looked at and removed through its folders' descriptors, never
    through a link (:class:`~proximate.sync.confined.ConfinedRoot`): a folder replaced by a link is not entered,
    its keys are reported in ``failed`` and forgotten, and nothing outside the root is removed. Deletes that would
    remove every mirrored file, or more than a share of them, are refused whole (see :func:`delete_refusal`):
    nothing is deleted and ``delete_refused`` says why.

    Args:
        plan: The plan of this run (from :func:`~proximate.sync.plan_sync`); its ``gone`` keys are the candidates.
        delete: Remove the files of objects gone from the source. Without it nothing is deleted, and the manifest
            is only compacted.
        max_delete: Files one run may delete at most (default: ``max_delete_share`` of the mirror).
        delete_all: Allow any number of deletes, every mirrored file included.
        max_delete_share: The share of the mirror one run may delete when ``max_delete`` is not given.

    Returns:
        A result with ``deleted`` (files removed), ``deleted_paths`` (keys removed, or already missing, from the
        root), ``failed`` (keys behind a link, not deleted), ``delete_refused`` and ``seconds`` set.

    Raises:
        SyncLockedError: Another sync holds the root's manifest.
        OSError: A file or the manifest could not be removed or written.
    """
    t0 = time.monotonic()
    root = Path(plan.dest_root)
    result = SyncResult(source_url=plan.source_url, dest_root=plan.dest_root)
    with Manifest(root, plan.source_url) as manifest, ConfinedRoot(root) as tree:
        gone = sorted(rel for rel in plan.gone if rel in manifest.entries)
        if delete:
            result.delete_refused = delete_refusal(
                len(gone),
                len(manifest.entries),
                plan.dest_root,
                max_delete=max_delete,
                delete_all=delete_all,
                max_delete_share=max_delete_share,
            )
            if result.delete_refused:
                log.error("%s", result.delete_refused)
        if delete and not result.delete_refused:
            for rel in gone:
                entry = manifest.entries.get(rel)
                if entry is None:
                    continue
                try:
                    if unchanged_on_disk(tree, rel, entry):
                        tree.unlink(rel)
                        result.deleted += 1
                        result.deleted_paths.append(rel)
                    elif tree.lstat(rel) is None:
                        result.deleted_paths.append(rel)
                except SymlinkRefusedError as exc:
                    log.error("not deleted: %s", exc)
                    result.failed.append([rel, f"not deleted: {exc}"])
                # else: replaced by someone else since; leave their file, forget ours.
                manifest.record_delete(rel)
        if manifest.journal_lines:
            manifest.compact()
    result.seconds = time.monotonic() - t0
    return result
