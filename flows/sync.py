"""The ``sync-region`` flow: mirror a region's object-store prefix into the region's file system, on the region's
own workers (the flow's process only orchestrates; it need not reach the bucket or the file system)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from flows.common import (
    DEFAULT_CLUSTER_BLOCK,
    RegionalTaskRunner,
    cluster_block,
    fails_on_input_errors,
    run_regions_on_cluster,
)
from proximate.analysis import ParameterError
from proximate.pools import pool
from proximate.regions import RegionError, validate_region_name
from proximate.sync import SyncResult
from tasks.sync import RegionSync, sync_in_region

#: Failed keys named in the flow run's state message; the summary artifact lists up to 200.
MAX_KEYS_IN_MESSAGE = 20


def failure_message(region: str, failed: list[list[str]]) -> str:
    """Which keys failed and why, for the Failed state."""
    shown = "; ".join(f"{key!r}: {reason}" for key, reason in failed[:MAX_KEYS_IN_MESSAGE])
    more = f"; and {len(failed) - MAX_KEYS_IN_MESSAGE} more" if len(failed) > MAX_KEYS_IN_MESSAGE else ""
    return f"sync of region {region!r}: {len(failed)} object(s) failed: {shown}{more}"


def checked_region(region: str) -> str:
    """The ``region`` parameter, validated.

    Raises:
        ParameterError: naming ``region``.
    """
    try:
        return validate_region_name(region)
    except RegionError as exc:
        raise ParameterError("region", str(exc)) from exc


def sync_on_region_workers(
    region: str, delete: bool, max_delete: int | None = None, delete_all: bool = False
) -> RegionSync:
    """Run the region's sync as one Prefect task on one of its workers (the running flow's task runner must be
    attached to the cluster), then report it: warnings for cold objects and the summary artifact."""
    with pool(region):
        synced = sync_in_region.submit(region, delete, max_delete, delete_all).result()
    logger = get_run_logger()
    for key in synced.result.cold:
        logger.warning("skipped cold object %r (archived, not restored): restore it to have it synced", key)
    create_markdown_artifact(
        synced.result.summary_markdown(f"Sync of region {region}"),
        key=f"sync-{region}-summary",
        description=f"Sync of region {region}",
    )
    return synced


def sync_outcome(region: str, result: SyncResult, data: dict[str, Any]) -> dict[str, Any] | State:
    """``data``, or a Failed state carrying it when an object failed or a delete was refused."""
    if result.failed:
        return Failed(message=failure_message(region, result.failed), data=data)
    if result.delete_refused:
        return Failed(message=f"sync of region {region!r}: {result.delete_refused}", data=data)
    return data


@flow(name="sync-region", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def sync_region(
    region: str,
    delete: bool = False,
    max_delete: int | None = None,
    delete_all: bool = False,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
) -> dict[str, Any] | State:
    """Sync the ``Region`` block named ``region`` on that region's workers: list, fetch, delete if asked.

    The run holds the region's run lock from its plan to its finish: an overlapping run of the same region (a
    scheduled night and a manual run) fails at once naming the run that holds it, and changes nothing. What it
    wrote or deleted joins the region's index backlog, which the next nightly run indexes.

    Args:
        region: Name of the Region block; the cluster must have live workers of this region.
        delete: Remove files whose objects are gone (only files the sync wrote and nobody changed since).
        max_delete: Allow a delete of up to this many files (default: at most half the mirror); larger deletes
            are refused whole and the run ends Failed naming this parameter.
        delete_all: Allow a delete of every mirrored file (when the source prefix really was emptied).
        cluster: RegionalCluster block name, used without scheduler_address.
        scheduler_address: A running regional scheduler (tcp:// or tls://), instead of the cluster block.

    Returns:
        The :class:`~proximate.sync.SyncResult` as a dict (objects archived and not restored are in ``cold`` and
        do not fail the run); when an object failed, a Failed state with that dict as its data and the keys in
        the message.
    """
    checked_region(region)
    run_regions_on_cluster(cluster_block(cluster, scheduler_address), "region", [region])
    synced = sync_on_region_workers(region, delete, max_delete, delete_all)
    return sync_outcome(region, synced.result, synced.result.to_dict())
