"""Coarse Prefect tasks for catalog indexing: one task per step of a region's run, each driving many small
Dask tasks pinned to the region (Prefect's per-task overhead is far too large for one task per file)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from prefect import task

from blocks.catalog import CatalogConfig
from proximate.catalog import Catalog, indexing


def load_catalog_config(name: str | None) -> CatalogConfig:
    """The saved ``CatalogConfig`` block, or the default (SQLite under the working directory) if unnamed."""
    return CatalogConfig.load(name) if name else CatalogConfig()


@contextlib.contextmanager
def catalog_from(name: str | None) -> Iterator[Catalog]:
    cat = load_catalog_config(name).get_catalog()
    try:
        yield cat
    finally:
        cat.close()


@contextlib.contextmanager
def dask_client(address: str) -> Iterator[Any]:
    from distributed import Client

    with Client(address, set_as_default=False, timeout=60) as client:
        yield client


@task(name="list-region-datasets", retries=1)
def list_region_datasets(region: str, address: str) -> dict[str, tuple[int, int]]:
    """Walk the region's root on one of its workers."""
    with dask_client(address) as client:
        return indexing.list_in_region(client, region)


@task(name="plan-index")
def plan_index(
    region: str,
    catalog: str | None,
    listing: dict[str, tuple[int, int]] | None,
    changed: list[str] | None,
    deleted: list[str] | None,
    etags: dict[str, str] | None,
) -> indexing.IndexPlan:
    """What is new, changed or gone, against the catalog's fingerprints."""
    with catalog_from(catalog) as cat:
        fps = cat.fingerprints(region)
    return indexing.plan_changes(fps, listing, changed=changed, deleted=deleted, etags=etags)


@task(name="extract-and-index")
def extract_and_index(
    region: str,
    paths: list[str],
    address: str,
    catalog: str | None,
    etags: dict[str, str] | None,
    batch_size: int,
) -> dict[str, Any]:
    """Extract in the region, batch by batch, and write each batch in bulk as it lands."""
    with dask_client(address) as client, catalog_from(catalog) as cat:
        report = indexing.extract_and_write(client, cat, region, paths, etags=etags, batch_size=batch_size)
    return report.as_dict()


@task(name="remove-vanished")
def remove_vanished(region: str, paths: list[str], catalog: str | None) -> int:
    """Drop the records of datasets that are no longer in the region."""
    from proximate.catalog.records import record_id

    with catalog_from(catalog) as cat:
        return cat.delete(record_id(region, p) for p in paths)
