"""The nightly no-op: one region of ``--objects`` unchanged objects ingested through Prefect on the testbed (root).

A testbed with one region (its S3 server reachable only inside it, one worker) and a Prefect server in the client
namespace. The first nightly run syncs and indexes everything; then each of ``--rounds`` no-op runs lists the
bucket, finds nothing to fetch and nothing to index. Printed side by side, per no-op run:

- ours: the ``nightly-region`` flow called in the client namespace, end to end (flow run created to final state),
  with what its sync task took on the worker and the bytes on the client link;
- the peer: the same sync with no Prefect and no Dask, ``proximate sync`` run as a process inside the region
  (the floor of listing the bucket and reading the manifest).

    sudo python bench/ingest.py --objects 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.testbed import prefect_agent
from proximate.testing.testbed import CLIENT, Testbed, bucket_name, netns

REGION = "ecmwf"
PREFECT_PORT = 4200


def put_objects(bed: Testbed, count: int, body: bytes) -> None:
    """``count`` small objects into the region's bucket, from inside the region, 16 at a time."""

    def put_all() -> None:
        client = bed.s3_client(REGION)
        with ThreadPoolExecutor(16) as pool:
            keys = [f"data/{i // 1000:03d}/f{i:05d}.nc" for i in range(count)]
            list(pool.map(lambda k: client.put_object(Bucket=bucket_name(REGION), Key=k, Body=body), keys))

    netns.in_namespace(bed.namespace(REGION), put_all)


def small_netcdf() -> bytes:
    import numpy as np
    import xarray as xr

    ds = xr.Dataset(
        {"tas": (("lat", "lon"), np.zeros((2, 3), "f4"), {"units": "K"})},
        coords={"lat": ("lat", [0.0, 1.0], {"units": "degrees_north"}), "lon": ("lon", [0.0, 1.0, 2.0])},
    )
    return bytes(ds.to_netcdf())


# -- in the client namespace ------------------------------------------------------------------------------------


def nightly() -> dict:
    from flows.nightly import nightly_region

    t0 = time.perf_counter()
    from deployments.testbed import CATALOG_BLOCK, CLUSTER_BLOCK

    state = nightly_region(REGION, catalog=CATALOG_BLOCK, cluster=CLUSTER_BLOCK, return_state=True)
    wall = time.perf_counter() - t0
    data = state.result(raise_on_failure=False)
    return {"ok": state.is_completed(), "message": state.message, "wall": wall, "data": data}


# ---------------------------------------------------------------------------------------------------------------


def bare_sync(bed: Testbed) -> float:
    """``proximate sync`` inside the region, as a process: no Prefect, no Dask (it holds the same run lock)."""
    exe = Path(sys.executable).with_name("proximate")
    cmd = ["ip", "netns", "exec", bed.namespace(REGION), str(exe), "sync", f"s3://{bucket_name(REGION)}/",
           str(bed.root(REGION)), "--endpoint-url", bed.s3_endpoint(REGION)]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, **bed._env()})
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", default="100mbit")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/ingest.py needs root (network namespaces)", file=sys.stderr)
        return 2
    print(f"load before: {os.getloadavg()[0]:.2f}")
    with Testbed([REGION], name="pxbingest", workers_per_region=1, rate=args.rate, memory_limit="2GiB") as bed:
        t0 = time.perf_counter()
        put_objects(bed, args.objects, small_netcdf())
        print(f"{args.objects} objects put in {time.perf_counter() - t0:.1f} s")
        with prefect_agent(bed, "bench-agent") as agent:
            first = agent.call(nightly, timeout=3600)
            assert first["ok"], first["message"]
            print(
                f"first run: {first['wall']:.1f} s, synced {first['data']['sync']['transferred']}, indexed "
                f"{first['data']['index']['extracted']}"
            )
            ours, peers = [], []
            print(f"\n{'run':>4} | {'nightly flow (s)':>16} | {'its sync task (s)':>17} | {'client link (B)':>15} "
                  f"| {'proximate sync in region (s)':>28}")  # fmt: skip
            for i in range(args.rounds):
                before = bed.link_bytes()
                run = agent.call(nightly, timeout=600)
                delta = bed.bytes_delta(before, bed.link_bytes())
                assert run["ok"], run["message"]
                sync = run["data"]["sync"]
                assert sync["transferred"] == 0 and run["data"]["index"]["extracted"] == 0
                peer = bare_sync(bed)
                ours.append(run["wall"])
                peers.append(peer)
                link = delta[f"{CLIENT}-{REGION}"]["total"]
                print(f"{i + 1:>4} | {run['wall']:16.2f} | {sync['seconds']:17.2f} | {link:15,} | {peer:28.2f}")
            print(
                f"\nno-op nightly of {args.objects} unchanged objects: median {statistics.median(ours):.2f} s through"
                f" Prefect (goal < 10 s) vs {statistics.median(peers):.2f} s for the bare sync in the region"
            )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
