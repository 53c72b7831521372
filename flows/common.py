"""What every analysis flow shares: getting a DaskTaskRunner for the multi-region cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect_dask import DaskTaskRunner

from blocks.cluster import RegionalCluster

DEFAULT_CLUSTER_BLOCK = "proximate-cluster"


@contextlib.contextmanager
def cluster_task_runner(
    cluster: str = DEFAULT_CLUSTER_BLOCK, scheduler_address: str | None = None
) -> Iterator[DaskTaskRunner]:
    """The saved RegionalCluster block's runner, or a runner on ``scheduler_address`` when given."""
    if scheduler_address:
        block = RegionalCluster(address=scheduler_address)
    else:
        try:
            block = RegionalCluster.load(cluster)
        except ValueError as exc:
            raise ValueError(
                f"no RegionalCluster block named {cluster!r}: save one (see README) or pass scheduler_address"
            ) from exc
    with block.task_runner() as runner:
        yield runner
