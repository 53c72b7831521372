"""Nightly mirror of an object-store prefix (or any fsspec tree) into a region's file system.

``sync(source_url, dest_root)`` is the whole run; ``plan_sync`` / ``transfer`` / ``finish_sync`` are its steps,
for callers (the Prefect flow) that run the transfer in batches.
"""

from proximate.sync.engine import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CONCURRENCY,
    SyncPlan,
    finish_sync,
    plan_sync,
    remove_temp_files,
    sync,
    transfer,
)
from proximate.sync.keys import STATE_DIR, TEMP_PREFIX, HostileKeyError, is_data_path, safe_relative_path
from proximate.sync.manifest import Manifest, SyncLockedError
from proximate.sync.result import SyncResult
from proximate.sync.source import RemoteObject, SourceError

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
