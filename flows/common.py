"""What every flow shares: the cluster it runs on and the catalog it reads, each decided once, here, in the
flow's process, then passed explicitly to the tasks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from prefect_dask import DaskTaskRunner

from blocks.catalog import CatalogConfig
from blocks.cluster import DEFAULT_CLUSTER_BLOCK, RegionalCluster
from blocks.region import Region
from proximate.catalog import CatalogSettings

__all__ = ["DEFAULT_CLUSTER_BLOCK", "catalog_settings", "cluster_task_runner"]


def catalog_settings(name: str | None) -> CatalogSettings:
    """The catalog a run uses: the saved ``CatalogConfig`` block ``name``, else the default
    (``PROXIMATE_CATALOG``, else ``catalog/proximate.sqlite`` under the flow's working directory)."""
    if not name:
        return CatalogSettings.from_env()
    try:
        block = CatalogConfig.load(name)
    except ValueError as exc:
        raise ValueError(f"no CatalogConfig block named {name!r}: save one (see README) or leave it empty") from exc
    return block.settings()


@contextlib.contextmanager
def cluster_task_runner(
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
    regions: Sequence[str] = (),
) -> Iterator[DaskTaskRunner]:
    """A DaskTaskRunner on the multi-region cluster: on ``scheduler_address`` when given, else on the saved
    RegionalCluster block ``cluster`` (a 'local' block starts its cluster for as long as the context).

    Args:
        cluster: Name of the RegionalCluster block.
        scheduler_address: A running scheduler (tcp://host:port), instead of the block.
        regions: Regions the run needs. A 'local' block that lists no Region blocks serves the Region blocks of
            these names; one that lists some must serve every one of them.
    """
    if scheduler_address:
        block = RegionalCluster(address=scheduler_address)
    else:
        try:
            block = RegionalCluster.load(cluster)
        except ValueError as exc:
            raise ValueError(
                f"no RegionalCluster block named {cluster!r}: save one (see README) or pass scheduler_address"
            ) from exc
    region_blocks = None
    if block.address == "local" and regions:
        region_blocks = [Region.load(n) for n in (block.regions or regions)]
        missing = set(regions) - {r.name for r in region_blocks}
        if missing:
            raise ValueError(f"cluster block {cluster!r} does not serve region(s) {sorted(missing)}")
    with block.task_runner(region_blocks) as runner:
        yield runner
