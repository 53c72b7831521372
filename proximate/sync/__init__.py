"""Nightly mirror of an object-store prefix (or any fsspec tree) into a region's file system.

``sync(source_url, dest_root)`` is the whole run; ``plan_sync`` / ``transfer`` / ``finish_sync`` are its steps,
for callers (the Prefect flow) that run the transfer in batches.

The package's rooms: :mod:`~proximate.sync.engine` (those entry points), :mod:`~proximate.sync.plan` (the plan
and the deletes), :mod:`~proximate.sync.pipeline` (the transfer), :mod:`~proximate.sync.durable` (atomic,
durable writes), :mod:`~proximate.sync.sources` (S3 and fsspec backends), :mod:`~proximate.sync.s3client`,
:mod:`~proximate.sync.transport`, :mod:`~proximate.sync.checksums`, :mod:`~proximate.sync.retry`,
:mod:`~proximate.sync.manifest`, :mod:`~proximate.sync.keys` and :mod:`~proximate.sync.result`.
"""

from proximate.sync.engine import DEFAULT_BLOCK_SIZE, DEFAULT_CONCURRENCY, plan_sync, sync, transfer
from proximate.sync.keys import STATE_DIR, TEMP_PREFIX, HostileKeyError, is_data_path, safe_relative_path
from proximate.sync.manifest import Manifest, SyncLockedError
from proximate.sync.plan import SyncPlan, finish_sync, remove_temp_files
from proximate.sync.result import SyncResult
from proximate.sync.sources import RemoteObject, SourceError

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CONCURRENCY",
    "STATE_DIR",
    "TEMP_PREFIX",
    "HostileKeyError",
    "Manifest",
    "RemoteObject",
    "SourceError",
    "SyncLockedError",
    "SyncPlan",
    "SyncResult",
    "finish_sync",
    "is_data_path",
    "plan_sync",
    "remove_temp_files",
    "safe_relative_path",
    "sync",
    "transfer",
]
