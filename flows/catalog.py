"""The ``index-region`` flow: bring the catalog up to date with one region, incrementally.

Listing and extraction run on the region's workers (Dask tasks pinned with ``pool-<region>: 0``); records are
written in bulk from the flow's process, which reaches the catalog. A corrupt dataset becomes an error record
(keeping its last good metadata) and never aborts the run. The run ends with a markdown artifact, and Failed,
naming them, when the catalog refused records (after storing the rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from flows.common import (
    DEFAULT_CLUSTER_BLOCK,
    RegionalTaskRunner,
    catalog_settings,
    cluster_block,
    fails_on_input_errors,
    run_regions_on_cluster,
)
from proximate.catalog import CatalogSettings
from proximate.catalog.indexing import IndexPlan, IndexReport, IndexStages, Listing, run_index, summary_markdown
from proximate.regions import validate_region_name
from tasks.catalog import extract_and_index, list_region_datasets, plan_index, remove_vanished


@flow(name="index-region", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def index_region(
    region: str,
    changed: list[str] | None = None,
    deleted: list[str] | None = None,
    etags: dict[str, str] | None = None,
    catalog: str | None = None,
    scheduler_address: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    batch_size: int = 50,
) -> IndexReport | State:
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
        What the run listed, extracted, found broken and removed; a Failed state carrying it, naming the
        records, when the catalog refused some (the others were stored first; a refused record is not in the
        catalog, so the next run that lists the region extracts it again).
    """
    validate_region_name(region)
    settings = catalog_settings(catalog)
    client = run_regions_on_cluster(cluster_block(cluster, scheduler_address), "region", [region])
    report = index_with(client, region, settings, changed, deleted, etags, batch_size)
    if report.rejected:
        # Completed would tell whoever watches the runs that the region is searchable when part of it is not.
        stored = report.extracted - len(report.rejected)
        return Failed(
            message=f"region {region!r}: the catalog refused {len(report.rejected)} record(s) and stored the other "
            f"{stored}; the refused ones are extracted again next run: {report.refused_summary()}",
            data=report,
        )
    return report


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
    report = run_index(
        client, region, _TaskStages(settings), changed=changed, deleted=deleted, etags=etags, batch_size=batch_size
    )
    create_markdown_artifact(
        key=f"catalog-index-{region}",
        markdown=summary_markdown(report, settings.describe()),
        description=f"Catalog index run of region {region}",
    )
    return report


class _TaskStages(IndexStages):
    """The core pipeline's stages as this flow's Prefect tasks; each task opens the catalog from ``settings``."""

    def __init__(self, settings: CatalogSettings) -> None:
        self.settings = settings

    def list(self, client: Any, region: str) -> Listing:
        return list_region_datasets(region, client)

    def plan(
        self,
        region: str,
        listing: Listing | None,
        changed: Sequence[str] | None,
        deleted: Sequence[str] | None,
        etags: Mapping[str, str] | None,
    ) -> IndexPlan:
        return plan_index(region, self.settings, listing, _list(changed), _list(deleted), _dict(etags))

    def planned(self, region: str, plan: IndexPlan) -> None:
        get_run_logger().info("region %s: %d to extract, %d to remove, %d unchanged", region, len(plan.extract),
                              len(plan.delete), plan.unchanged)  # fmt: skip

    def extract(
        self, client: Any, report: IndexReport, paths: Sequence[str], etags: Mapping[str, str] | None, batch_size: int
    ) -> IndexReport:
        return extract_and_index(client, self.settings, report, list(paths), _dict(etags), batch_size)

    def remove(self, region: str, paths: Sequence[str]) -> None:
        remove_vanished(region, list(paths), self.settings)


def _list(items: Sequence[str] | None) -> list[str] | None:
    return None if items is None else list(items)


def _dict(mapping: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if mapping is None else dict(mapping)
