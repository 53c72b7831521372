"""Nightly flow: mirror a region's object-store prefix into the region's file system."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.states import Failed, State

from tasks.sync import finish_region_sync, plan_region_sync, transfer_batch

#: Failed keys named in the flow run's state message; the summary artifact lists up to 200.
MAX_KEYS_IN_MESSAGE = 20


def failure_message(region: str, failed: list[list[str]]) -> str:
    """Which keys failed and why, for the Failed state."""
    shown = "; ".join(f"{key!r}: {reason}" for key, reason in failed[:MAX_KEYS_IN_MESSAGE])
    more = f"; and {len(failed) - MAX_KEYS_IN_MESSAGE} more" if len(failed) > MAX_KEYS_IN_MESSAGE else ""
    return f"sync of region {region!r}: {len(failed)} object(s) failed: {shown}{more}"


@flow(name="sync-region")
def sync_region(
    region: str,
    delete: bool = False,
    batch_objects: int = 1000,
    batch_bytes: int = 2 * 2**30,
    max_delete: int | None = None,
    delete_all: bool = False,
) -> dict[str, Any] | State:
    """Sync the ``Region`` block named ``region`` (list, fetch in coarse batches, delete if asked).

    Deletes of more than ``max_delete`` files (default: half the mirror), or of every file without
    ``delete_all``, are refused whole: nothing is deleted and the run ends Failed naming both parameters. Objects
    archived and not restored (GLACIER, DEEP_ARCHIVE) are skipped with a warning each, counted in
    ``skipped_cold``, and do not fail the run.

    Returns the :class:`~proximate.sync.SyncResult` as a dict (``changed`` / ``deleted_paths`` feed the catalog
    indexer); when any object failed, the run ends Failed with that dict as its data and the keys in the message.
    """
    t0 = time.monotonic()
    plan = plan_region_sync(region)
    result = plan.result()
    batches = plan.batches(max_objects=batch_objects, max_bytes=batch_bytes)
    total = max(1, plan.bytes_to_fetch + len(plan.fetch))  # objects count too: empty files are work
    progress_id = create_progress_artifact(
        progress=0.0,
        key=f"sync-{region}-progress",
        description=f"Sync of region {region}: {len(plan.fetch)} objects to fetch, {plan.skipped} unchanged",
    )
    done = 0
    for batch in batches:
        rels = {o.rel for o in batch}
        result.merge(transfer_batch(region, batch, plan.new & rels))
        done += sum(o.size for o in batch) + len(batch)
        update_progress_artifact(progress_id, progress=round(100.0 * done / total, 1))
    result.merge(finish_region_sync(region, plan, delete, max_delete, delete_all))
    logger = get_run_logger()
    for key in result.cold:
        logger.warning("skipped cold object %r (archived, not restored): restore it to have it synced", key)
    update_progress_artifact(progress_id, progress=100.0)
    result.seconds = time.monotonic() - t0
    create_markdown_artifact(
        result.summary_markdown(f"Sync of region {region}"),
        key=f"sync-{region}-summary",
        description=f"Sync of region {region}",
    )
    data = result.to_dict()
    if result.failed:
        return Failed(message=failure_message(region, result.failed), data=data)
    if result.delete_refused:
        return Failed(message=f"sync of region {region!r}: {result.delete_refused}", data=data)
    return data
