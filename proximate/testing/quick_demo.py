"""The end-to-end demo on the embedded defaults (README command (a)).

Two regions on this machine: an ensemble forecast lives in ``ecmwf``, observations in ``gcp`` (the Met Office
set-up). The forecast is averaged over its realizations where it lives, only the small mean crosses to the
observations, and the report shows what ran where and what moved.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from proximate.cluster import LocalRegionalCluster
from proximate.io import open_dataset
from proximate.locality_report import locality
from proximate.pools import propagate_pools
from proximate.testing import synthetic

FORECAST_REGION = "ecmwf"
OBSERVATIONS_REGION = "gcp"


def prepare_regions(workdir: Path, *, realizations: int = 8, nlat: int = 180, nlon: int = 360) -> dict[str, Path]:
    """Generate one small dataset per region, in each region's root."""
    roots = {
        FORECAST_REGION: workdir / "regions" / FORECAST_REGION,
        OBSERVATIONS_REGION: workdir / "regions" / OBSERVATIONS_REGION,
    }
    for root in roots.values():
        root.mkdir(parents=True, exist_ok=True)
    fc = roots[FORECAST_REGION] / "forecast" / "air_temperature.nc"
    if not fc.exists():
        synthetic.write_netcdf(
            synthetic.forecast(realizations=realizations, nlat=nlat, nlon=nlon),
            fc,
            chunks={"realization": 1, "height": 4},
        )
    obs = roots[OBSERVATIONS_REGION] / "observations" / "air_temperature.nc"
    if not obs.exists():
        synthetic.write_netcdf(synthetic.observations(nlat=nlat, nlon=nlon), obs)
    return roots


def run_demo(workdir: Path, *, workers_per_region: int = 2, height_index: int = 10) -> dict:
    workdir = Path(workdir).resolve()
    t0 = time.perf_counter()
    roots = prepare_regions(workdir)
    print(f"regions: {', '.join(f'{k}={v}' for k, v in roots.items())}")
    with LocalRegionalCluster(roots, workers_per_region=workers_per_region) as cluster, cluster.client() as client:
        print(f"cluster: {cluster.address} ({workers_per_region} workers per region)")
        forecast = open_dataset(FORECAST_REGION, "forecast/air_temperature.nc", chunks={"realization": 1, "height": 4})
        observations = open_dataset(OBSERVATIONS_REGION, "observations/air_temperature.nc")
        with propagate_pools(), locality(client) as report:
            diff = (
                forecast.air_temperature.mean("realization").isel(height=height_index) - observations.air_temperature
            ).compute()
    print("\ntasks per region:")
    for region, n in sorted(report.tasks_by_region.items()):
        print(f"  {region:>8}: {n} tasks")
    print("\nbytes between regions (measured from worker transfer logs):")
    for (src, dst), n in sorted(report.bytes_between.items()):
        print(f"  {src:>8} -> {dst:<8} {n:>12,} B")
    print(f"\ncross-region bytes: {report.cross_region_bytes:,} (egress ~${report.egress_cost():.6f})")
    print(f"mean forecast-minus-observation difference: {float(np.nanmean(diff.values)):.3f} K")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return {"report": report, "result": diff}
