"""The ``index-region`` flow: bring the catalog up to date with one region, incrementally.

Listing and extraction run on the region's workers (Dask tasks pinned with ``pool-<region>: 0``); records are
written in bulk from the flow's process, which reaches the catalog. A corrupt dataset becomes an error record
(keeping its last good metadata) and never aborts the run. The run ends with a markdown artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common import (
    DEFAULT_CLUSTER_BLOCK,
    RegionalTaskRunner,
    catalog_settings,
    cluster_block,
    run_regions_on_cluster,
)
from proximate.catalog import CatalogSettings
from proximate.catalog.indexing import IndexReport, summary_markdown
from proximate.regions import validate_region_name
from tasks.catalog import extract_and_index, list_region_datasets, plan_index, remove_vanished


@flow(name="index-region", task_runner=RegionalTaskRunner())
def index_region(
    region: str,
    changed: list[str] | None = None,
    deleted: list[str] | None = None,
    etags: dict[str, str] | None = None,
    catalog: str | None = None,
    scheduler_address: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    batch_size: int = 50,
) -> IndexReport:
    """Index the region's new and changed datasets and drop vanished ones.

    Args:
        region: the region to index.
        changed: paths the sync changed (skips listing the region); None compares the region with the catalog.
        deleted: paths the sync removed.
        etags: ETags from the sync's manifest, per path, stored with the records and compared next time.
        catalog: name of a saved CatalogConfig block; None uses the default catalog.
        scheduler_address: a running regional scheduler; None takes the RegionalCluster block ``cluster``.
        cluster: RegionalCluster block name, used without scheduler_address.
        batch_size: datasets per Dask task.

    Returns:
        What the run listed, extracted, found broken and removed.
    """
    validate_region_name(region)
    settings = catalog_settings(catalog)
    client = run_regions_on_cluster(cluster_block(cluster, scheduler_address), "region", [region])
    return index_with(client, region, settings, changed, deleted, etags, batch_size)


def index_with(
    client: Any,
    region: str,
    settings: CatalogSettings,
    changed: list[str] | None = None,
    deleted: list[str] | None = None,
    etags: dict[str, str] | None = None,
    batch_size: int = 50,
) -> IndexReport:
    """The steps of an index run, as Prefect tasks of the calling flow, on a cluster it is connected to (the
    nightly flow indexes on the cluster its sync ran on).

    Args:
        client: A Dask client of the multi-region cluster.
        region: The region to index.
        changed: See :func:`index_region`.
        deleted: See :func:`index_region`.
        etags: See :func:`index_region`.
        batch_size: Datasets per Dask task.
        settings: The catalog to write.

    Returns:
        What the run listed, extracted, found broken and removed.
    """
    logger = get_run_logger()
    listing = None if changed is not None else list_region_datasets(region, client)
    plan = plan_index(region, settings, listing, changed, deleted, etags)
    logger.info("region %s: %d to extract, %d to remove, %d unchanged", region, len(plan.extract),
                len(plan.delete), plan.unchanged)  # fmt: skip
    report = IndexReport(region, listed=None if listing is None else len(listing), unchanged=plan.unchanged)
    if plan.extract:
        report = extract_and_index(client, settings, report, plan.extract, etags, batch_size)
    if plan.delete:
        remove_vanished(region, plan.delete, settings)
        report.deleted = sorted(set(plan.delete) | set(report.deleted))
    create_markdown_artifact(
        key=f"catalog-index-{region}",
        markdown=summary_markdown(report, settings.describe()),
        description=f"Catalog index run of region {region}",
    )
    return report
