"""Ingestion on the testbed: each region's S3 server is reachable only inside the region, so the nightly flow,
started in the client namespace, can only succeed if its sync really runs on the region's workers.

Runs as root only (namespaces). One testbed (client + ecmwf + gcp, one worker each, TLS) and one Prefect server
in the client namespace, listening on the client's address so that the regions' workers reach its API as they
would in production. Link byte counters are read on the host around the runs.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

from proximate.testing.testbed import CLIENT, Testbed, netns

# slow: a testbed and a Prefect server in its client namespace, two nightly runs (about 0.6 min at load 1-3)
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the testbed needs root (network namespaces)"),
    pytest.mark.slow,
]

REGIONS = ("ecmwf", "gcp")
PREFECT_PORT = 4200
FILES_PER_REGION = 12
BULK_BYTES = 8 * 2**20  # one big object per region: what must never cross a link


def _netcdf(region: str, i: int) -> bytes:
    """A small indexable NetCDF file (written by scipy, not by the code under test)."""
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), np.full((2, 3, 4), 270.0 + i, "f4"), {"units": "K"})},
        coords={
            "time": np.array(["2024-03-01", "2024-03-02"], "datetime64[ns]"),
            "lat": ("lat", [10.0, 11.0, 12.0], {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": (
                "lon",
                [float(i), i + 1.0, i + 2.0, i + 3.0],
                {"units": "degrees_east", "standard_name": "longitude"},
            ),
        },
        attrs={"title": f"{region} file {i}"},
    )
    return bytes(ds.to_netcdf())


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ingest-testbed")
    tb = Testbed(list(REGIONS), name="pxingest", workers_per_region=1, workdir=workdir, memory_limit="1GiB")
    try:
        tb.up()
        objects = {r: {f"obs/f{i:02d}.nc": _netcdf(r, i) for i in range(FILES_PER_REGION)} for r in REGIONS}
        for region in REGIONS:
            objects[region]["bulk/blob.bin"] = os.urandom(BULK_BYTES)
            for key, body in objects[region].items():
                tb.put_object(region, key, body)
        tb.objects = objects
        yield tb
    finally:
        tb.down()
    assert not [n for n in netns.list_namespaces() if n.startswith(f"{tb.name}-")]


@pytest.fixture(scope="module")
def flow_agent(bed):
    """A Prefect server on the client's address and an agent (the user's Python) in the client namespace."""
    from deployments.testbed import prefect_agent

    with prefect_agent(bed, "flow-agent") as agent:
        yield agent


# -- functions the agent runs in the client namespace ---------------------------------------------------------


def _nightly(region: str) -> dict:
    from deployments.testbed import CATALOG_BLOCK, CLUSTER_BLOCK
    from flows.nightly import nightly_region

    state = nightly_region(region, catalog=CATALOG_BLOCK, cluster=CLUSTER_BLOCK, return_state=True)
    return {"ok": state.is_completed(), "message": state.message, "data": state.result(raise_on_failure=False)}


def _client_reaches(endpoint: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(endpoint, timeout=3)
    except OSError as exc:
        return "HTTP Error" in str(exc)  # an HTTP answer, even an error, means the server was reached
    return True


def _catalog_paths(catalog_path: str) -> dict[str, list[str]]:
    from proximate.catalog import CatalogSettings

    with CatalogSettings(backend="sqlite", sqlite_path=catalog_path).open() as cat:
        return {r: sorted(cat.fingerprints(r)) for r in REGIONS}


# -- tests -----------------------------------------------------------------------------------------------------


def test_nightly_from_the_client_syncs_and_indexes_each_region_and_object_bytes_stay_in_it(bed, flow_agent):
    assert not flow_agent.call(_client_reaches, bed.s3_endpoint("ecmwf"))  # the bucket is not reachable from here
    before = bed.link_bytes()
    runs = {region: flow_agent.call(_nightly, region, timeout=300) for region in REGIONS}
    delta = bed.bytes_delta(before, bed.link_bytes())
    for region, run in runs.items():
        assert run["ok"], run["message"]
        for key, body in bed.objects[region].items():
            assert (bed.root(region) / key).read_bytes() == body
    indexed = flow_agent.call(_catalog_paths, str(bed.workdir / "catalog.sqlite"))
    for region in REGIONS:
        assert indexed[region] == sorted(bed.objects[region])  # the blob too, as an unsupported-format record

    object_bytes = {r: sum(map(len, bed.objects[r].values())) for r in REGIONS}
    for region, run in runs.items():
        locality = run["data"]["locality"]
        assert locality["object_bytes"] == object_bytes[region]
        client_link = delta[f"{CLIENT}-{region}"]["total"]
        print(
            f"\n{region}: objects {object_bytes[region]:,} B stayed in the region; results to the flow "
            f"{locality['left_region_bytes']:,} B (sync {locality['sync_result_bytes']:,}, records "
            f"{locality['index_result_bytes']:,}); client link carried {client_link:,} B (Dask and Prefect control "
            f"traffic included)"
        )
        # Not one object's worth crossed: the link carried metadata and control, a small fraction of the objects.
        assert client_link < BULK_BYTES / 4
        assert locality["link_bytes"] is not None  # the flow read the testbed's counters for its artifact
    assert delta["ecmwf-gcp"]["total"] < 64 * 2**10  # nothing to say to each other
