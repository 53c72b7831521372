"""One scheduled nightly deployment per saved Region block, from the blocks themselves.

    proximate deploy-nightly [--pool proximate-local]      (or: python -m deployments.nightly)

``prefect.yaml`` has no schedules: a schedule there would name regions that a fresh install does not have, and
each of its runs would fail for lack of a block. Instead each Region block says when its region is ingested
(``nightly_cron``, ``nightly_timezone``), and this command makes the deployments ``nightly-<region>`` agree with
the saved blocks: one per block with a cron, none for a region whose block is gone or has no cron. Run it again
after saving, changing or deleting a Region block.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The project folder the flow runs import (as prefect.yaml's pull step has it).
PROJECT = Path(__file__).resolve().parents[1]
WORK_POOL = "proximate-local"
PREFIX = "nightly-"
ENTRYPOINT = "flows.nightly:nightly_region"
DEFAULT_CLUSTER = "proximate-cluster"


async def _sync_deployments(pool: str, project: Path, cluster: str) -> dict[str, list[str]]:
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.callables import parameter_schema

    from blocks.cluster import RegionalCluster
    from flows.nightly import nightly_region

    async with get_client() as client:
        try:
            await client.read_block_document_by_name(cluster, RegionalCluster.get_block_type_slug())
        except ObjectNotFound:
            raise ValueError(
                f"no RegionalCluster block named {cluster!r}: every nightly run would fail for lack of it; save one"
                " (see docs/configuration.md) or name another with --cluster"
            ) from None
        try:
            await client.read_work_pool(pool)
        except ObjectNotFound:
            raise ValueError(
                f"no work pool named {pool!r}: create it (prefect work-pool create {pool} --type process"
                " --base-job-template deployments/process-pool.json) or name another with --pool"
            ) from None
        regions = await _saved_regions(client)
        flow_id = await client.create_flow_from_name(nightly_region.name)
        wanted = {f"{PREFIX}{r.name}": r for r in regions if r.nightly_cron}
        created = []
        for name, region in sorted(wanted.items()):
            await client.create_deployment(
                flow_id=flow_id,
                name=name,
                description=f"Nightly ingestion of region {region.name}: sync its S3 prefix, index what changed.",
                entrypoint=ENTRYPOINT,
                path=str(project),
                work_pool_name=pool,
                parameters={"region": region.name, "cluster": cluster},
                parameter_openapi_schema=parameter_schema(nightly_region).model_dump_for_openapi(),
                schedules=[
                    DeploymentScheduleCreate(
                        schedule=CronSchedule(cron=region.nightly_cron, timezone=region.nightly_timezone), active=True
                    )
                ],
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}],
            )  # creates or updates (deployments are unique by flow and name)
            created.append(name)
        removed = []
        for deployment in await client.read_deployments():
            # nightly-region (the on-demand deployment of prefect.yaml) has no region parameter: never removed
            region = (deployment.parameters or {}).get("region")
            ours = deployment.flow_id == flow_id and deployment.name.startswith(PREFIX) and region is not None
            if ours and deployment.name not in wanted:
                await client.delete_deployment(deployment.id)
                removed.append(deployment.name)
    return {"created": created, "removed": sorted(removed)}


@dataclass(frozen=True)
class RegionSchedule:
    """When a saved Region block asks its region to be ingested."""

    name: str
    nightly_cron: str | None
    nightly_timezone: str


async def _saved_regions(client) -> list[RegionSchedule]:
    from blocks.region import Region

    docs = await client.read_block_documents_by_type(Region.get_block_type_slug(), include_secrets=False)
    # Only the schedule fields: the rest may hold secrets, which are not read here. A block saved under another
    # name than its region's is not one the flows can load by region name.
    return [
        RegionSchedule(doc.name, doc.data.get("nightly_cron") or None, doc.data.get("nightly_timezone") or "UTC")
        for doc in docs
        if doc.name == doc.data.get("name")
    ]


def saved_regions() -> list[RegionSchedule]:
    """When each saved Region block asks its region to be ingested."""
    from prefect import get_client

    async def read() -> list:
        async with get_client() as client:
            return await _saved_regions(client)

    return asyncio.run(read())


def deploy_nightly(
    pool: str = WORK_POOL, project: Path = PROJECT, cluster: str = DEFAULT_CLUSTER
) -> dict[str, list[str]]:
    """Make the ``nightly-<region>`` deployments match the saved Region blocks.

    Args:
        pool: The work pool the deployments run on.
        project: The folder flow runs start in (holds ``flows/``).
        cluster: The RegionalCluster block the runs use; it must be saved.

    Returns:
        The deployments ``created`` (or updated) and ``removed``.

    Raises:
        ValueError: No RegionalCluster block named ``cluster``, or no work pool named ``pool``.
    """
    return asyncio.run(_sync_deployments(pool, project, cluster))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proximate deploy-nightly", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", default=WORK_POOL, help=f"work pool of the deployments (default {WORK_POOL})")
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, help="RegionalCluster block the runs use")
    args = parser.parse_args(argv)
    try:
        done = deploy_nightly(args.pool, cluster=args.cluster)
    except ValueError as exc:
        print(f"proximate deploy-nightly: error: {exc}", file=sys.stderr)
        return 2
    for name in done["created"]:
        print(f"deployment {name}: scheduled")
    for name in done["removed"]:
        print(f"deployment {name}: removed (no Region block with a nightly_cron)")
    if not done["created"] and not done["removed"]:
        print("no Region block has a nightly_cron: no nightly deployment (set one and run this again)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
