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
    apply_egress_plan,
    check_egress_parameter,
    cluster_block,
    fails_on_input_errors,
    locate_parameters,
    output_policy,
    publish_plan,
    run_on_cluster,
)
from proximate import tables
from proximate.analysis import ParameterError
from proximate.datasets import RegionPath
from proximate.egress import Crossing, EgressPlan, plan_markdown
from proximate.ingestion import pickled_size
from proximate.locality_report import CLIENT, budget_markdown, locality
from proximate.outputs import OutputPolicy, resolve_output, write_json
from proximate.pools import pool
from proximate.regions import pool_resource
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
    egress: tuple[float | None, bool] = (None, False),
) -> dict[str, Any] | EgressPlan:
    """Locate the tables, reduce them per region on the cluster (one Prefect task per region, in its pool),
    measuring what crossed, combine the partials here, write the result to ``output`` (target, policy, overwrite: see
    :func:`proximate.outputs.write_json`) and publish the locality
    artifact; returns the result with its ``cross_region_bytes`` and ``output``. Before any region task, the plan
    (:func:`plan_tables`) is checked against ``egress`` (max_egress_gb, dry_run); a dry run returns the plan."""
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
    max_egress_gb, dry_run = egress
    key = ARTIFACT_KEYS[question.kind]
    predicted = apply_egress_plan(log, key, plan_tables(client, regions, question), max_egress_gb, dry_run)
    if dry_run:
        return predicted
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
        markdown=budget_markdown(report, minimum, reduced.nbytes)
        + "\n\n### Predicted before the run, beside measured\n\n"
        + plan_markdown(predicted, report),
        description="Bytes moved between regions (only each region's partials), against reading every row",
    )
    publish_plan(key, predicted, report)
    result["predicted_bytes"] = predicted.cross_region_bytes
    return result


def plan_tables(client: Any, regions: dict[str, list[RegionPath]], question: tables.TableQuestion) -> EgressPlan:
    """What a table flow will move, from the tables' metadata, before any row is read.

    Each region's metadata (Parquet footers, CSV sizes) is read by a small task on one of its workers
    (:func:`proximate.tables.plan_region`); rows stay in place, and what crosses is each region's partial as
    Prefect carries it to the flow: the partial (its shape known from the columns; with ``group_by`` sized for the
    most groups the metadata allows, an upper bound) inside a completed task state, in Dask's reply message as a
    worker writes it.

    Args:
        client: The run's Dask client on the cluster.
        regions: Each region's tables.
        question: What the flow computes.

    Returns:
        The plan: ``bytes_between`` each region and the client, ``read_bytes`` each region reads in place,
        ``tasks_by_region`` the partitions each region reads, ``bounds`` where the group count bounds the bytes.
    """
    futures = {
        region: client.submit(tables.plan_region, wheres, question, resources={pool_resource(region): 0}, pure=False)
        for region, wheres in regions.items()
    }
    out = EgressPlan()
    for region, future in futures.items():
        reads = future.result()
        carried = _wire_size(_as_prefect_carries(reads.partial)) + reads.extra_bytes
        out.bytes_between[(region, CLIENT)] = carried
        out.crossings.append(Crossing(f"{ARTIFACT_KEYS[question.kind]}-partial", region, CLIENT, carried))
        out.tasks_by_region[region] = reads.partitions
        out.read_bytes[region] = reads.read_bytes
        out.result_bytes += carried
        out.bounds.extend(reads.notes)
    return out


def _wire_size(state: Any) -> int:
    """Bytes a worker writes sending ``state`` as a task's result (what the locality report counts): Dask's reply
    message around it, serialised as Dask serialises it, with its frame lengths."""
    import uuid

    from distributed.protocol import dumps, to_serialize

    key = f"reduce-region-tables-{uuid.uuid4()}"  # a Prefect task's Dask key: its name and a run id
    frames = dumps(
        {"status": "OK", "data": {key: to_serialize(state)}},
        serializers=("dask", "pickle", "error"),
        on_error="raise",
        context={"sender": "", "recipient": ""},
    )
    return sum(len(f) for f in frames) + 8 * (len(frames) + 1)  # each frame's length, and their count, as 8 bytes


def _as_prefect_carries(partial: Any) -> Any:
    """A completed task state as a region task's Dask future holds it (what crosses to the flow): the partial in a
    result record (its serializer and storage key, from the run's result store), with a task run's identifiers."""
    import uuid

    from prefect.results import get_result_store
    from prefect.states import Completed, StateDetails

    details = StateDetails(flow_run_id=uuid.uuid4(), task_run_id=uuid.uuid4())
    return Completed(data=get_result_store().create_result_record(partial), state_details=details)


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
    max_egress_gb: float | None = None,
    dry_run: bool = False,
) -> dict[str, Any] | EgressPlan:
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
        max_egress_gb: Refuse to compute, before any region task, if the plan predicts more than this many GB
            (decimal) crossing regions, the partials' way to the flow included. Empty: no limit.
        dry_run: Plan only (from the tables' metadata: Parquet footers, CSV sizes): publish the predicted bytes
            between regions as the `-egress-plan` artifact, read and write nothing else, and return the plan.

    Returns:
        `columns` (column -> count, mean, std, min, max), with `group_by` also `groups` (group -> column ->
        count, sum, mean), `cross_region_bytes` (measured), `minimum_bytes` (the partials as Prefect carries
        them: each region task's state, pickled), `rows_bytes` (what a centralised run would move),
        `tasks_by_region`, `predicted_bytes` (the plan's) and `output` (on a dry run, the plan).
    """
    check_egress_parameter(max_egress_gb)
    policy = output_policy()
    target = resolve_output(output, suffixes=(".json",), policy=policy, overwrite=overwrite)
    question = tables.TableQuestion(
        "describe", tuple(columns or ()), group_by, derive=tables.Derivations(dict(derive or {}))
    )
    result = _run(
        datasets, question, catalog, cluster, scheduler_address, (target, policy, overwrite), (max_egress_gb, dry_run)
    )
    if isinstance(result, EgressPlan):
        return result
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
    max_egress_gb: float | None = None,
    dry_run: bool = False,
) -> dict[str, Any] | EgressPlan:
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
        max_egress_gb: Refuse to compute, before any region task, if the plan predicts more than this many GB
            (decimal) crossing regions, the partials' way to the flow included. Empty: no limit.
        dry_run: Plan only (from the tables' metadata: Parquet footers, CSV sizes): publish the predicted bytes
            between regions as the `-egress-plan` artifact, read and write nothing else, and return the plan.

    Returns:
        `coefficients` (feature -> value), `intercept`, `r2`, `n` (rows used), `cross_region_bytes`,
        `minimum_bytes`, `rows_bytes`, `tasks_by_region`, `predicted_bytes` (as describe-table's) and `output` (on a
        dry run, the plan).
    """
    check_egress_parameter(max_egress_gb)
    if not features:
        raise ParameterError("features", "is empty: name at least one column to fit on")
    policy = output_policy()
    target_path = resolve_output(output, suffixes=(".json",), policy=policy, overwrite=overwrite)
    question = tables.TableQuestion(
        "regression", tuple(features), target=target, derive=tables.Derivations(dict(derive or {}))
    )
    result = _run(
        datasets,
        question,
        catalog,
        cluster,
        scheduler_address,
        (target_path, policy, overwrite),
        (max_egress_gb, dry_run),
    )
    if isinstance(result, EgressPlan):
        return result
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
