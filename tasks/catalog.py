"""Coarse Prefect tasks for catalog indexing: one task per step of a region's run, each driving many small
Dask tasks pinned to the region (Prefect's per-task overhead is far too large for one task per file).

They run in the flow's process, which reaches the catalog; the flow hands each the Dask client and the
catalog settings it resolved once.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from proximate.catalog import CatalogSettings, indexing
from proximate.catalog.records import record_id


@task(name="list-region-datasets", retries=1, cache_policy=NO_CACHE)
def list_region_datasets(region: str, client: Any) -> indexing.Listing:
    """Walk the region's root on one of its workers."""
    return indexing.list_in_region(client, region)


@task(name="plan-index", cache_policy=NO_CACHE)
def plan_index(
    region: str,
    catalog: CatalogSettings,
    listing: indexing.Listing | None,
    changed: list[str] | None,
    deleted: list[str] | None,
    etags: dict[str, str] | None,
) -> indexing.IndexPlan:
    """What is new, changed or gone, against the catalog's fingerprints."""
    with catalog.open() as cat:
        fps = cat.fingerprints(region)
    return indexing.plan_changes(fps, listing, changed=changed, deleted=deleted, etags=etags)


@task(name="extract-and-index", cache_policy=NO_CACHE)
def extract_and_index(
    client: Any,
    catalog: CatalogSettings,
    report: indexing.IndexReport,
    paths: list[str],
    etags: dict[str, str] | None,
    batch_size: int,
) -> indexing.IndexReport:
    """Extract in the region, batch by batch, and write each batch in bulk as it lands."""
    with catalog.open() as cat:
        return indexing.extract_and_write(
            client, cat, report.region, paths, etags=etags, batch_size=batch_size, report=report
        )


@task(name="remove-vanished", cache_policy=NO_CACHE)
def remove_vanished(region: str, paths: list[str], catalog: CatalogSettings) -> int:
    """Drop the records of datasets that are no longer in the region."""
    with catalog.open() as cat:
        return cat.delete(record_id(region, p) for p in paths)
