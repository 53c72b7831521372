"""What the sync changed and the catalog has not indexed yet, kept in the root beside the manifest.

Every sync adds the files it wrote (with the fingerprint the manifest recorded: the object's ETag or version)
and the files it deleted; the indexer takes the whole backlog and acknowledges what it indexed. So the files of
a run whose indexing never happened (a manual sync, a run that failed after fetching, a catalog that was down)
are indexed by the next run instead of being forgotten. An acknowledgement removes a file only at the
fingerprint that was indexed: a file fetched again meanwhile stays in the backlog.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from proximate.sync.confined import read_state, state_folder
from proximate.sync.manifest import state_dir, write_json_durably

BACKLOG = "index-backlog.json"


@dataclass
class IndexBacklog:
    """Files to index (relative path -> fingerprint) and files whose records to remove."""

    changed: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.deleted)


def read_backlog(root: str | os.PathLike[str]) -> IndexBacklog:
    """The root's backlog (empty when there is none).

    Raises:
        SymlinkRefusedError: the state folder or the backlog is a symbolic link (it is not read through it).
    """
    try:
        data = json.loads(read_state(state_folder(root, create=False) / BACKLOG) or b"")
    except (json.JSONDecodeError, UnicodeDecodeError):  # not a link refused (SymlinkRefusedError): that is raised
        # Written atomically, so only a hand edit breaks it; the indexer's own comparison catches up then.
        return IndexBacklog()
    return IndexBacklog(dict(data.get("changed", {})), sorted(data.get("deleted", [])))


def _write(root: str | os.PathLike[str], backlog: IndexBacklog) -> None:
    Path(root).mkdir(parents=True, exist_ok=True)
    folder = state_dir(root)
    payload = {"changed": dict(sorted(backlog.changed.items())), "deleted": sorted(backlog.deleted)}
    write_json_durably(folder / BACKLOG, payload)  # the previous backlog stays whole if this fails


def add_to_backlog(root: str | os.PathLike[str], changed: Mapping[str, str], deleted: Iterable[str]) -> IndexBacklog:
    """Add one run's changes: a file's last change wins (written after a delete: to index; deleted: to remove).

    Args:
        root: The sync's destination root.
        changed: Files written, with their manifest fingerprints.
        deleted: Files deleted.

    Returns:
        The whole backlog now.
    """
    before = read_backlog(root)
    to_index, to_remove = dict(before.changed), set(before.deleted)
    for rel in deleted:
        to_index.pop(rel, None)
        to_remove.add(rel)
    for rel, fingerprint in changed.items():
        to_remove.discard(rel)
        to_index[rel] = fingerprint
    after = IndexBacklog(to_index, sorted(to_remove))
    if after != before:
        _write(root, after)
    return after


def acknowledge(root: str | os.PathLike[str], indexed: IndexBacklog) -> IndexBacklog:
    """Drop what was indexed: a changed file only at the fingerprint that was indexed, a deleted one only if no
    sync wrote it again since.

    Returns:
        What is left.
    """
    before = read_backlog(root)
    left = IndexBacklog(
        {rel: fp for rel, fp in before.changed.items() if indexed.changed.get(rel) != fp},
        sorted(set(before.deleted) - set(indexed.deleted)),
    )
    if left != before:
        _write(root, left)
    return left
