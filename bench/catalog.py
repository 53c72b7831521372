"""Catalog benchmark: indexing throughput through the local regional cluster, and search latency at scale.

1. Generates ``--files`` small NetCDF files (varied variables, calendars, time spans, boxes, some across the
   antimeridian) under a region root, starts ``LocalRegionalCluster`` on it, and indexes the region into each
   backend with the same code the ``index-region`` flow runs (listing and extraction on the region's workers,
   bulk writes from here). Prints files/s (extract plus index).
2. Loads ``--records`` synthetic records into each backend and prints p50/p95 latency of five representative
   searches (``--repeat`` runs each, parameters varied per run).

Quick run:  .venv/bin/python bench/catalog.py --files 500 --records 5000 --repeat 20
Full run:   .venv/bin/python bench/catalog.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proximate.catalog import Catalog, CatalogQuery, open_catalog
from proximate.catalog.records import DatasetRecord, VariableInfo, record_id

VARIABLES = [
    ("tas", "air_temperature", "Near-Surface Air Temperature", "K"),
    ("pr", "precipitation_flux", "Precipitation", "kg m-2 s-1"),
    ("psl", "air_pressure_at_mean_sea_level", "Sea Level Pressure", "Pa"),
    ("uas", "eastward_wind", "Eastward Near-Surface Wind", "m s-1"),
    ("vas", "northward_wind", "Northward Near-Surface Wind", "m s-1"),
    ("tos", "sea_surface_temperature", "Sea Surface Temperature", "K"),
    ("hurs", "relative_humidity", "Near-Surface Relative Humidity", "%"),
    ("clt", "cloud_area_fraction", "Total Cloud Cover Percentage", "%"),
    ("zg", "geopotential_height", "Geopotential Height", "m"),
    ("sic", "sea_ice_area_fraction", "Sea-Ice Area Percentage", "%"),
    ("evspsbl", "water_evapotranspiration_flux", "Evaporation", "kg m-2 s-1"),
    ("rsds", "surface_downwelling_shortwave_flux_in_air", "Surface Downwelling Shortwave Radiation", "W m-2"),
]
CALENDARS = ["standard", "noleap", "360_day", "proleptic_gregorian"]
INSTITUTIONS = ["Met Office Hadley Centre", "DMI", "Wegener Center", "ECMWF", "NCAR", "MPI-M", "IPSL"]


def _random_box(rng: random.Random) -> tuple[float, float, float, float]:
    width, height = rng.choice([5, 10, 20, 40, 90, 360]), rng.choice([5, 10, 20, 60, 180])
    south = rng.uniform(-90, 90 - height) if height < 180 else -90.0
    if width == 360:
        return -180.0, south, 180.0, south + height
    west = rng.uniform(-180, 180)
    east = west + width
    if east >= 180:
        east -= 360  # crosses the antimeridian
    return west, south, east, south + height


# -- 1. files ----------------------------------------------------------------------------------------------------


def write_grib(path: Path, rng: random.Random) -> None:
    """One GRIB 2 message from ecCodes' sample template on a random regular lat/lon box."""
    import eccodes

    # whole even degrees: the sample's 2-degree grid (31 x 16 points) must fit its first and last points exactly
    west, south = 2 * rng.randint(-90, 74), 2 * rng.randint(-45, 15)
    h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
    for key, value in (
        ("latitudeOfFirstGridPointInDegrees", south + 60),
        ("latitudeOfLastGridPointInDegrees", south),
        ("longitudeOfFirstGridPointInDegrees", west),
        ("longitudeOfLastGridPointInDegrees", west + 30),
        ("dataDate", 20000101 + rng.randint(0, 20) * 10000),
        ("stepRange", str(rng.choice([0, 6, 24]))),
    ):
        eccodes.codes_set(h, key, value)
    eccodes.codes_set_values(h, np.zeros(eccodes.codes_get(h, "numberOfValues")))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        eccodes.codes_write(h, fh)
    eccodes.codes_release(h)


def write_geotiff(path: Path, rng: random.Random) -> None:
    """A two-band 64x48 GeoTIFF in EPSG:3577 (the EASI Landsat CRS) at a random place over Australia."""
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    west, north = rng.uniform(-1.5e6, 1.5e6), rng.uniform(-4.0e6, -1.5e6)
    profile = {"driver": "GTiff", "width": 64, "height": 48, "count": 2, "dtype": "uint16", "crs": "EPSG:3577",
               "transform": from_origin(west, north, 30.0, 30.0)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((2, 48, 64), "uint16"))


def write_file(args: tuple[Path, int, int, str]) -> None:
    import netCDF4

    path, i, seed, fmt = args
    if fmt in ("GRIB", "GEOTIFF"):
        (write_grib if fmt == "GRIB" else write_geotiff)(path, random.Random(seed * 1_000_003 + i))
        return
    rng = random.Random(seed * 1_000_003 + i)
    west, south, east, north = _random_box(rng)
    nlon, nlat, nt = 6, 5, 4
    lon = np.linspace(west, east + (360 if east < west else 0), nlon)
    lon = np.where(lon > 180, lon - 360, lon)
    lat = np.linspace(south, north, nlat)
    cal = rng.choice(CALENDARS)
    year = rng.randint(1850, 2100)
    step = rng.choice([1, 30, 90])
    chosen = rng.sample(VARIABLES, rng.randint(1, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.title = f"Benchmark dataset {i}: {', '.join(v[2] for v in chosen)}"
        ds.institution = rng.choice(INSTITUTIONS)
        ds.source = f"bench/catalog.py seed {seed}"
        ds.Conventions = "CF-1.8"
        ds.createDimension("time", None)
        ds.createDimension("lat", nlat)
        ds.createDimension("lon", nlon)
        t = ds.createVariable("time", "f8", ("time",))
        t.standard_name, t.units, t.calendar, t.axis = "time", f"days since {year}-01-01", cal, "T"
        t[:] = np.arange(nt) * step
        y = ds.createVariable("lat", "f8", ("lat",))
        y.standard_name, y.units = "latitude", "degrees_north"
        y[:] = lat
        x = ds.createVariable("lon", "f8", ("lon",))
        x.standard_name, x.units = "longitude", "degrees_east"
        x[:] = lon
        for name, sn, ln, units in chosen:
            v = ds.createVariable(name, "f4", ("time", "lat", "lon"))
            v.standard_name, v.long_name, v.units = sn, ln, units
            v[:] = np.zeros((nt, nlat, nlon), "f4")


def generate_files(root: Path, n: int, seed: int, procs: int, fmt: str) -> float:
    suffix = {"GRIB": ".grib2", "GEOTIFF": ".tif"}.get(fmt, ".nc")
    jobs = [(root / f"d{i // 1000:03d}" / f"file_{i:06d}{suffix}", i, seed, fmt) for i in range(n)]
    start = time.perf_counter()
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(write_file, jobs, chunksize=200))
    return time.perf_counter() - start


# -- 2. synthetic records ------------------------------------------------------------------------------------------


def synthetic_records(n: int, seed: int) -> list[DatasetRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        region = rng.choice(["eu-west-2", "us-east-1", "ap-southeast-2"])
        path = f"cmip/{rng.choice(['hist', 'ssp245', 'ssp585'])}/r{i % 50}/file_{i:07d}.nc"
        chosen = rng.sample(VARIABLES, rng.randint(1, 3))
        year = rng.randint(1850, 2100)
        start = dt.datetime(year, rng.randint(1, 12), rng.randint(1, 28))
        end = start + dt.timedelta(days=rng.choice([1, 30, 365, 3650]))
        box = [round(v, 3) for v in _random_box(rng)]
        out.append(
            DatasetRecord(
                id=record_id(region, path),
                region=region,
                path=path,
                format="netcdf",
                size=rng.randint(10_000, 10_000_000_000),
                mtime_ns=1_600_000_000_000_000_000 + i * 1_000_000_000,
                title=f"Synthetic {' and '.join(v[2] for v in chosen)}",
                institution=rng.choice(INSTITUTIONS),
                attrs={"title": f"Synthetic {' and '.join(v[2] for v in chosen)}", "experiment": path.split("/")[1]},
                variables=[
                    VariableInfo(
                        name=v[0],
                        standard_name=v[1],
                        long_name=v[2],
                        units=v[3],
                        dims=["time", "lat", "lon"],
                        shape=[12, 90, 180],
                        dtype="float32",
                    )
                    for v in chosen
                ],
                time_start=start.strftime("%Y-%m-%dT%H:%M:%S"),
                time_end=min(end, dt.datetime(9999, 1, 1)).strftime("%Y-%m-%dT%H:%M:%S"),
                bbox=[box[0], box[1], box[2], box[3]],
            )
        )
    return out


def search_mix(rng: random.Random) -> dict[str, Callable[[], CatalogQuery]]:
    def window() -> tuple[dt.datetime, dt.datetime]:
        y = rng.randint(1860, 2090)
        return dt.datetime(y, 1, 1), dt.datetime(y + rng.randint(0, 5), 12, 31)

    def box() -> list[float]:
        w, s, e, n = _random_box(rng)
        return [w, s, e, n]

    return {
        "variable": lambda: CatalogQuery(variable=rng.choice(VARIABLES)[0]),
        "free text": lambda: CatalogQuery(text=rng.choice(["air temperature", "sea ice", "wind", "precipitation"])),
        "time + region": lambda: CatalogQuery(
            region=rng.choice(["eu-west-2", "us-east-1"]),
            **dict(zip(("time_start", "time_end"), window(), strict=True)),
        ),
        "bbox": lambda: CatalogQuery(bbox=box()),
        "combined, sorted, page 3": lambda: CatalogQuery(
            standard_name=rng.choice(VARIABLES)[1],
            bbox=box(),
            time_start=window()[0],
            min_size=1_000_000,
            sort="-size",
            page=3,
            page_size=20,
        ),
    }


def measure_searches(catalog: Catalog, repeat: int, seed: int) -> dict[str, tuple[float, float, float]]:
    rng = random.Random(seed)
    out = {}
    for name, make in search_mix(rng).items():
        times, totals = [], []
        catalog.search(make())  # warm-up
        for _ in range(repeat):
            q = make()
            t0 = time.perf_counter()
            res = catalog.search(q)
            times.append((time.perf_counter() - t0) * 1000)
            totals.append(res.total)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        out[name] = (statistics.median(times), p95, statistics.mean(totals))
    return out


# -- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000, help="NetCDF files to generate and index")
    ap.add_argument("--records", type=int, default=100_000, help="synthetic records for the search benchmark")
    ap.add_argument("--repeat", type=int, default=100, help="runs of each search")
    ap.add_argument("--backends", default="sqlite,opensearch", help="comma-separated: sqlite, opensearch")
    ap.add_argument("--workers-per-region", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=100, help="files per Dask task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--format",
        default="NETCDF4",
        choices=["NETCDF4", "NETCDF4_CLASSIC", "NETCDF3_64BIT_OFFSET", "GRIB", "GEOTIFF"],
        help="file format: HDF5-based NetCDF-4 (slower to open), classic CDF, GRIB 2 or GeoTIFF",
    )
    ap.add_argument(
        "--opensearch-url", default=None, help="an OpenSearch cluster to use (default: a local node started here)"
    )
    ap.add_argument("--workdir", default=None, help="keep files here instead of a temp dir")
    ap.add_argument("--skip-index", action="store_true", help="only the search benchmark")
    args = ap.parse_args(argv)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="proximate-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None

    def catalog_for(backend: str, tag: str) -> Catalog:
        nonlocal server
        if backend == "sqlite":
            path = work / f"catalog-{tag}.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return open_catalog("sqlite", sqlite_path=path)
        url = args.opensearch_url
        if url is None:
            if server is None:
                from proximate.testing.opensearch import OpenSearchNode

                t0 = time.perf_counter()
                server = OpenSearchNode()
                server.start()
                print(f"started a local OpenSearch node at {server.url} in {time.perf_counter() - t0:.1f} s")
            url = server.url
        return open_catalog("opensearch", opensearch_url=url, index=f"bench-{tag}-{os.getpid()}")

    print(f"# catalog benchmark ({os.cpu_count()} cores), work dir {work}")
    try:
        if not args.skip_index and args.files > 0:
            root = work / f"region-bench-{args.format.lower()}-{args.files}"
            root.mkdir(exist_ok=True)
            if not any(root.iterdir()):
                secs = generate_files(root, args.files, args.seed, max(1, (os.cpu_count() or 2)), args.format)
                print(f"generated {args.files} {args.format} files in {secs:.1f} s")
            from proximate.catalog import indexing
            from proximate.cluster import LocalRegionalCluster

            with (
                LocalRegionalCluster({"bench": root}, workers_per_region=args.workers_per_region) as cluster,
                cluster.client() as client,
            ):
                for backend in backends:
                    with catalog_for(backend, "index") as cat:
                        t0 = time.perf_counter()
                        report = indexing.index_region(client, cat, "bench", batch_size=args.batch_size)
                        secs = time.perf_counter() - t0
                        assert report.ok == args.files, (report.ok, report.errors[:3])
                        assert cat.count() == args.files
                        again = indexing.index_region(client, cat, "bench", batch_size=args.batch_size)
                        print(
                            f"index {backend:10s}: {args.files} files in {secs:.1f} s = "
                            f"{args.files / secs:.0f} files/s "
                            f"(list + extract + write); incremental re-run with no change: {again.seconds:.1f} s, "
                            f"{again.extracted} extracted"
                        )
        if args.records > 0:
            t0 = time.perf_counter()
            records = synthetic_records(args.records, args.seed)
            print(f"built {len(records)} synthetic records in {time.perf_counter() - t0:.1f} s")
            for backend in backends:
                with catalog_for(backend, "search") as cat:
                    t0 = time.perf_counter()
                    cat.reindex(records)
                    load = time.perf_counter() - t0
                    print(f"load {backend:10s}: {len(records)} records in {load:.1f} s = {len(records) / load:.0f}/s")
                    for name, (p50, p95, hits) in measure_searches(cat, args.repeat, args.seed).items():
                        print(
                            f"  search {backend:10s} {name:26s} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms"
                            f"  (~{hits:.0f} hits)"
                        )
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
