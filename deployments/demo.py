"""The end-to-end demo on the embedded defaults (README command (a)), offline.

1. generate a small realistic multi-region dataset: an ensemble forecast and a year of daily temperature in
   region ``ecmwf``, observations and the next year in region ``gcp``, plus real Met Office files from the
   ``iris-sample-data`` package (HadCM3 scenario runs over North America, OSTIA SST, ocean and rotated grids) in both;
2. put it in an S3 server started on loopback (moto), one bucket per region;
3. run the nightly flow per region: sync the bucket into the region's file system, index what changed into
   the embedded SQLite catalog (extraction on the region's workers);
4. run compare-forecast-to-observations, seasonal-mean and scenario-difference (the real HadCM3 runs: A1B
   minus E1, 2070-2099) on a real two-region Dask cluster, then the table flows describe-table and
   fit-linear-regression over a month of taxi trips in each region (found in the catalog);
5. print the locality reports and write the plots.

Everything runs through Prefect (a temporary local server) with state, blocks and catalog under the workdir.

The setup (data, S3 server, blocks, the nightly ingest, the environment) is shared with ``proximate up``
(:mod:`deployments.up`), whose stages (:mod:`deployments.stages`) start the same parts as long-lived services.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from proximate import config

FORECAST_REGION = "ecmwf"
OBSERVATIONS_REGION = "gcp"
#: The CatalogConfig block naming the demo's embedded catalog.
DEMO_CATALOG = "demo-catalog"
#: Real files from the ``iris-sample-data`` package (Met Office sample data, UK Open Government Licence) and the
#: region holding each: the two HadCM3 scenario runs over North America (A1B and E1) in different regions, so the
#: catalog finds one scenario in each; real grids of every kind beside them (regular, rotated pole, ORCA2 ocean).
REAL_FILES = {
    FORECAST_REGION: ["A1B_north_america.nc", "ostia_monthly.nc", "rotated_pole.nc", "orca2_votemper.nc"],
    OBSERVATIONS_REGION: ["E1_north_america.nc", "SOI_Darwin.nc", "atlantic_profiles.nc", "hybrid_height.nc"],
}
#: The demo's real-data workload: HadCM3's A1B run (region ecmwf) minus its E1 run (region gcp), each averaged
#: over the end of the century where it lives (the scenario-difference flow; prefect.yaml prefills the same).
SCENARIOS = {
    "scenario": f"{FORECAST_REGION}:real/A1B_north_america.nc",
    "baseline": f"{OBSERVATIONS_REGION}:real/E1_north_america.nc",
    "start_year": 2070,
    "end_year": 2099,
}
#: The taxi-trips table of each region (a month each, the New York yellow-cab schema) and its rows: enough to be
#: megabytes against the kilobytes of partials that cross, little enough to add only seconds to the demo.
TRIPS = {FORECAST_REGION: ("trips/yellow_tripdata_2024-01.parquet", "2024-01-01", 11),
         OBSERVATIONS_REGION: ("trips/yellow_tripdata_2024-02.parquet", "2024-02-01", 12)}  # fmt: skip
TRIPS_ROWS = 150_000
#: The derived column both table flows use: the trip's duration.
TRIP_DURATION = {"trip_dur_secs": "(tpep_dropoff_datetime - tpep_pickup_datetime).dt.total_seconds()"}


def generate(staging: Path) -> dict[str, list[Path]]:
    """Files per region, under staging/<region>/..."""
    from proximate.testing import synthetic

    files: dict[str, list[Path]] = {FORECAST_REGION: [], OBSERVATIONS_REGION: []}
    fc = staging / FORECAST_REGION / "forecast" / "air_temperature.nc"
    if not fc.exists():
        synthetic.write_netcdf(
            synthetic.forecast(realizations=12, heights=16, nlat=180, nlon=360),
            fc,
            chunks={"realization": 1, "height": 4},
        )
    obs = staging / OBSERVATIONS_REGION / "observations" / "air_temperature.nc"
    if not obs.exists():
        # A coarser grid (interpolated onto the forecast's), at the forecast's lowest level, 10 m, which the
        # comparison then selects: forecast minus observations at one height is the forecast's error.
        synthetic.write_netcdf(synthetic.observations(nlat=90, nlon=180, height=10.0), obs)
    for region, start in ((FORECAST_REGION, "2024-01-01"), (OBSERVATIONS_REGION, "2025-01-01")):
        daily = staging / region / "daily" / f"tas_{start[:4]}.nc"
        if not daily.exists():
            synthetic.write_netcdf(synthetic.daily_temperature(start=start, days=365), daily)
    for region, (path, start, seed) in TRIPS.items():
        table = staging / region / path
        if not table.exists():
            synthetic.write_parquet(synthetic.trips(TRIPS_ROWS, start=start, days=29, seed=seed), table)
    for region in files:
        files[region] = sorted(p for p in (staging / region).rglob("*") if p.is_file())
    import iris_sample_data  # the [demo] extra installs it: real data, no download at run time

    for region, names in REAL_FILES.items():
        files[region] += [Path(iris_sample_data.path) / name for name in names]
    return files


def upload(endpoint: str, files: dict[str, list[Path]], staging: Path) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for region, paths in files.items():
        bucket = f"proximate-{region}"
        s3.create_bucket(Bucket=bucket)
        for p in paths:
            key = str(p.relative_to(staging / region)) if staging in p.parents else f"real/{p.name}"
            s3.upload_file(str(p), bucket, key)


def demo_environment(workdir: Path, current: Mapping[str, str]) -> dict[str, str]:
    """The environment variables the demo sets, given the current environment (which it leaves unchanged).

    Prefect state under the workdir unless PREFECT_HOME is set, never telemetry, results under the workdir's
    ``results/``, and credentials for the local S3 server unless some are set already.

    Args:
        workdir: the demo's folder (resolved).
        current: the environment the demo starts in, e.g. ``os.environ``.

    Returns:
        The variables to set and their values.
    """
    defaults = {
        "PREFECT_HOME": str(workdir / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # ~30 s on 2 cores
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "AWS_ACCESS_KEY_ID": "demo",  # moto accepts any credentials
        "AWS_SECRET_ACCESS_KEY": "demo-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # the flows' relative outputs land in the demo's results/ (outputs may not leave the results root)
    forced = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        config.env_var("results"): str(workdir / "results"),
    }
    return {**{k: v for k, v in defaults.items() if k not in current}, **forced}


@contextlib.contextmanager
def environment(changes: Mapping[str, str]) -> Iterator[None]:
    """Set ``changes`` in ``os.environ`` for the block, then put back what was there (or nothing).

    The demo configures through the environment, not arguments, because that is where Prefect reads its
    settings (at import and when it starts its server) and what the scheduler, worker and S3 server processes
    it starts inherit.

    Args:
        changes: variables to set and their values.
    """
    previous = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_demo(workdir: Path, *, workers_per_region: int = 2) -> dict:
    """Run the demo in ``workdir``, in the environment of ``demo_environment`` for its length.

    Args:
        workdir: where regions' data, the catalog, Prefect state and results go (created if missing).
        workers_per_region: Dask worker processes per region.

    Returns:
        The flows' results by name: ``"compare"``, ``"seasonal"`` and ``"scenarios"`` (``AnalysisResult``),
        ``"describe"`` and ``"regression"`` (the table flows' dicts, with ``datasets`` as ``region:path``).
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with environment(demo_environment(workdir, os.environ)):
        return _run_demo(workdir, workers_per_region)


def region_roots(workdir: Path) -> dict[str, Path]:
    """The demo regions' file systems under ``workdir`` (created if missing), by region name."""
    roots = {r: workdir / "regions" / r for r in (FORECAST_REGION, OBSERVATIONS_REGION)}
    for root in roots.values():
        root.mkdir(parents=True, exist_ok=True)
    return roots


def save_demo_blocks(
    workdir: Path, endpoint: str, roots: Mapping[str, Path], opensearch_url: str | None = None
) -> None:
    """Save a ``Region`` block per demo region (its bucket on ``endpoint``) and the ``demo-catalog`` block.

    Args:
        workdir: the demo's folder; the catalog is ``catalog/proximate.sqlite`` under it.
        endpoint: the S3 server holding one bucket per region.
        roots: the regions' file systems.
        opensearch_url: the catalog is this OpenSearch node's instead (``proximate up --catalog opensearch``).
    """
    from blocks.catalog import CatalogConfig
    from blocks.region import Region

    for region, root in roots.items():
        Region(name=region, root=str(root), source_url=f"s3://proximate-{region}/", endpoint_url=endpoint).save(
            region, overwrite=True
        )
    CatalogConfig(**demo_catalog_fields(workdir, opensearch_url)).save(DEMO_CATALOG, overwrite=True)


def demo_catalog_fields(workdir: Path, opensearch_url: str | None = None) -> dict[str, str]:
    """The demo catalog's ``CatalogConfig`` fields: the SQLite file under ``workdir``, or, with ``opensearch_url``,
    that node's default alias (``proximate-datasets``).

    Examples:
        >>> demo_catalog_fields(Path("/d"))
        {'backend': 'sqlite', 'sqlite_path': '/d/catalog/proximate.sqlite'}
        >>> demo_catalog_fields(Path("/d"), "http://127.0.0.1:9200")
        {'backend': 'opensearch', 'opensearch_url': 'http://127.0.0.1:9200'}
    """
    if opensearch_url:
        return {"backend": "opensearch", "opensearch_url": opensearch_url}
    return {"backend": "sqlite", "sqlite_path": str(demo_catalog_path(workdir))}


def demo_catalog_path(workdir: Path) -> Path:
    """The demo's embedded catalog file."""
    return workdir / "catalog" / "proximate.sqlite"


def demo_catalog_ids(workdir: Path, opensearch_url: str | None = None) -> dict[str, str]:
    """The catalog ids of the demo's forecast and observations (what the compare flow accepts as references).

    Args:
        workdir: the demo's folder (its SQLite catalog).
        opensearch_url: the demo catalog is this OpenSearch node's instead.

    Raises:
        CatalogError: the demo catalog lacks one of them (the ingest did not index it).
    """
    from proximate.catalog import CatalogError, CatalogSettings
    from proximate.catalog.records import record_id

    wanted = {
        "forecast": record_id(FORECAST_REGION, "forecast/air_temperature.nc"),
        "observations": record_id(OBSERVATIONS_REGION, "observations/air_temperature.nc"),
    }
    with CatalogSettings(**demo_catalog_fields(workdir, opensearch_url)).open() as catalog:  # type: ignore[arg-type]
        found = catalog.get_many(list(wanted.values()))
    missing = [name for name, rid in wanted.items() if rid not in found]
    if missing:
        raise CatalogError(f"the demo catalog lacks the {' and '.join(missing)} after indexing")
    return wanted


def ingest(roots: Mapping[str, Path], scheduler_address: str, t0: float) -> None:
    """Run the nightly flow per region (sync its bucket, index what changed), printing what each did.

    Args:
        roots: the regions to ingest (their Region blocks saved).
        scheduler_address: the running multi-region cluster the indexing runs on.
        t0: ``time.perf_counter()`` when the demo started, for the printed timings.
    """
    from flows.nightly import nightly_region

    for region in roots:
        night = nightly_region(region, catalog=DEMO_CATALOG, scheduler_address=scheduler_address)
        sync, index = night["sync"], night["index"]
        print(
            f"[{time.perf_counter() - t0:5.1f}s] {region}: synced {sync['transferred']} objects "
            f"({sync['bytes_transferred'] / 2**20:.1f} MiB), indexed {index['extracted']} "
            f"({len(index['errors'])} unreadable)"
        )


def _run_demo(workdir: Path, workers_per_region: int) -> dict:
    from deployments.stages import regional_cluster, s3_buckets
    from flows.analysis import compare_forecast_to_observations, scenario_difference, seasonal_mean
    from proximate.catalog.query import DatasetQuery
    from proximate.plots import plot_png

    t0 = time.perf_counter()
    staging = workdir / "staging"
    roots = region_roots(workdir)
    files = generate(staging)
    print(f"[{time.perf_counter() - t0:5.1f}s] generated {sum(map(len, files.values()))} files for 2 regions")
    results = {}
    with s3_buckets(files, staging) as endpoint:
        print(f"[{time.perf_counter() - t0:5.1f}s] uploaded to S3 at {endpoint}")
        save_demo_blocks(workdir, endpoint, roots)
        with regional_cluster(roots, workers_per_region) as cluster:
            print(
                f"[{time.perf_counter() - t0:5.1f}s] cluster {cluster.address}: "
                f"{workers_per_region} worker processes per region"
            )
            ingest(roots, cluster.address, t0)
            results["compare"] = compare_forecast_to_observations(
                forecast=f"{FORECAST_REGION}:forecast/air_temperature.nc",
                observations=f"{OBSERVATIONS_REGION}:observations/air_temperature.nc",
                output="forecast-minus-observations.nc",  # under results/ (PROXIMATE_RESULTS)
                scheduler_address=cluster.address,
            )
            results["seasonal"] = seasonal_mean(
                query=DatasetQuery(text="synthetic daily temperature", standard_name="air_temperature"),
                variable="tas",
                valid_min=150.0,
                output="seasonal-mean.nc",
                catalog=DEMO_CATALOG,
                scheduler_address=cluster.address,
            )
            results["scenarios"] = scenario_difference(
                **SCENARIOS, output="a1b-minus-e1.nc", scheduler_address=cluster.address
            )
            results |= run_tables(workdir, cluster.address, t0)
    import xarray as xr

    for name, res in results.items():
        if isinstance(res, dict):  # the table flows' results, printed below
            continue
        with xr.open_dataset(res.output) as ds:
            png = Path(res.output).with_suffix(".png")
            da = ds[next(iter(ds.data_vars))].load()
            png.write_bytes(plot_png(da))
        print(f"\n{name}: result {res.output}, plot {png}")
        units = da.attrs.get("units", "")
        print(f"  {da.attrs.get('long_name', da.name)}: mean {float(da.mean()):+.2f} {units}, "
              f"{float(da.min()):+.2f} to {float(da.max()):+.2f} {units}")  # fmt: skip
        print(f"  tasks per region: {res.tasks_by_region}")
        print(
            f"  cross-region bytes: {res.cross_region_bytes:,} (physical minimum {res.budget.minimum:,}, "
            f"{res.cross_region_bytes / res.budget.minimum:.2f}x; a centralised run would read "
            f"{res.budget.centralised:,})"
        )
    print_tables(results)
    print(f"\ndone in {time.perf_counter() - t0:.1f} s; Prefect state in {os.environ['PREFECT_HOME']}")
    return results


def run_tables(workdir: Path, scheduler_address: str, t0: float) -> dict[str, dict]:
    """Find the trips tables in the demo catalog and run describe-table and fit-linear-regression over them.

    Args:
        workdir: the demo's folder (results go under ``results/``).
        scheduler_address: the running multi-region cluster.
        t0: ``time.perf_counter()`` when the demo started, for the printed timings.

    Returns:
        ``"describe"`` and ``"regression"``: the flows' results, with ``datasets`` (the catalog ids used).
    """
    from flows.common import catalog_settings
    from flows.tabular import describe_table, fit_linear_regression
    from proximate.catalog import CatalogQuery

    with catalog_settings(DEMO_CATALOG).open() as catalog:
        found = catalog.search(CatalogQuery(variable="tpep_pickup_datetime", status="ok")).records
    ids = [r.id for r in sorted(found, key=lambda r: r.region or "")]
    rows = sum(r.dimensions.get("rows", 0) for r in found)
    print(f"[{time.perf_counter() - t0:5.1f}s] table flows over {len(ids)} trips tables in the catalog ({rows:,} rows)")
    common = {"datasets": ids, "derive": TRIP_DURATION, "catalog": DEMO_CATALOG, "scheduler_address": scheduler_address}
    describe = describe_table(
        columns=["passenger_count", "trip_distance", "fare_amount", "trip_dur_secs"],
        group_by="VendorID",
        output="trips-describe.json",
        **common,
    )
    regression = fit_linear_regression(
        target="trip_dur_secs",
        features=["trip_distance", "passenger_count"],
        output="trips-regression.json",
        **common,
    )
    print(f"[{time.perf_counter() - t0:5.1f}s] describe-table and fit-linear-regression done")
    where = {r.id: f"{r.region}:{r.path}" for r in found}
    return {"describe": {**describe, "datasets": [where[i] for i in ids]},
            "regression": {**regression, "datasets": [where[i] for i in ids]}}  # fmt: skip


def print_tables(results: Mapping[str, object]) -> None:
    """Print the table flows' answers and their locality, as the array flows' are printed."""
    for name in ("describe", "regression"):
        res = results.get(name)
        if not isinstance(res, dict):
            continue
        print(f"\n{name}-table: {', '.join(res['datasets'])}; result {res['output']}")
        if name == "describe":
            for column, stats in res["columns"].items():
                print(f"  {column}: mean {stats['mean']:.3f}, std {stats['std']:.3f}, "
                      f"min {stats['min']:.3f}, max {stats['max']:.3f} ({stats['count']:,.0f} rows)")  # fmt: skip
            for group, columns in sorted(res["groups"].items()):
                print(f"  VendorID {group}: {columns['fare_amount']['count']:,.0f} trips, "
                      f"mean fare {columns['fare_amount']['mean']:.2f}")  # fmt: skip
        else:
            terms = " + ".join(f"{v:.3f} * {f}" for f, v in res["coefficients"].items())
            print(f"  trip_dur_secs = {res['intercept']:.3f} + {terms}; r2 {res['r2']:.4f} over {res['n']:,} rows")
        print(f"  tasks per region: {res['tasks_by_region']}")
        print(
            f"  cross-region bytes: {res['cross_region_bytes']:,} (the partials {res['minimum_bytes']:,}; a "
            f"centralised run would move the rows, {res['rows_bytes']:,})"
        )
