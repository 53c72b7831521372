"""The ``index-region`` flow: bring the catalog up to date with one region, incrementally.

Listing and extraction run on the region's workers (Dask tasks pinned with ``pool-<region>: 0``); records are
written in bulk from the flow's process, which reaches the catalog. A corrupt dataset becomes an error record
(keeping its last good metadata) and never aborts the run. The run ends with a markdown artifact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks.cluster import RegionalCluster
from blocks.region import Region
from proximate.catalog.indexing import IndexReport, summary_markdown
from proximate.regions import validate_region_name
from tasks.catalog import extract_and_index, list_region_datasets, load_catalog_config, plan_index, remove_vanished


@contextlib.contextmanager
def _scheduler(region: str, scheduler_address: str | None, cluster: str, region_block: str | None) -> Iterator[str]:
    """The scheduler address: given, or from the RegionalCluster block (a 'local' one starts for the run)."""
    if scheduler_address:
        yield scheduler_address
        return
    block = RegionalCluster.load(cluster)
    regions = [Region.load(n) for n in block.regions] if block.regions else [Region.load(region_block or region)]
    if region not in {r.name for r in regions}:
        raise ValueError(f"cluster block {cluster!r} does not serve region {region!r}")
    with block.task_runner(regions) as runner:
        yield runner.address


@flow(name="index-region")
def index_region(
    region: str,
    changed: list[str] | None = None,
    deleted: list[str] | None = None,
    etags: dict[str, str] | None = None,
    catalog: str | None = None,
    scheduler_address: str | None = None,
    cluster: str = "default",
    region_block: str | None = None,
    batch_size: int = 50,
) -> dict[str, Any]:
    """Index the region's new and changed datasets and drop vanished ones.

    Args:
        region: the region to index.
        changed: paths the sync changed (skips listing the region); None compares the region with the catalog.
        deleted: paths the sync removed.
        etags: ETags from the sync's manifest, per path, stored with the records and compared next time.
        catalog: name of a saved CatalogConfig block; None uses the default SQLite catalog.
        scheduler_address: a running regional scheduler; None takes the RegionalCluster block ``cluster``.
        cluster: RegionalCluster block name, used without scheduler_address.
        region_block: Region block name when the cluster block lists none (defaults to the region name).
        batch_size: datasets per Dask task.
    """
    logger = get_run_logger()
    validate_region_name(region)
    config = load_catalog_config(catalog)
    where = config.sqlite_path if config.backend == "sqlite" else f"{config.opensearch_url} ({config.index})"
    with _scheduler(region, scheduler_address, cluster, region_block) as address:
        listing = None if changed is not None else list_region_datasets(region, address)
        plan = plan_index(region, catalog, listing, changed, deleted, etags)
        logger.info("region %s: %d to extract, %d to remove, %d unchanged", region, len(plan.extract),
                    len(plan.delete), plan.unchanged)  # fmt: skip
        result = extract_and_index(region, plan.extract, address, catalog, etags, batch_size)
    if plan.delete:
        remove_vanished(region, plan.delete, catalog)
    report = IndexReport(
        region=region,
        listed=None if listing is None else len(listing),
        unchanged=plan.unchanged,
        extracted=result["extracted"],
        ok=result["ok"],
        errors=[tuple(e) for e in result["errors"]],
        deleted=sorted(set(plan.delete) | set(result["deleted"])),
        vanished=result["vanished"],
        seconds=result["seconds"],
    )
    create_markdown_artifact(
        key=f"catalog-index-{region}",
        markdown=summary_markdown(report, f"{config.backend}: {where}"),
        description=f"Catalog index run of region {region}",
    )
    return report.as_dict()
