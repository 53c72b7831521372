"""Analysis flows a scientist triggers from the Prefect UI or calls from Python.

Each flow checks its inputs, then runs a subflow on the multi-region cluster's DaskTaskRunner: coarse Prefect
tasks (per dataset), fine-grained Dask work inside, every part in the region holding its data. Each run
publishes the locality report, a plot and result statistics as artifacts and writes its result atomically.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.common import DEFAULT_CLUSTER_BLOCK, cluster_task_runner
from proximate.analysis import forecast_minus_observations, select_level
from proximate.outputs import write_result
from proximate.references import parse_reference
from tasks.analysis import compute_task, open_dataset_task
from tasks.artifacts import publish


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
    }
