"""Nightly deployments come from the saved Region blocks: prefect.yaml schedules nothing, `proximate
deploy-nightly` schedules one run per region that asks for one, and every scheduled run names saved blocks."""

from __future__ import annotations

import asyncio
import inspect
import zoneinfo
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]


def _deployments() -> dict[str, object]:
    from prefect import get_client

    async def read():
        async with get_client() as client:
            return {d.name: d for d in await client.read_deployments()}

    return asyncio.run(read())


def _create_pool(name: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async def create():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"), overwrite=True)

    asyncio.run(create())


def test_prefect_yaml_schedules_nothing_and_its_parameters_are_the_flows():
    """A fresh `prefect deploy --all` creates no schedule, so no run can fail for lack of a Region block."""
    import importlib

    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    for d in spec["deployments"]:
        assert not d.get("schedules"), d["name"]
        assert "region" not in (d.get("parameters") or {}), d["name"]
        module, _, name = d["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(module), name)
        assert set(d.get("parameters") or {}) <= set(inspect.signature(flow.fn).parameters)


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_deploy_nightly_follows_the_region_blocks(prefect_server, tmp_path):
    from blocks.cluster import RegionalCluster
    from blocks.region import Region
    from deployments.nightly import deploy_nightly

    with pytest.raises(ValueError, match="no RegionalCluster block named 'nightly-test-cluster'"):
        deploy_nightly("nightly-test-pool", cluster="nightly-test-cluster")
    RegionalCluster(address="tcp://127.0.0.1:8786").save("nightly-test-cluster", overwrite=True)
    with pytest.raises(ValueError, match="no work pool named 'nightly-test-pool'"):
        deploy_nightly("nightly-test-pool", cluster="nightly-test-cluster")
    _create_pool("nightly-test-pool")
    Region(name="dep-a", root=str(tmp_path / "a"), nightly_cron="30 1 * * *", nightly_timezone="Europe/London").save(
        "dep-a", overwrite=True
    )
    Region(name="dep-b", root=str(tmp_path / "b")).save("dep-b", overwrite=True)
    done = deploy_nightly("nightly-test-pool", cluster="nightly-test-cluster")
    assert "nightly-dep-a" in done["created"] and "nightly-dep-b" not in done["created"]
    deployments = _deployments()
    a = deployments["nightly-dep-a"]
    assert a.parameters == {"region": "dep-a", "cluster": "nightly-test-cluster"}
    assert a.entrypoint == "flows.nightly:nightly_region" and a.work_pool_name == "nightly-test-pool"
    (schedule,) = a.schedules
    assert schedule.active and schedule.schedule.cron == "30 1 * * *"
    assert schedule.schedule.timezone == "Europe/London"
    # Every scheduled nightly deployment names blocks that exist: its runs cannot fail for lack of one.
    for d in deployments.values():
        if d.schedules and d.entrypoint == "flows.nightly:nightly_region":
            assert Region.load(d.parameters["region"]).nightly_cron
            RegionalCluster.load(d.parameters["cluster"])

    Region(name="dep-a", root=str(tmp_path / "a")).save("dep-a", overwrite=True)  # no cron any more
    done = deploy_nightly("nightly-test-pool", cluster="nightly-test-cluster")
    assert "nightly-dep-a" in done["removed"] and "nightly-dep-a" not in _deployments()


def test_a_bad_cron_or_timezone_is_refused_naming_it(tmp_path):
    from pydantic import ValidationError

    from blocks.region import Region

    with pytest.raises(ValidationError, match="nightly_cron"):
        Region(name="r", root=str(tmp_path), nightly_cron="every night")
    with pytest.raises(ValidationError, match="Europe/Londres"):
        Region(name="r", root=str(tmp_path), nightly_cron="0 1 * * *", nightly_timezone="Europe/Londres")
    zoneinfo.ZoneInfo(Region(name="r", root=str(tmp_path)).nightly_timezone)
