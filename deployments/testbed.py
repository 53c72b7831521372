"""Prefect on the testbed: a Prefect server in the client namespace and the blocks of the testbed's regions.

The server listens on the client namespace's address, so that the regions' workers reach its API over their
links as they would in production (a Prefect task on a worker reports its state and loads its Region block there).
The user's Python runs in the client namespace through an agent whose ``PREFECT_API_URL`` points at it. Used by
``tests/test_ingestion_testbed.py`` and ``bench/ingest.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from deployments import prefect_server

PREFECT_PORT = 4200
CLUSTER_BLOCK = "testbed-cluster"
CATALOG_BLOCK = "testbed-catalog"


@contextlib.contextmanager
def prefect_agent(bed: Any, log_name: str = "prefect-agent") -> Iterator[Any]:
    """Start a Prefect server in ``bed``'s client namespace, save the testbed's blocks (a Region block per region,
    the RegionalCluster ``testbed-cluster`` with the testbed's TLS files, the SQLite CatalogConfig
    ``testbed-catalog`` in its workdir), and yield an agent in the client namespace that uses that server.

    Args:
        bed: A started :class:`proximate.testing.testbed.Testbed`; the server is stopped with it.
        log_name: The agent's log file name under the testbed's ``logs/``.
    """
    from proximate.testing.testbed import CLIENT
    from proximate.testing.testbed.agent import Agent

    host = bed.address(CLIENT)
    env = {
        **bed.client_env(),
        "PREFECT_HOME": str(bed.workdir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    # Prefect's server with write transactions that queue instead of failing (deployments/prefect_server.py).
    cmd = prefect_server.command("--host", host, "--port", str(PREFECT_PORT))
    bed.roster.spawn("prefect-server", CLIENT, cmd, env, "prefect")
    bed.roster.wait_port("prefect-server", CLIENT, host, PREFECT_PORT)
    with (
        open(bed.workdir / "logs" / f"{log_name}.log", "ab") as log,
        Agent(
            bed.namespace(CLIENT), {**env, "PREFECT_API_URL": f"http://{host}:{PREFECT_PORT}/api"}, stderr=log
        ) as agent,
    ):
        agent.call(wait_for_api, timeout=240)
        tls = bed.tls and {"tls_ca_file": bed.tls.ca_file, "tls_cert": bed.tls.cert, "tls_key": bed.tls.key}
        roots = {r: str(bed.root(r)) for r in bed.regions}
        endpoints = {r: bed.s3_endpoint(r) for r in bed.regions}
        agent.call(save_blocks, roots, endpoints, bed.scheduler_address, tls, str(bed.workdir / "catalog.sqlite"))
        yield agent


# -- run by the agent, in the client namespace ---------------------------------------------------------------


def wait_for_api(timeout: float = 230.0) -> None:
    """Until the Prefect API this process uses answers its health check (as ``proximate up`` waits for it)."""
    from prefect.settings import PREFECT_API_URL

    from deployments.stages import get_json, wait_until

    url = f"{PREFECT_API_URL.value()}/health"
    wait_until(lambda: get_json(url) is True, what="the Prefect server", timeout=timeout)


def save_blocks(
    roots: dict[str, str], endpoints: dict[str, str], scheduler: str, tls: dict[str, str] | None, catalog_path: str
) -> None:
    """A Region block per region (its bucket ``proximate-<region>`` on its own S3 server), the cluster and the
    catalog blocks."""
    from blocks.catalog import CatalogConfig
    from blocks.cluster import RegionalCluster
    from blocks.region import Region
    from proximate.testing.testbed import bucket_name

    for region, root in roots.items():
        source = f"s3://{bucket_name(region)}/"
        Region(name=region, root=root, source_url=source, endpoint_url=endpoints[region]).save(region, overwrite=True)
    RegionalCluster(address=scheduler, **(tls or {})).save(CLUSTER_BLOCK, overwrite=True)
    CatalogConfig(backend="sqlite", sqlite_path=catalog_path).save(CATALOG_BLOCK, overwrite=True)
