"""Coarse Prefect tasks around :mod:`proximate.sync`: one to plan, one per batch of objects, one to finish.

Tasks take the region's name and load its block themselves, so credentials never travel as task parameters.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.region import Region
from proximate.sync import RemoteObject, SyncPlan, SyncResult, finish_sync, plan_sync, transfer


def region_source(region: str) -> tuple[Region, dict[str, Any]]:
    """The region's block and the storage options for its source (secrets stay in memory)."""
    block = Region.load(region)
    if not block.source_url:
        raise ValueError(f"region {region!r} has no source_url: nothing to sync from (set it on its Region block)")
    return block, block.storage_options()


@task(name="sync-plan", cache_policy=NO_CACHE)
def plan_region_sync(region: str) -> SyncPlan:
    """List the region's source once and diff it against the manifest in its root."""
    block, options = region_source(region)
    return plan_sync(block.source_url, block.root, storage_options=options)


@task(name="sync-batch", cache_policy=NO_CACHE)
def transfer_batch(region: str, objects: list[RemoteObject], new: set[str]) -> SyncResult:
    """Fetch one batch of objects in parallel; failures are returned in the result, not raised."""
    block, options = region_source(region)
    return transfer(objects, block.source_url, block.root, new=new, storage_options=options)


@task(name="sync-finish", cache_policy=NO_CACHE)
def finish_region_sync(
    region: str, plan: SyncPlan, delete: bool, max_delete: int | None = None, delete_all: bool = False
) -> SyncResult:
    """Delete files whose objects are gone (only with ``delete``; refused past ``max_delete``, by default half the
    mirror, or of every file without ``delete_all``) and compact the manifest."""
    return finish_sync(plan, delete=delete, max_delete=max_delete, delete_all=delete_all)
