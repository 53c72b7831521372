"""Analysis flows a scientist triggers from the Prefect UI or calls from Python.

Each flow parses its dataset references (or runs its catalog query) in its own process, then runs a subflow on
the multi-region cluster's DaskTaskRunner: coarse Prefect tasks (one per dataset), fine-grained Dask work inside,
every part in the region holding its data. Each run publishes the locality report, a plot and result statistics
as artifacts, writes its result atomically and returns an :class:`~proximate.analysis.AnalysisResult`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.common import DEFAULT_CLUSTER_BLOCK, catalog_settings, cluster_task_runner
from proximate import analysis
from proximate.analysis import AnalysisResult, ByteBudget
from proximate.catalog import locate_references
from proximate.catalog.query import DatasetQuery
from proximate.datasets import RegionPath
from proximate.locality_report import LocalityReport
from proximate.outputs import result_path, write_result
from tasks.analysis import compute_task, open_dataset_task
from tasks.artifacts import publish


@flow(name="compare-forecast-to-observations-on-cluster")
def _compare_on_cluster(
    forecast: RegionPath,
    observations: RegionPath,
    variable: str,
    height: float | None,
    height_index: int | None,
    forecast_chunks: dict[str, int],
) -> tuple[object, LocalityReport, ByteBudget]:
    fc_future = open_dataset_task.submit(forecast, {"chunks": forecast_chunks})
    obs_future = open_dataset_task.submit(observations, {"chunks": {}})
    fc, obs = fc_future.result(), obs_future.result()
    lazy = analysis.forecast_minus_observations(fc, obs, variable, height=height, height_index=height_index)
    result, report = compute_task.submit(lazy).result()
    budget = analysis.compare_budget(fc, obs, variable, result, height=height, height_index=height_index)
    return result, report, budget


@flow(name="compare-forecast-to-observations", log_prints=True)
def compare_forecast_to_observations(
    forecast: str,
    observations: str,
    variable: str = "air_temperature",
    height: float | None = None,
    height_index: int | None = None,
    output: str = "results/forecast-minus-observations.nc",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
) -> AnalysisResult:
    """Average an ensemble forecast over its realizations, select a level and subtract the observations, each
    part in the region holding its data; only the small difference crosses regions.

    Args:
        forecast: The ensemble forecast: `region:path` (e.g. `ecmwf:forecast/air_temperature.nc`) or a catalog id.
        observations: The observations: `region:path` or a catalog id.
        variable: Variable to compare, present in both datasets (same units).
        height: Level to select by value (nearest), in the forecast's height units.
        height_index: Level to select by position, when `height` is not given.
        output: Where to write the difference: a local path or an `s3://` URL, `.nc` or `.zarr`.
        catalog: Name of a saved CatalogConfig block to look catalog ids up in; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).

    Returns:
        The written output, the datasets read, and the bytes that crossed regions against the run's budget.
    """
    # bad references fail here, before any cluster work
    fc_where, obs_where = locate_references([forecast, observations], catalog_settings(catalog))
    with cluster_task_runner(cluster, scheduler_address, [fc_where.region, obs_where.region]) as runner:
        result, report, budget = _compare_on_cluster.with_options(task_runner=runner)(
            fc_where, obs_where, variable, height, height_index, {"realization": 1}
        )
    written = write_result(result, output)
    publish("compare", result, report, budget=budget, output=written)
    get_run_logger().info(
        "cross-region %s B (minimum %s B); written to %s", report.cross_region_bytes, budget.minimum, written
    )
    return AnalysisResult.of([written], [fc_where, obs_where], [report], budget)


def _matching(query: DatasetQuery, catalog: str | None, variables: list[str]) -> list[RegionPath]:
    with catalog_settings(catalog).open() as cat:
        return [r.location for r in analysis.matching_records(cat, query, variables)]


@flow(name="seasonal-mean-on-cluster")
def _seasonal_on_cluster(
    datasets: list[RegionPath], variable: str, valid_min: float | None, valid_max: float | None
) -> tuple[object, LocalityReport, ByteBudget]:
    futures = [open_dataset_task.submit(where, {"chunks": {}}) for where in datasets]
    opened = [f.result() for f in futures]
    partials = [analysis.seasonal_partials(ds, variable, valid_min=valid_min, valid_max=valid_max) for ds in opened]
    result, report = compute_task.submit(analysis.combine_seasonal(partials)).result()
    return result, report, analysis.seasonal_budget(opened, partials, variable, result)


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
) -> AnalysisResult:
    """Seasonal mean (DJF, MAM, JJA, SON) over every dataset a catalog query matches, possibly in several
    regions: each dataset's per-season sums and counts are computed where it lives, and only those cross.

    Args:
        query: Which datasets: catalog fields (text, variable, standard name, region, time range, bbox).
        variable: Variable to average; every matching dataset must have it, on the same grid.
        valid_min: Mask values below this before averaging (e.g. fill values).
        valid_max: Mask values above this before averaging.
        output: Where to write the result: a local path or an `s3://` URL, `.nc` or `.zarr`.
        catalog: Name of a saved CatalogConfig block; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).

    Returns:
        The written output, the datasets read, and the bytes that crossed regions against the run's budget.
    """
    datasets = _matching(query, catalog, [variable])
    with cluster_task_runner(cluster, scheduler_address, sorted({d.region for d in datasets})) as runner:
        result, report, budget = _seasonal_on_cluster.with_options(task_runner=runner)(
            datasets, variable, valid_min, valid_max
        )
    written = write_result(result, output)
    publish("seasonal-mean", result, report, budget=budget, output=written)
    return AnalysisResult.of([written], datasets, [report], budget)


@flow(name="summarize-on-cluster")
def _summarize_on_cluster(
    datasets: list[RegionPath], variables: list[str], dims: list[str], statistics: list[str]
) -> tuple[list[object], list[LocalityReport], ByteBudget]:
    futures = [open_dataset_task.submit(where, {"chunks": {}}) for where in datasets]
    opened = [f.result() for f in futures]
    lazy = [analysis.summarize(ds, variables, dims, statistics) for ds in opened]  # checks before compute
    results, reports = zip(*(compute_task.submit(x).result() for x in lazy), strict=True)
    return list(results), list(reports), analysis.summarize_budget(opened, variables, results)


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
) -> AnalysisResult:
    """Reduce each matching dataset where it lives (mean, min, max, std over the given dimensions) and bring
    only the reductions to the client region.

    Args:
        query: Which datasets: catalog fields (text, variable, standard name, region, time range, bbox).
        variables: Variables to reduce; each matching dataset must have them.
        dims: Dimensions to reduce over; empty reduces over all of them.
        statistics: Any of mean, min, max, std; empty means all four.
        output: Folder (local) for one NetCDF file of reductions per dataset.
        catalog: Name of a saved CatalogConfig block; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).

    Returns:
        One output per dataset, the datasets read, and the bytes that crossed regions against the run's budget.
    """
    statistics = analysis.check_statistics(statistics)
    datasets = _matching(query, catalog, list(variables))
    with cluster_task_runner(cluster, scheduler_address, sorted({d.region for d in datasets})) as runner:
        results, reports, budget = _summarize_on_cluster.with_options(task_runner=runner)(
            datasets, list(variables), list(dims or []), statistics
        )
    written = [write_result(r, result_path(output, where)) for where, r in zip(datasets, results, strict=True)]
    rows = analysis.reduction_rows(datasets, results)
    create_table_artifact(key="summarize-statistics", table=rows, description="Reductions per dataset")
    return AnalysisResult.of(written, datasets, reports, budget)
