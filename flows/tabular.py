"""Table flows: explore and fit tables that live in several regions, each region reducing its own rows.

Each flow locates its datasets in its own process, then submits one Prefect task per region, routed to that
region's pool (``with pool(region): task.submit(...)``) on the multi-region cluster's DaskTaskRunner; inside, the
region's tables are read and reduced to exact partials, and only those cross to the flow, which combines them.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import (
    DEFAULT_CLUSTER_BLOCK,
    RegionalTaskRunner,
    cluster_block,
    fails_on_input_errors,
    locate_parameters,
    output_policy,
    run_on_cluster,
)
from proximate import tables
from proximate.analysis import ParameterError
from proximate.datasets import RegionPath
from proximate.ingestion import pickled_size
from proximate.locality_report import budget_markdown, locality
from proximate.outputs import OutputPolicy, resolve_output, write_json
from proximate.pools import pool
from tasks.tabular import region_partial_task

#: The artifacts' key of each kind of question.
ARTIFACT_KEYS = {"describe": "describe-table", "regression": "linear-regression"}


def _run(
    datasets: list[str],
    question: tables.TableQuestion,
    catalog: str | None,
    cluster: str,
    scheduler_address: str | None,
    output: tuple[str, OutputPolicy, bool],
) -> dict[str, Any]:
    """Locate the tables, reduce them per region on the cluster (one Prefect task per region, in its pool),
    measuring what crossed, combine the partials here, write the result to ``output`` (target, policy, overwrite: see
    :func:`proximate.outputs.write_json`) and publish the locality
    artifact; returns the result with its ``cross_region_bytes`` and ``output``."""
    log = get_run_logger()
    if not datasets:
        raise ParameterError("datasets", "is empty: give region:path references or catalog ids")
    block = cluster_block(cluster, scheduler_address)
    located = locate_parameters({"datasets": list(datasets)}, catalog)
    regions: dict[str, list[RegionPath]] = {}
    for where in located["datasets"]:
        regions.setdefault(where.region, []).append(where)
    log.info("tables by region: %s", {r: [w.path for w in ws] for r, ws in regions.items()})
    client = run_on_cluster(block, located)
    with locality(client) as report:
        futures = []
        for region, wheres in regions.items():
            with pool(region):
                futures.append(region_partial_task.submit(region, wheres, question))
        partials = [f.result() for f in futures]
    reduced = tables.combine(partials)
    # What must cross at least: every region's partial as Prefect carries it to this process, the task's state
    # around it as its Dask future's result is serialised (the partial alone would leave Prefect's wrapping,
    # which the measurement includes, unaccounted); a centralised run would move every row read instead. Asked
    # again after the measured block, so the second fetch is not counted.
    minimum = sum(pickled_size(f.wrapped_future.result()) for f in futures)
    log.info("%s B crossed regions (partials of %s B), against %s B of rows read", report.cross_region_bytes,
             minimum, reduced.nbytes)  # fmt: skip
    result = tables.answer(question, reduced)
    result["cross_region_bytes"] = report.cross_region_bytes
    # The locality figures beside it, for callers that print them (the demo) as the artifact shows them.
    result["minimum_bytes"], result["rows_bytes"] = minimum, reduced.nbytes
    result["tasks_by_region"] = dict(report.tasks_by_region)
    target, policy, overwrite = output
    result["output"] = write_json(result, target, policy=policy, overwrite=overwrite)
    create_markdown_artifact(
        key=f"{ARTIFACT_KEYS[question.kind]}-locality",
        markdown=budget_markdown(report, minimum, reduced.nbytes),
        description="Bytes moved between regions (only each region's partials), against reading every row",
    )
    return result


@flow(name="describe-table", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def describe_table(
    datasets: list[str],
    columns: list[str] | None = None,
    group_by: str | None = None,
    derive: dict[str, str] | None = None,
    output: str = "describe-table.json",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Count, mean, std, min and max of each numeric column over tables in several regions; with `group_by`,
    count, sum and mean of each column per group. Each region reduces its own rows; only the partials cross.

    Args:
        datasets: Tables (Parquet or CSV files or folders): `region:path` references or catalog ids.
        columns: Columns to describe; empty describes every numeric column.
        group_by: A column to group by (its values are compared as text).
        derive: New columns from expressions over columns, e.g.
            `{"trip_dur_secs": "(tpep_dropoff_datetime - tpep_pickup_datetime).dt.total_seconds()"}`: arithmetic,
            numbers and `.dt` accessors only.
        output: Where to write the result as JSON: a local path (relative ones go under the results root and
            may not contain `..`; an absolute one only under a folder `PROXIMATE_OUTPUT_ROOTS` allows).
        catalog: Name of a saved CatalogConfig block to look catalog ids up in; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
        overwrite: Replace an existing output that no proximate flow wrote (an output a flow wrote is replaced
            anyway, atomically).

    Returns:
        `columns` (column -> count, mean, std, min, max), with `group_by` also `groups` (group -> column ->
        count, sum, mean), `cross_region_bytes` (measured), `minimum_bytes` (the partials as Prefect carries
        them: each region task's state, pickled), `rows_bytes` (what a centralised run would move),
        `tasks_by_region` and `output`.
    """
    policy = output_policy()
    target = resolve_output(output, suffixes=(".json",), policy=policy, overwrite=overwrite)
    question = tables.TableQuestion(
        "describe", tuple(columns or ()), group_by, derive=tables.Derivations(dict(derive or {}))
    )
    result = _run(datasets, question, catalog, cluster, scheduler_address, (target, policy, overwrite))
    rows = [{"column": c, **{k: _round(v) for k, v in s.items()}} for c, s in result["columns"].items()]
    create_table_artifact(key="describe-table-statistics", table=rows, description=f"Result, written to {target}")
    if result.get("groups"):
        # The per-group answer is what a group_by asks for: one row per group and column, beside the overall table.
        grouped = [
            {group_by: group, "column": column, **{k: _round(v) for k, v in stats.items()}}
            for group, columns_of_group in result["groups"].items()
            for column, stats in columns_of_group.items()
        ]
        create_table_artifact(
            key="describe-table-groups", table=grouped, description=f"Per {group_by}, written to {target}"
        )
    return result


@flow(name="fit-linear-regression", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def fit_linear_regression(
    datasets: list[str],
    target: str,
    features: list[str],
    derive: dict[str, str] | None = None,
    output: str = "linear-regression.json",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Ordinary least squares of `target` on `features` (with an intercept) over tables in several regions:
    each region reduces its rows to XᵀX and Xᵀy, only those cross, and the flow solves the combined system.

    Args:
        datasets: Tables (Parquet or CSV files or folders): `region:path` references or catalog ids.
        target: The column to explain (may be a derived column).
        features: The explaining columns (may be derived columns).
        derive: New columns from expressions over columns (see describe-table).
        output: Where to write the result as JSON: a local path (relative ones go under the results root and
            may not contain `..`; an absolute one only under a folder `PROXIMATE_OUTPUT_ROOTS` allows).
        catalog: Name of a saved CatalogConfig block to look catalog ids up in; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
        overwrite: Replace an existing output that no proximate flow wrote (an output a flow wrote is replaced
            anyway, atomically).

    Returns:
        `coefficients` (feature -> value), `intercept`, `r2`, `n` (rows used), `cross_region_bytes`,
        `minimum_bytes`, `rows_bytes`, `tasks_by_region` (as describe-table's) and `output`.
    """
    if not features:
        raise ParameterError("features", "is empty: name at least one column to fit on")
    policy = output_policy()
    target_path = resolve_output(output, suffixes=(".json",), policy=policy, overwrite=overwrite)
    question = tables.TableQuestion(
        "regression", tuple(features), target=target, derive=tables.Derivations(dict(derive or {}))
    )
    result = _run(datasets, question, catalog, cluster, scheduler_address, (target_path, policy, overwrite))
    rows = [{"term": "intercept", "value": _round(result["intercept"])}]
    rows += [{"term": f, "value": _round(v)} for f, v in result["coefficients"].items()]
    rows += [{"term": "r2", "value": _round(result["r2"])}, {"term": "n (rows used)", "value": result["n"]}]
    create_table_artifact(
        key="linear-regression-statistics", table=rows, description=f"Result, written to {target_path}"
    )
    return result


def _round(value: float) -> float:
    # Six significant digits: what float64 partials combined over millions of rows support, and legible
    # (184.833, not 184.83302796790898).
    return float(f"{value:.6g}")
