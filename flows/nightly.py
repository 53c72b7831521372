"""The nightly ingestion of one region: sync its S3 prefix into its file system, then index what changed.

Indexing runs only after a successful sync (a failed sync ends this run Failed, listing the failed keys), and
only over the paths the sync changed or deleted, so a quiet night costs a listing and nothing more.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.catalog import index_region
from flows.common import DEFAULT_CLUSTER_BLOCK
from flows.sync import sync_region


@flow(name="nightly-region")
def nightly_region(
    region: str,
    delete: bool = True,
    catalog: str | None = None,
    scheduler_address: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    max_delete: int | None = None,
    delete_all: bool = False,
) -> dict[str, Any]:
    """Sync, then index incrementally.

    Args:
        region: Name of the Region block to ingest.
        delete: Remove files whose objects are gone (only files the sync wrote and nobody changed).
        catalog: Name of a saved CatalogConfig block; empty uses the default catalog.
        scheduler_address: A running regional scheduler for the indexing; empty uses the cluster block.
        cluster: RegionalCluster block name, used without scheduler_address.
        max_delete: Allow a delete of up to this many files (default: at most half the mirror).
        delete_all: Allow a delete of every mirrored file (when the source prefix really was emptied).
    """
    # raises, failing this run, when any object failed or a delete was refused
    synced = sync_region(region, delete=delete, max_delete=max_delete, delete_all=delete_all)
    indexed = index_region(
        region,
        changed=synced["changed"],
        deleted=synced["deleted_paths"],
        catalog=catalog,
        scheduler_address=scheduler_address,
        cluster=cluster,
    )
    return {"sync": synced, "index": indexed}
