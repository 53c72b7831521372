"""The nightly ingestion of one region: sync its S3 prefix into its file system, then index what changed, all on
the region's workers; the flow's process writes the catalog records and the reports.

Indexing runs even when some objects failed, over everything that did sync (and whatever an earlier run synced
but never indexed: the region's index backlog), so one bad key never freezes the region's catalog. The run
then ends Failed naming the failed keys; the next night retries only those.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from flows.catalog import index_with
from flows.common import (
    DEFAULT_CLUSTER_BLOCK,
    RegionalTaskRunner,
    catalog_settings,
    cluster_block,
    fails_on_input_errors,
    run_regions_on_cluster,
)
from flows.sync import checked_region, sync_on_region_workers, sync_outcome
from proximate.ingestion import IngestionReport, link_delta, pickled_size, testbed_link_counters
from proximate.pools import pool
from proximate.sync import IndexBacklog
from tasks.sync import acknowledge_indexed


@flow(name="nightly-region", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def nightly_region(
    region: str,
    delete: bool = True,
    catalog: str | None = None,
    scheduler_address: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    max_delete: int | None = None,
    delete_all: bool = False,
) -> dict[str, Any] | State:
    """Sync, then index incrementally, on the region's workers.

    Args:
        region: Name of the Region block to ingest; the cluster must have live workers of this region.
        delete: Remove files whose objects are gone (only files the sync wrote and nobody changed).
        catalog: Name of a saved CatalogConfig block; empty uses the default catalog.
        scheduler_address: A running regional scheduler (tcp:// or tls://); empty uses the cluster block.
        cluster: RegionalCluster block name, used without scheduler_address.
        max_delete: Allow a delete of up to this many files (default: at most half the mirror).
        delete_all: Allow a delete of every mirrored file (when the source prefix really was emptied).

    Returns:
        ``{"sync": ..., "index": ..., "locality": ...}``; a Failed state carrying it when an object failed or a
        delete was refused (the run indexed everything else first).
    """
    checked_region(region)
    settings = catalog_settings(catalog)
    links_before = testbed_link_counters()
    client = run_regions_on_cluster(cluster_block(cluster, scheduler_address), "region", [region])
    synced = sync_on_region_workers(region, delete, max_delete, delete_all)
    backlog = synced.backlog
    index = index_with(
        client, region, settings, changed=sorted(backlog.changed), deleted=backlog.deleted, etags=backlog.changed
    )
    # What the catalog refused stays in the backlog (the next run tries it again); the rest is acknowledged.
    refused = {path for path, _ in index.rejected}
    indexed = IndexBacklog({p: fp for p, fp in backlog.changed.items() if p not in refused}, backlog.deleted)
    if indexed:
        with pool(region):
            acknowledge_indexed.submit(region, indexed).result()
    report = IngestionReport(
        region,
        object_bytes=synced.result.bytes_transferred,
        sync_result_bytes=pickled_size(synced),
        index_result_bytes=index.result_bytes,
        records=index.extracted,
        link_bytes=link_delta(links_before, testbed_link_counters()),
    )
    create_markdown_artifact(
        report.markdown(), key=f"ingestion-{region}-locality", description=f"Where region {region}'s bytes went"
    )
    data = {"sync": synced.result.to_dict(), "index": index.as_dict(), "locality": report.as_dict()}
    outcome = sync_outcome(region, synced.result, data)
    if index.rejected and not isinstance(outcome, State):
        return Failed(
            message=f"region {region!r}: the catalog refused {len(index.rejected)} record(s), kept in the index "
            f"backlog for the next run: {index.refused_summary()}",
            data=data,
        )
    return outcome
