"""Analysis flows a scientist triggers from the Prefect UI or calls from Python.

Each flow checks its inputs, then runs a subflow on the multi-region cluster's DaskTaskRunner: coarse Prefect
tasks (per dataset), fine-grained Dask work inside, every part in the region holding its data. Each run
publishes the locality report, a plot and result statistics as artifacts and writes its result atomically.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from proximate.references import parse_reference

from flows.common import DEFAULT_CLUSTER_BLOCK, cluster_task_runner
from proximate import analysis
from proximate.analysis import forecast_minus_observations, select_level
from proximate.catalog import default_catalog
from proximate.catalog.query import DatasetQuery, find_all
from proximate.catalog.records import DatasetRecord
from proximate.outputs import write_result
from tasks.analysis import compute_task, open_dataset_task
from tasks.artifacts import publish, statistics_row


@flow(name="compare-forecast-to-observations-on-cluster")
def _compare_on_cluster(
    forecast: str,
    observations: str,
    variable: str,
    height: float | None,
    height_index: int | None,
    forecast_chunks: dict[str, int],
) -> dict[str, Any]:
    fc_future = open_dataset_task.submit(forecast, {"chunks": forecast_chunks})
    obs_future = open_dataset_task.submit(observations, {"chunks": {}})
    fc, obs = fc_future.result(), obs_future.result()
    lazy = forecast_minus_observations(fc, obs, variable, height=height, height_index=height_index)
    result, report = compute_task.submit(lazy).result()
    # what had to cross at least: the smaller operand of the subtraction, then the result to the client
    level = select_level(fc[variable].mean("realization"), height, height_index)
    # (observations on another grid may cross raw and be interpolated beside the forecast)
    minimum = min(level.nbytes, obs[variable].nbytes) + result.nbytes
    # what a centralised run reads across regions: the forecast at that level, every realization, and the obs
    centralised = select_level(fc[variable], height, height_index).nbytes + obs[variable].nbytes
    return {"result": result, "report": report, "minimum": minimum, "centralised": centralised}


@flow(name="compare-forecast-to-observations", log_prints=True)
def compare_forecast_to_observations(
    forecast: str,
    observations: str,
    variable: str = "air_temperature",
    height: float | None = None,
    height_index: int | None = None,
    output: str = "results/forecast-minus-observations.nc",
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """Average an ensemble forecast over its realizations, select a level and subtract the observations, each
    part in the region holding its data; only the small difference crosses regions.

    Args:
        forecast: The ensemble forecast: `region:path` (e.g. `ecmwf:forecast/air_temperature.nc`) or a catalog id.
        observations: The observations: `region:path` or a catalog id.
        variable: Variable to compare, present in both datasets (same units).
        height: Level to select by value (nearest), in the forecast's height units.
        height_index: Level to select by position, when `height` is not given.
        output: Where to write the difference: a local path or an `s3://` URL, `.nc` or `.zarr`.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
    """
    for ref in (forecast, observations):
        parse_reference(ref)  # bad references fail before any cluster starts
    with cluster_task_runner(cluster, scheduler_address) as runner:
        out = _compare_on_cluster.with_options(task_runner=runner)(
            forecast, observations, variable, height, height_index, {"realization": 1}
        )
    written = write_result(out["result"], output)
    publish(
        "compare", out["result"], out["report"], minimum=out["minimum"], centralised=out["centralised"], output=written
    )
    get_run_logger().info(
        "cross-region %s B (minimum %s B); written to %s", out["report"].cross_region_bytes, out["minimum"], written
    )
    return {
        "output": written,
        "cross_region_bytes": out["report"].cross_region_bytes,
        "minimum_bytes": out["minimum"],
        "centralised_bytes": out["centralised"],
        "tasks_by_region": out["report"].tasks_by_region,
        "compute_seconds": out["report"].seconds,
    }


def _catalog(name: str | None):
    if not name:
        return default_catalog()
    from blocks.catalog import CatalogConfig

    return CatalogConfig.load(name).get_catalog()


def _matching(query: DatasetQuery, catalog: str | None, variable: str | None = None) -> list[DatasetRecord]:
    """Records the query matches; a clear error naming the query when there are none."""
    cat = _catalog(catalog)
    try:
        records = find_all(cat, query)
    finally:
        cat.close()
    if not records:
        raise ValueError(f"the catalog query matched no datasets: {query.describe()}")
    if variable:
        lacking = [r for r in records if variable not in r.variable_names]
        if lacking:
            have = sorted({v for r in lacking for v in r.variable_names})
            raise analysis.AnalysisInputError(
                f"variable {variable!r} is not in {len(lacking)} matching dataset(s) (e.g. {lacking[0].region}:"
                f"{lacking[0].path}); available there: {', '.join(have) or '(none)'}"
            )
    return records


def _ref(record: DatasetRecord) -> str:
    return f"{record.region}:{record.path}"


@flow(name="seasonal-mean-on-cluster")
def _seasonal_on_cluster(
    refs: list[str], variable: str, valid_min: float | None, valid_max: float | None
) -> dict[str, Any]:
    futures = [open_dataset_task.submit(ref, {"chunks": {}}) for ref in refs]
    datasets = [f.result() for f in futures]
    partials = [analysis.seasonal_partials(ds, variable, valid_min=valid_min, valid_max=valid_max) for ds in datasets]
    lazy = analysis.combine_seasonal(partials)
    result, report = compute_task.submit(lazy).result()
    by_region: dict[str, int] = {}
    for ref, p in zip(refs, partials, strict=True):
        region = ref.split(":", 1)[0]
        by_region[region] = by_region.get(region, 0) + p.total.nbytes + p.count.nbytes
    # partial sums and counts of every region but the one that combines them, then the result to the client
    minimum = sum(by_region.values()) - max(by_region.values()) + result.nbytes
    centralised = sum(ds[variable].nbytes for ds in datasets)
    return {"result": result, "report": report, "minimum": minimum, "centralised": centralised}


@flow(name="seasonal-mean", log_prints=True)
def seasonal_mean(
    query: DatasetQuery,
    variable: str,
    valid_min: float | None = None,
    valid_max: float | None = None,
    output: str = "results/seasonal-mean.nc",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """Seasonal mean (DJF, MAM, JJA, SON) over every dataset a catalog query matches, possibly in several
    regions: each dataset's per-season sums and counts are computed where it lives, and only those cross.

    Args:
        query: Which datasets: catalog fields (text, variable, standard name, region, time range, bbox).
        variable: Variable to average; every matching dataset must have it, on the same grid.
        valid_min: Mask values below this before averaging (e.g. fill values).
        valid_max: Mask values above this before averaging.
        output: Where to write the result: a local path or an `s3://` URL, `.nc` or `.zarr`.
        catalog: Name of a saved CatalogConfig block; empty uses the default SQLite catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
    """
    records = _matching(query, catalog, variable)
    with cluster_task_runner(cluster, scheduler_address) as runner:
        out = _seasonal_on_cluster.with_options(task_runner=runner)(
            [_ref(r) for r in records], variable, valid_min, valid_max
        )
    written = write_result(out["result"], output)
    publish(
        "seasonal-mean",
        out["result"],
        out["report"],
        minimum=out["minimum"],
        centralised=out["centralised"],
        output=written,
    )
    return {
        "output": written,
        "datasets": [_ref(r) for r in records],
        "cross_region_bytes": out["report"].cross_region_bytes,
        "minimum_bytes": out["minimum"],
        "centralised_bytes": out["centralised"],
        "tasks_by_region": out["report"].tasks_by_region,
        "compute_seconds": out["report"].seconds,
    }


@flow(name="summarize-on-cluster")
def _summarize_on_cluster(
    refs: list[str], variables: list[str], dims: list[str], statistics: list[str]
) -> dict[str, Any]:
    futures = [open_dataset_task.submit(ref, {"chunks": {}}) for ref in refs]
    datasets = [f.result() for f in futures]
    lazy = [analysis.summarize(ds, variables, dims, statistics) for ds in datasets]  # checks before compute
    results, reports = zip(*(compute_task.submit(x).result() for x in lazy), strict=True)
    return {
        "results": list(results),
        "reports": list(reports),
        "centralised": sum(ds[v].nbytes for ds in datasets for v in variables),
    }


@flow(name="summarize", log_prints=True)
def summarize(
    query: DatasetQuery,
    variables: list[str],
    dims: list[str] | None = None,
    statistics: list[str] | None = None,
    output: str = "results/summaries",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """Reduce each matching dataset where it lives (mean, min, max, std over the given dimensions) and bring
    only the reductions to the client region.

    Args:
        query: Which datasets: catalog fields (text, variable, standard name, region, time range, bbox).
        variables: Variables to reduce; each matching dataset must have them.
        dims: Dimensions to reduce over; empty reduces over all of them.
        statistics: Any of mean, min, max, std; empty means all four.
        output: Folder (local) for one NetCDF file of reductions per dataset.
        catalog: Name of a saved CatalogConfig block; empty uses the default SQLite catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
    """
    statistics = list(statistics or analysis.STATISTICS)
    unknown = [s for s in statistics if s not in analysis.STATISTICS]
    if unknown:
        raise analysis.AnalysisInputError(f"unknown statistics {unknown}; choose from {', '.join(analysis.STATISTICS)}")
    records = _matching(query, catalog)
    for v in variables:
        lacking = [r for r in records if v not in r.variable_names]
        if lacking:
            raise analysis.AnalysisInputError(
                f"variable {v!r} is not in {lacking[0].region}:{lacking[0].path}; "
                f"available: {', '.join(lacking[0].variable_names)}"
            )
    refs = [_ref(r) for r in records]
    with cluster_task_runner(cluster, scheduler_address) as runner:
        out = _summarize_on_cluster.with_options(task_runner=runner)(
            refs, list(variables), list(dims or []), statistics
        )
    written, rows, cross = [], [], 0
    for record, result, report in zip(records, out["results"], out["reports"], strict=True):
        name = f"{record.region}__{record.path.replace('/', '__')}.nc"
        written.append(write_result(result, f"{output.rstrip('/')}/{name}"))
        cross += report.cross_region_bytes
        for var, da in result.data_vars.items():
            row = {"dataset": _ref(record), "statistic": var}
            row.update({k: v for k, v in statistics_row(da).items() if k in ("shape", "mean", "min", "max")})
            rows.append(row)
    create_table_artifact(key="summarize-statistics", table=rows, description="Reductions per dataset")
    return {
        "outputs": written,
        "datasets": refs,
        "cross_region_bytes": cross,
        "centralised_bytes": out["centralised"],
        "compute_seconds": sum(r.seconds for r in out["reports"]),
    }
