"""Table flows: explore and fit tables that live in several regions, each region reducing its own rows.

Each flow locates its datasets in its own process, then submits one Prefect task per region, routed to that
region's pool (``with pool(region): task.submit(...)``) on the multi-region cluster's DaskTaskRunner; inside, the
region's tables are read and reduced to exact partials, and only those cross to the flow, which combines them.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import DEFAULT_CLUSTER_BLOCK, catalog_settings, cluster_task_runner
from proximate import tables
from proximate.catalog import locate_references
from proximate.client import connect
from proximate.datasets import RegionPath
from proximate.locality_report import LocalityReport, budget_markdown, locality
from proximate.outputs import write_json
from proximate.pools import pool
from tasks.tabular import region_partial_task


def _by_region(datasets: list[RegionPath]) -> dict[str, list[RegionPath]]:
    out: dict[str, list[RegionPath]] = {}
    for where in datasets:
        out.setdefault(where.region, []).append(where)
    return out


def _run(
    datasets: list[str],
    question: tables.TableQuestion,
    catalog: str | None,
    cluster: str,
    scheduler_address: str | None,
) -> tuple[dict[str, Any], LocalityReport, int]:
    """Locate, reduce per region on the cluster (measuring what crossed), combine."""
    if not datasets:
        raise tables.TableInputError("datasets is empty: give region:path references or catalog ids")
    located = locate_references(list(datasets), catalog_settings(catalog))
    regions = _by_region(located)
    get_run_logger().info("tables by region: %s", {r: [w.path for w in ws] for r, ws in regions.items()})
    with cluster_task_runner(cluster, scheduler_address, sorted(regions)) as runner:
        subflow = _reduce_on_cluster.with_options(task_runner=runner)
        with connect(runner.address, **runner.client_kwargs) as client, locality(client) as report:
            partials = subflow(regions, question)
    reduced = tables.combine(partials)
    return tables.answer(question, reduced), report, reduced.nbytes


@flow(name="reduce-tables-on-cluster")
def _reduce_on_cluster(regions: dict[str, list[RegionPath]], question: tables.TableQuestion) -> list[Any]:
    futures = []
    for region, wheres in regions.items():
        with pool(region):
            futures.append(region_partial_task.submit(region, wheres, question))
    return [f.result() for f in futures]


def _publish(key: str, report: LocalityReport, row_bytes: int, rows: list[dict], output: str) -> None:
    # What must cross is each region's partial, which is what the report measures; a centralised run would
    # move every row read instead.
    create_markdown_artifact(
        key=f"{key}-locality",
        markdown=budget_markdown(report, report.cross_region_bytes, row_bytes),
        description="Bytes moved between regions (only each region's partials), against reading every row",
    )
    create_table_artifact(key=f"{key}-statistics", table=rows, description=f"Result, written to {output}")


@flow(name="describe-table", log_prints=True)
def describe_table(
    datasets: list[str],
    columns: list[str] | None = None,
    group_by: str | None = None,
    derive: dict[str, str] | None = None,
    output: str = "results/describe-table.json",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
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
        output: Where to write the result as JSON (a local path).
        catalog: Name of a saved CatalogConfig block to look catalog ids up in; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).

    Returns:
        `columns` (column -> count, mean, std, min, max), with `group_by` also `groups` (group -> column ->
        count, sum, mean), `cross_region_bytes` (measured) and `output`.
    """
    question = tables.TableQuestion(
        "describe", tuple(columns or ()), group_by, derive=tables.Derivations(dict(derive or {}))
    )
    result, report, row_bytes = _run(datasets, question, catalog, cluster, scheduler_address)
    result["cross_region_bytes"] = report.cross_region_bytes
    result["output"] = write_json(result, output)
    rows = [{"column": c, **{k: _round(v) for k, v in s.items()}} for c, s in result["columns"].items()]
    _publish("describe-table", report, row_bytes, rows, result["output"])
    return result


@flow(name="fit-linear-regression", log_prints=True)
def fit_linear_regression(
    datasets: list[str],
    target: str,
    features: list[str],
    derive: dict[str, str] | None = None,
    output: str = "results/linear-regression.json",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """Ordinary least squares of `target` on `features` (with an intercept) over tables in several regions:
    each region reduces its rows to XᵀX and Xᵀy, only those cross, and the flow solves the combined system.

    Args:
        datasets: Tables (Parquet or CSV files or folders): `region:path` references or catalog ids.
        target: The column to explain (may be a derived column).
        features: The explaining columns (may be derived columns).
        derive: New columns from expressions over columns (see describe-table).
        output: Where to write the result as JSON (a local path).
        catalog: Name of a saved CatalogConfig block to look catalog ids up in; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).

    Returns:
        `coefficients` (feature -> value), `intercept`, `r2`, `n` (rows used), `cross_region_bytes` and `output`.
    """
    if not features:
        raise tables.TableInputError("features is empty: name at least one column to fit on")
    question = tables.TableQuestion(
        "regression", tuple(features), target=target, derive=tables.Derivations(dict(derive or {}))
    )
    result, report, row_bytes = _run(datasets, question, catalog, cluster, scheduler_address)
    result["cross_region_bytes"] = report.cross_region_bytes
    result["output"] = write_json(result, output)
    rows = [{"term": "intercept", "value": result["intercept"]}]
    rows += [{"term": f, "value": v} for f, v in result["coefficients"].items()]
    rows.append({"term": "r2", "value": result["r2"]})
    _publish("linear-regression", report, row_bytes, rows, result["output"])
    return result


def _round(value: float) -> float:
    return float(f"{value:.6g}")
