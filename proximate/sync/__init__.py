"""Nightly mirror of an object-store prefix (or any fsspec tree) into a region's file system.

``sync(source_url, dest_root)`` is the whole run, holding the root's run lock throughout and recording what the
catalog must index (the backlog); ``plan_sync`` / ``transfer`` / ``finish_sync`` are its steps, without either.

The package's rooms: :mod:`~proximate.sync.engine` (those entry points), :mod:`~proximate.sync.plan` (the plan
and the deletes), :mod:`~proximate.sync.pipeline` (the transfer), :mod:`~proximate.sync.durable` (atomic,
durable writes), :mod:`~proximate.sync.sources` (S3 and fsspec backends), :mod:`~proximate.sync.s3client`,
:mod:`~proximate.sync.transport`, :mod:`~proximate.sync.checksums`, :mod:`~proximate.sync.retry`,
:mod:`~proximate.sync.manifest`, :mod:`~proximate.sync.runlock`, :mod:`~proximate.sync.backlog`,
:mod:`~proximate.sync.keys`, :mod:`~proximate.sync.confined` (no link followed out of the root) and
:mod:`~proximate.sync.result`.
"""

from proximate.sync.backlog import IndexBacklog, acknowledge, add_to_backlog, read_backlog
from proximate.sync.confined import SymlinkRefusedError
from proximate.sync.engine import DEFAULT_BLOCK_SIZE, DEFAULT_CONCURRENCY, plan_sync, sync, transfer
from proximate.sync.keys import STATE_DIR, TEMP_PREFIX, HostileKeyError, is_data_path, safe_relative_path
from proximate.sync.manifest import Manifest, ManifestWriteError, SyncLockedError, normalise_source
from proximate.sync.plan import DEFAULT_MAX_DELETE_SHARE, SyncPlan, delete_refusal, finish_sync, remove_temp_files
from proximate.sync.result import SyncResult
from proximate.sync.runlock import hold_run
from proximate.sync.sources import ColdObjectError, RemoteObject, SourceError

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_DELETE_SHARE",
    "STATE_DIR",
    "TEMP_PREFIX",
    "ColdObjectError",
    "HostileKeyError",
    "IndexBacklog",
    "Manifest",
    "ManifestWriteError",
    "RemoteObject",
    "SourceError",
    "SymlinkRefusedError",
    "SyncLockedError",
    "SyncPlan",
    "SyncResult",
    "acknowledge",
    "add_to_backlog",
    "delete_refusal",
    "finish_sync",
    "hold_run",
    "is_data_path",
    "normalise_source",
    "plan_sync",
    "read_backlog",
    "remove_temp_files",
    "safe_relative_path",
    "sync",
    "transfer",
]
