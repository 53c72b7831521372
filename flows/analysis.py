"""Analysis flows a scientist triggers from the Prefect UI or calls from Python.

Each flow checks its parameters and locates its datasets in its own process (catalog ids and queries against the
catalog, outputs under the results root), before any cluster work. It then points its own DaskTaskRunner at the
multi-region cluster (:class:`flows.common.RegionalTaskRunner`) and submits one Prefect task per region inside
``proximate.pool(region)``, which opens that region's datasets on one of its workers. The workload's lazy graph
is computed from the flow through the same client, every part in the region holding its data, and only the
small results cross. Each run logs what it read, where each part ran and what crossed, publishes the locality
report, a plot and result statistics as artifacts, writes its result atomically and returns an
:class:`~proximate.analysis.AnalysisResult`.

Why this shape: a subflow per run, a Prefect task per dataset and a Prefect task around the compute each cost
tenths of a second to a second of orchestration (see bench/RESULTS.md), for no routing they add: the Dask graph
is routed by the scheduler either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import xarray as xr
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.common import (
    DEFAULT_CLUSTER_BLOCK,
    RegionalTaskRunner,
    apply_egress_plan,
    catalog_settings,
    check_egress_parameter,
    cluster_block,
    fails_on_input_errors,
    locate_parameters,
    output_policy,
    publish_plan,
    run_on_cluster,
)
from proximate import analysis
from proximate.analysis import AnalysisResult, ParameterError
from proximate.catalog.query import DatasetQuery
from proximate.datasets import RegionPath
from proximate.egress import EgressPlan, plan, plan_markdown
from proximate.locality_report import LocalityReport, locality
from proximate.outputs import OutputPolicy, resolve_output, result_path, write_result
from proximate.pools import pool
from tasks.analysis import open_in_region_task
from tasks.artifacts import publish, publish_dashboard, start_plot

# -- the steps every analysis flow shares -----------------------------------------------------------------------


def _variables_check(variables: Sequence[str]) -> Callable[[list[Any]], None]:
    return lambda records: analysis.check_record_variables(records, variables)


def _matching(query: DatasetQuery, catalog: str | None, variables: Sequence[str], parameter: str) -> list[RegionPath]:
    with catalog_settings(catalog, must_exist=True).open() as cat:
        return [r.location for r in analysis.matching_records(cat, query, variables, parameter=parameter)]


def _datasets(
    query: DatasetQuery | None,
    datasets: Sequence[str] | None,
    catalog: str | None,
    variables: Sequence[str],
    parameter: str,
) -> list[RegionPath]:
    """The datasets of a query flow: those ``query`` matches, or the ``datasets`` references, not both."""
    if (query is None) == (not datasets):
        raise ParameterError("query", "give either a catalog query or a list of datasets (region:path or catalog ids)")
    if query is not None:
        return _matching(query, catalog, variables, parameter)
    return locate_parameters({"datasets": list(datasets or [])}, catalog, _variables_check(variables))["datasets"]


def _label(name: str, where: RegionPath) -> str:
    """How the log names an opened dataset: its role and where it is, or only where when that is its name (the
    query flows name each dataset by its location)."""
    return str(where) if name == str(where) else f"{name} {where}"


def _open(log: logging.LoggerAdapter, wanted: Sequence[tuple[str, RegionPath, dict[str, Any]]]) -> list[xr.Dataset]:
    """Open each (name, where, xarray kwargs) in its region: one Prefect task per region, side by side, each
    routed to its region's workers by ``pool``. Returns the lazy datasets in the order asked."""
    by_region: dict[str, list[int]] = {}
    for i, (_, where, _) in enumerate(wanted):
        by_region.setdefault(where.region, []).append(i)
    futures = {}
    for region, idx in by_region.items():
        with pool(region):
            futures[region] = open_in_region_task.submit(
                region, [wanted[i][0] for i in idx], [wanted[i][1] for i in idx], [wanted[i][2] for i in idx]
            )
    opened: list[xr.Dataset | None] = [None] * len(wanted)
    for region, idx in by_region.items():
        for i, ds in zip(idx, futures[region].result(), strict=True):
            opened[i] = ds
        log.info("opened in region %s: %s", region, ", ".join(_label(wanted[i][0], wanted[i][1]) for i in idx))
    return opened  # type: ignore[return-value]


def _compute(client: Any, lazy: Any) -> tuple[Any, LocalityReport]:
    """Compute a lazy result on the cluster from the flow (the client region), measuring what crossed."""
    with locality(client) as report:
        result = client.gather(client.compute(lazy))  # one object or a list of them
    return result, report


def _plan_of(lazy: Any) -> EgressPlan:
    """The egress plan of a flow's lazy result (one object or a list of them)."""
    return plan(*(lazy if isinstance(lazy, list) else [lazy]))


def _dashboard(client: Any) -> str | None:
    """The cluster's Dask dashboard, when its scheduler serves one."""
    if "dashboard" not in client.scheduler_info(n_workers=0).get("services", {}):
        return None
    return client.dashboard_link


def _log_run(log: logging.LoggerAdapter, reports: Sequence[LocalityReport], budget: analysis.ByteBudget) -> None:
    """Where the parts ran and what crossed regions, against the minimum, for the run page."""
    workers: dict[str, set[str]] = {}
    tasks: dict[str, int] = {}
    between: dict[tuple[str, str], int] = {}
    for report in reports:
        for _, region, worker in report.tasks:
            workers.setdefault(region, set()).add(worker)
            tasks[region] = tasks.get(region, 0) + 1
        for pair, n in report.bytes_between.items():
            between[pair] = between.get(pair, 0) + n
    for region in sorted(tasks):
        log.info("ran in region %s: %d Dask tasks on %s", region, tasks[region], ", ".join(sorted(workers[region])))
    crossed = sum(n for (src, dst), n in between.items() if src != dst)
    pairs = "; ".join(f"{src} -> {dst} {n:,} B" for (src, dst), n in sorted(between.items()) if src != dst)
    log.info(
        "crossed regions: %s B (%s), physical minimum %s B, a centralised run would read %s B",
        f"{crossed:,}",
        pairs or "nothing",
        f"{budget.minimum:,}",
        f"{budget.centralised:,}",
    )


# -- the flows --------------------------------------------------------------------------------------------------


@flow(name="compare-forecast-to-observations", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def compare_forecast_to_observations(
    forecast: str,
    observations: str,
    variable: str = "air_temperature",
    height: float | None = None,
    height_index: int | None = None,
    output: str = "forecast-minus-observations.nc",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
    overwrite: bool = False,
    max_egress_gb: float | None = None,
    dry_run: bool = False,
) -> AnalysisResult | EgressPlan:
    """Average an ensemble forecast over its realizations, select a level and subtract the observations, each
    part in the region holding its data; only the small difference crosses regions.

    Args:
        forecast: The ensemble forecast: `region:path` (e.g. `ecmwf:forecast/air_temperature.nc`) or a catalog id.
        observations: The observations: `region:path` or a catalog id.
        variable: Variable to compare, present in both datasets (same units).
        height: Level to select by value (nearest), in the forecast's height units. Empty: the observations' own
            level when they record one.
        height_index: Level to select by position, when `height` is not given.
        output: Where to write the difference, `.nc` or `.zarr`: a path (relative ones go under the results root,
            `PROXIMATE_RESULTS`, else `results/` under `PROXIMATE_HOME` or the flow's directory, and may not
            contain `..`); an absolute path or an `s3://` URL only under a root `PROXIMATE_OUTPUT_ROOTS` allows;
            never inside a region's data.
        catalog: Name of a saved CatalogConfig block to look catalog ids up in; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
        overwrite: Replace an existing output that no proximate flow wrote (an output a flow wrote is replaced
            anyway, atomically).
        max_egress_gb: Refuse to compute, before anything runs, if the plan predicts more than this many GB
            (decimal) crossing regions, the result's way to the client included. Empty: no limit.
        dry_run: Plan only: publish the predicted bytes between regions as the `-egress-plan` artifact, compute
            and write nothing, and return the plan.

    Returns:
        The written output, the datasets read, and the bytes that crossed regions against the run's budget (on a
        dry run, the plan).
    """
    log = get_run_logger()
    check_egress_parameter(max_egress_gb)
    policy = output_policy()
    target = resolve_output(output, policy=policy, overwrite=overwrite)
    block = cluster_block(cluster, scheduler_address)
    located = locate_parameters(
        {"forecast": forecast, "observations": observations}, catalog, _variables_check([variable])
    )
    (fc_where,), (obs_where,) = located["forecast"], located["observations"]
    log.info("forecast %s, observations %s, variable %s", fc_where, obs_where, variable)
    level = {"height": height, "height_index": height_index}
    return _analyse(
        log, "compare", run_on_cluster(block, located),
        [("forecast", fc_where, {"chunks": {"realization": 1}}), ("observations", obs_where, {})],
        lambda fc, obs: analysis.forecast_minus_observations(fc, obs, variable, **level),
        lambda fc, obs, result: analysis.compare_budget(fc, obs, variable, result, **level),
        (target, policy, overwrite), max_egress_gb, dry_run,
    )  # fmt: skip


def _analyse(
    log: logging.LoggerAdapter,
    key: str,
    client: Any,
    wanted: Sequence[tuple[str, RegionPath, dict[str, Any]]],
    build: Callable[..., Any],
    budget_of: Callable[..., analysis.ByteBudget],
    output: tuple[str, OutputPolicy, bool],
    max_egress_gb: float | None,
    dry_run: bool,
) -> AnalysisResult | EgressPlan:
    """What a flow with one output does once its inputs are located: open each of ``wanted`` in its region,
    ``build(*datasets)`` the lazy result, plan it (and stop there on a dry run), compute it measuring what crossed,
    then ``budget_of(*datasets, result)``, write, log and publish."""
    opened = _open(log, wanted)
    lazy = build(*opened)
    predicted = apply_egress_plan(log, key, _plan_of(lazy), max_egress_gb, dry_run)
    if dry_run:
        return predicted
    result, report = _compute(client, lazy)
    budget = budget_of(*opened, result)
    _finish(log, key, result, [report], budget, output, client, predicted)
    return AnalysisResult.of([output[0]], [where for _, where, _ in wanted], [report], budget)


def _finish(
    log: logging.LoggerAdapter,
    key: str,
    result: Any,
    reports: Sequence[LocalityReport],
    budget: analysis.ByteBudget,
    output: tuple[str, OutputPolicy, bool],
    client: Any,
    predicted: EgressPlan | None = None,
) -> None:
    target, policy, overwrite = output
    plot = start_plot(result)  # rendered while the result is written
    write_result(result, target, policy=policy, overwrite=overwrite)
    _log_run(log, reports, budget)
    log.info("result written to %s", target)
    beside = plan_markdown(predicted, reports[0]) if predicted is not None else None
    publish(
        key, result, reports[0], budget=budget, output=target, plot=plot, dashboard=_dashboard(client), predicted=beside
    )
    if predicted is not None:
        publish_plan(key, predicted, reports[0])


@flow(name="scenario-difference", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def scenario_difference(
    scenario: str,
    baseline: str,
    variable: str = "air_temperature",
    start_year: int = 2070,
    end_year: int = 2099,
    output: str = "scenario-difference.nc",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
    overwrite: bool = False,
    max_egress_gb: float | None = None,
    dry_run: bool = False,
) -> AnalysisResult | EgressPlan:
    """A model's climate-change signal between two scenario runs that live in different regions: each run is
    averaged over the years where it lives, and only the two means cross (e.g. HadCM3 A1B minus E1, 2070-2099).

    Args:
        scenario: The run of interest: `region:path` (e.g. `ecmwf:real/A1B_north_america.nc`) or a catalog id.
        baseline: The run subtracted from it, on the same grid: `region:path` or a catalog id.
        variable: Variable present in both runs (same units).
        start_year: First year averaged.
        end_year: Last year averaged (inclusive).
        output: Where to write the difference, `.nc` or `.zarr` (as for compare-forecast-to-observations).
        catalog: Name of a saved CatalogConfig block to look catalog ids up in; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
        overwrite: Replace an existing output that no proximate flow wrote (an output a flow wrote is replaced
            anyway, atomically).
        max_egress_gb: Refuse to compute, before anything runs, if the plan predicts more than this many GB
            (decimal) crossing regions, the result's way to the client included. Empty: no limit.
        dry_run: Plan only: publish the predicted bytes between regions as the `-egress-plan` artifact, compute
            and write nothing, and return the plan.

    Returns:
        The written output, the datasets read, and the bytes that crossed regions against the run's budget (on a
        dry run, the plan).
    """
    log = get_run_logger()
    check_egress_parameter(max_egress_gb)
    if start_year > end_year:
        raise ParameterError("start_year", f"{start_year} is after end_year {end_year}")
    policy = output_policy()
    target = resolve_output(output, policy=policy, overwrite=overwrite)
    block = cluster_block(cluster, scheduler_address)
    located = locate_parameters({"scenario": scenario, "baseline": baseline}, catalog, _variables_check([variable]))
    (scenario_where,), (baseline_where,) = located["scenario"], located["baseline"]
    log.info("scenario %s minus baseline %s, %s, %d-%d", scenario_where, baseline_where, variable, start_year,
             end_year)  # fmt: skip
    return _analyse(
        log, "scenario-difference", run_on_cluster(block, located),
        [("scenario", scenario_where, {}), ("baseline", baseline_where, {})],
        lambda scenario, baseline: analysis.scenario_difference(scenario, baseline, variable, start_year, end_year),
        lambda scenario, baseline, result: analysis.scenario_budget(scenario, baseline, variable, start_year, end_year,
                                                                   result),
        (target, policy, overwrite), max_egress_gb, dry_run,
    )  # fmt: skip


@flow(name="seasonal-mean", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def seasonal_mean(
    query: DatasetQuery | None = None,
    variable: str = "tas",
    valid_min: float | None = None,
    valid_max: float | None = None,
    output: str = "seasonal-mean.nc",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
    datasets: list[str] | None = None,
    overwrite: bool = False,
    max_egress_gb: float | None = None,
    dry_run: bool = False,
) -> AnalysisResult | EgressPlan:
    """Seasonal mean (DJF, MAM, JJA, SON) over every dataset a catalog query matches, possibly in several
    regions: each dataset's per-season sums and counts are computed where it lives, and only those cross.

    Args:
        query: Which datasets: catalog fields (text, variable, standard name, region, time range, bbox).
        variable: Variable to average; every matching dataset must have it, on the same grid.
        valid_min: Mask values below this before averaging (e.g. fill values).
        valid_max: Mask values above this before averaging.
        output: Where to write the result, `.nc` or `.zarr`: a path (relative ones go under the results root) or
            an `s3://` URL.
        catalog: Name of a saved CatalogConfig block; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
        datasets: Instead of a query: the datasets, as `region:path` or catalog ids.
        overwrite: Replace an existing output that no proximate flow wrote (an output a flow wrote is replaced
            anyway, atomically).
        max_egress_gb: Refuse to compute, before anything runs, if the plan predicts more than this many GB
            (decimal) crossing regions, the result's way to the client included. Empty: no limit.
        dry_run: Plan only: publish the predicted bytes between regions as the `-egress-plan` artifact, compute
            and write nothing, and return the plan.

    Returns:
        The written output, the datasets read, and the bytes that crossed regions against the run's budget (on a
        dry run, the plan).
    """
    log = get_run_logger()
    check_egress_parameter(max_egress_gb)
    policy = output_policy()
    target = resolve_output(output, policy=policy, overwrite=overwrite)
    block = cluster_block(cluster, scheduler_address)
    wheres = _datasets(query, datasets, catalog, [variable], "variable")
    log.info("%d dataset(s): %s", len(wheres), ", ".join(map(str, wheres)))
    client = run_on_cluster(block, {"datasets" if datasets else "query": wheres})
    opened = _open(log, [(str(w), w, {}) for w in wheres])
    partials = [analysis.seasonal_partials(ds, variable, valid_min=valid_min, valid_max=valid_max) for ds in opened]
    lazy = analysis.combine_seasonal(partials)
    predicted = apply_egress_plan(log, "seasonal-mean", _plan_of(lazy), max_egress_gb, dry_run)
    if dry_run:
        return predicted
    result, report = _compute(client, lazy)
    budget = analysis.seasonal_budget(opened, partials, variable, result)
    _finish(log, "seasonal-mean", result, [report], budget, (target, policy, overwrite), client, predicted)
    return AnalysisResult.of([target], wheres, [report], budget)


@flow(name="summarize", task_runner=RegionalTaskRunner())
@fails_on_input_errors
def summarize(
    query: DatasetQuery | None = None,
    variables: list[str] | None = None,
    dims: list[str] | None = None,
    statistics: list[str] | None = None,
    output: str = "summaries",
    catalog: str | None = None,
    cluster: str = DEFAULT_CLUSTER_BLOCK,
    scheduler_address: str | None = None,
    datasets: list[str] | None = None,
    overwrite: bool = False,
    max_egress_gb: float | None = None,
    dry_run: bool = False,
) -> AnalysisResult | EgressPlan:
    """Reduce each matching dataset where it lives (mean, min, max, std over the given dimensions) and bring
    only the reductions to the client region.

    Args:
        query: Which datasets: catalog fields (text, variable, standard name, region, time range, bbox).
        variables: Variables to reduce; each matching dataset must have them.
        dims: Dimensions to reduce over; empty reduces over all of them.
        statistics: Any of mean, min, max, std; empty means all four.
        output: Folder for one NetCDF file of reductions per dataset (a relative one goes under the results root).
        catalog: Name of a saved CatalogConfig block; empty uses the default catalog.
        cluster: Name of the RegionalCluster block to run on.
        scheduler_address: Use this Dask scheduler instead of the block (tcp://host:port).
        datasets: Instead of a query: the datasets, as `region:path` or catalog ids.
        overwrite: Replace an existing output that no proximate flow wrote (an output a flow wrote is replaced
            anyway, atomically).
        max_egress_gb: Refuse to compute, before anything runs, if the plan predicts more than this many GB
            (decimal) crossing regions, the result's way to the client included. Empty: no limit.
        dry_run: Plan only: publish the predicted bytes between regions as the `-egress-plan` artifact, compute
            and write nothing, and return the plan.

    Returns:
        One output per dataset, the datasets read, and the bytes that crossed regions against the run's budget (on
        a dry run, the plan).
    """
    log = get_run_logger()
    check_egress_parameter(max_egress_gb)
    if not variables:
        raise ParameterError("variables", "name at least one variable to reduce")
    try:
        statistics = analysis.check_statistics(statistics)
    except analysis.AnalysisInputError as exc:
        raise ParameterError("statistics", str(exc)) from exc
    policy = output_policy()
    folder = resolve_output(output, folder=True, policy=policy)
    block = cluster_block(cluster, scheduler_address)
    wheres = _datasets(query, datasets, catalog, list(variables), "variables")
    log.info("%d dataset(s): %s", len(wheres), ", ".join(map(str, wheres)))
    client = run_on_cluster(block, {"datasets" if datasets else "query": wheres})
    opened = _open(log, [(str(w), w, {}) for w in wheres])
    lazy = [analysis.summarize(ds, variables, dims or [], statistics) for ds in opened]  # checks before compute
    predicted = apply_egress_plan(log, "summarize", _plan_of(lazy), max_egress_gb, dry_run)
    if dry_run:
        return predicted
    computed, report = _compute(client, lazy)
    budget = analysis.summarize_budget(opened, variables, computed)
    written = [
        write_result(r, result_path(folder, where), policy=policy, overwrite=overwrite)
        for where, r in zip(wheres, computed, strict=True)
    ]
    _log_run(log, [report], budget)
    log.info("results written to %s", folder)
    rows = analysis.reduction_rows(wheres, computed)
    create_table_artifact(key="summarize-statistics", table=rows, description="Reductions per dataset")
    publish_plan("summarize", predicted, report)
    link = _dashboard(client)
    if link:
        publish_dashboard("summarize", link)
    return AnalysisResult.of(written, wheres, [report], budget)
