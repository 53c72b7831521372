"""Blocks pass Prefect's block standards (as prefect-aws tests its own) and do what they say."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect_aws import AwsCredentials
from pydantic import ValidationError

from blocks import CatalogConfig, Region, RegionalCluster


@pytest.mark.parametrize("block", [Region, RegionalCluster, CatalogConfig])
class TestAllBlocksAdhereToStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block: type[Block]) -> type[Block]:
        return block

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # The standard test downloads the logo; CI has no internet. Check what can be checked offline.
        assert str(block._logo_url).startswith("https://")


def test_region_validates_name():
    with pytest.raises(ValidationError, match="invalid region name"):
        Region(name="Not Valid", root="/data")


def test_region_storage_options_from_aws_credentials_keep_secret_out_of_repr():
    creds = AwsCredentials(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="s3cr3t-value", region_name="eu-west-2"
    )
    region = Region(
        name="eu-west-2",
        root="/fsx",
        source_url="s3://bucket/p/",
        aws_credentials=creds,
        endpoint_url="http://127.0.0.1:9000",
    )
    opts = region.storage_options()
    assert opts["key"] == "AKIDEXAMPLE" and opts["secret"] == "s3cr3t-value"
    assert opts["client_kwargs"] == {"region_name": "eu-west-2", "endpoint_url": "http://127.0.0.1:9000"}
    assert "s3cr3t-value" not in repr(region) and "s3cr3t-value" not in str(region.model_dump())


def test_regional_cluster_validation():
    with pytest.raises(ValidationError, match="tls://"):
        RegionalCluster(address="tls://sched:8786")
    with pytest.raises(ValidationError, match="address must be"):
        RegionalCluster(address="sched:8786")
    assert RegionalCluster(address="tcp://127.0.0.1:8786").tls() is None


def test_catalog_config_validation():
    with pytest.raises(ValidationError, match="opensearch_url"):
        CatalogConfig(backend="opensearch")
    cfg = CatalogConfig(backend="opensearch", opensearch_url="https://os:9200", username="u", password="pw")
    assert "pw" not in repr(cfg)


def test_blocks_save_and_load_through_the_server(prefect_server, tmp_path):
    Region(name="a", root=str(tmp_path), source_url="s3://bucket/a/").save("test-region-a", overwrite=True)
    RegionalCluster(regions=["test-region-a"], workers_per_region=1).save("test-local", overwrite=True)
    loaded = RegionalCluster.load("test-local")
    assert loaded.regions == ["test-region-a"] and loaded.address == "local"
    assert Region.load("test-region-a").source_url == "s3://bucket/a/"


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_local_regional_cluster_block_gives_a_working_task_runner(prefect_server, tmp_path):
    import os

    from prefect import flow, task

    (tmp_path / "r").mkdir()
    Region(name="r", root=str(tmp_path / "r")).save("test-region-r", overwrite=True)
    block = RegionalCluster(regions=["test-region-r"], workers_per_region=1)

    @task
    def where() -> str:
        return os.environ.get("PROXIMATE_REGION", "none")

    @flow
    def probe() -> str:
        return where.submit().result()

    with block.task_runner() as runner:
        assert probe.with_options(task_runner=runner)() == "r"


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_blocks_register_from_module(prefect_server):
    import os
    import subprocess
    import sys
    from pathlib import Path

    prefect = str(Path(sys.executable).with_name("prefect"))
    env = {**os.environ, "PREFECT_API_URL": prefect_server}  # the harness's server, not an ephemeral one
    out = subprocess.run(
        [prefect, "block", "register", "-m", "blocks"], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Proximate Region" in out.stdout and "Proximate Regional Cluster" in out.stdout
