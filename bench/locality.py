"""Met Office scenario: proximate routing against a centralised run, in one go.

(i)  proximate: predictions are averaged in their region, only the small mean crosses; bytes from the workers'
     transfer logs.
(ii) centralised: workers in the client region read every input across regions (as over NFS between data
     centres); bytes are what those workers read from the other regions' file systems (/proc/<pid>/io rchar).

Both run on one machine, so wall time here is compute, not WAN; the projection line adds the time the measured
cross-region bytes would take over a WAN link of --wan-mbit (the Met Office table: 2.8 GiB over NFS across data
centres took more than 14 minutes, about 27 Mbit/s).

    python bench/locality.py --predictions-gb 1.0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import xarray as xr

from proximate.cluster import LocalRegionalCluster
from proximate.io import open_dataset
from proximate.locality_report import locality
from proximate.pools import compute, propagate_pools
from proximate.testing import synthetic

NLAT, NLON, HEIGHTS = 180, 360, 16


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


def prepare(workdir: Path, gb: float) -> dict[str, Path]:
    roots = {r: workdir / r for r in ("ecmwf", "gcp", "central")}
    for root in roots.values():
        root.mkdir(parents=True, exist_ok=True)
    realizations = synthetic.forecast_shape_for_bytes(int(gb * 1e9), heights=HEIGHTS, nlat=NLAT, nlon=NLON)
    pred = roots["ecmwf"] / "predictions.nc"
    if not pred.exists():
        synthetic.write_netcdf(
            synthetic.forecast(realizations=realizations, heights=HEIGHTS, nlat=NLAT, nlon=NLON),
            pred,
            chunks={"realization": 1, "height": 4},
        )
        synthetic.write_netcdf(synthetic.observations(nlat=NLAT, nlon=NLON), roots["gcp"] / "observations.nc")
    return roots


def run_proximate(roots: dict[str, Path], workers: int) -> dict:
    regions = {"ecmwf": roots["ecmwf"], "gcp": roots["gcp"]}
    with LocalRegionalCluster(regions, workers_per_region=workers) as cluster, cluster.client():
        pred = open_dataset("ecmwf", "predictions.nc", chunks={"realization": 1, "height": 4})
        obs = open_dataset("gcp", "observations.nc")
        t0 = time.perf_counter()
        with propagate_pools(), locality() as report:
            mean = pred.air_temperature.mean("realization").isel(height=10)
            result = (mean - obs.air_temperature).compute()
        wall = time.perf_counter() - t0
    minimum = min(mean.nbytes, obs.air_temperature.nbytes) + result.nbytes
    return {
        "bytes": report.cross_region_bytes,
        "wall": wall,
        "minimum": minimum,
        "input": pred.air_temperature.nbytes,
        "result": result,
    }


def run_centralised(roots: dict[str, Path], workers: int) -> dict:
    counts = {"ecmwf": 1, "gcp": 1, "central": workers}
    with LocalRegionalCluster(roots, workers_per_region=counts) as cluster, cluster.client() as c:
        info = c.scheduler_info(n_workers=-1)["workers"]
        central = [a for a, w in info.items() if "pool-central" in w["resources"]]
        before = c.run(_rchar, workers=central)
        pred = xr.open_dataset(roots["ecmwf"] / "predictions.nc", chunks={"realization": 1, "height": 4})
        obs = xr.open_dataset(roots["gcp"] / "observations.nc", chunks={})
        t0 = time.perf_counter()
        expr = pred.air_temperature.mean("realization").isel(height=10) - obs.air_temperature
        result = compute(expr, region="central")
        wall = time.perf_counter() - t0
        after = c.run(_rchar, workers=central)
    read = sum(after[w] - before[w] for w in central)
    return {"bytes": read, "wall": wall, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions-gb", type=float, default=1.0)
    parser.add_argument("--workers-per-region", type=int, default=2)
    parser.add_argument("--wan-mbit", type=float, default=27.0, help="WAN bandwidth for the projection")
    parser.add_argument("--workdir", help="keep generated data here (default: a temp folder)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="proximate-bench-locality-"))
    t0 = time.perf_counter()
    roots = prepare(workdir, args.predictions_gb)
    print(f"data ready in {time.perf_counter() - t0:.1f} s under {workdir}")
    prox = run_proximate(roots, args.workers_per_region)
    cent = run_centralised(roots, args.workers_per_region)
    xr.testing.assert_allclose(prox["result"], cent["result"])
    wan = args.wan_mbit * 1e6 / 8

    def row(name: str, r: dict) -> str:
        projected = r["wall"] + r["bytes"] / wan
        return f"| {name} | {r['bytes'] / 2**20:,.2f} | {r['wall']:.1f} | {projected:,.1f} |"

    print(
        f"\npredictions {prox['input'] / 1e9:.2f} GB in ecmwf, observations in gcp; "
        f"{args.workers_per_region} workers per region\n"
    )
    print(f"| run | cross-region MiB | wall s (this machine) | projected s at {args.wan_mbit:g} Mbit/s |")
    print("| --- | ---: | ---: | ---: |")
    print(row("proximate (routed)", prox))
    print(row("centralised (client-region workers read across regions)", cent))
    print(
        f"\nphysical minimum {prox['minimum'] / 2**20:.2f} MiB; proximate / minimum = "
        f"{prox['bytes'] / prox['minimum']:.3f}"
    )
    print(
        f"centralised / proximate: bytes {cent['bytes'] / prox['bytes']:,.0f}x, "
        f"wall {cent['wall'] / prox['wall']:.2f}x, "
        f"projected {(cent['wall'] + cent['bytes'] / wan) / (prox['wall'] + prox['bytes'] / wan):,.1f}x"
    )


if __name__ == "__main__":
    main()
