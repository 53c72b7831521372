"""Prefect artifacts for analysis runs: locality report, plot, result statistics, the Dask dashboard."""

from __future__ import annotations

import base64
from concurrent.futures import Future, ThreadPoolExecutor

import xarray as xr
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from proximate.analysis import ByteBudget, statistics_row
from proximate.locality_report import LocalityReport, budget_markdown
from proximate.plots import plot_png, title_of

_PLOTTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proximate-plot")


def plottable(result: xr.DataArray | xr.Dataset) -> xr.DataArray | None:
    """The array a run's plot shows: the result, or its first variable with a dimension."""
    arrays = [result] if isinstance(result, xr.DataArray) else list(result.data_vars.values())
    return next((a for a in arrays if a.ndim >= 1), None)


def start_plot(result: xr.DataArray | xr.Dataset) -> Future[bytes] | None:
    """Render the run's plot in a thread, so it overlaps writing the result (the render is CPU, the write I/O)."""
    da = plottable(result)
    return _PLOTTER.submit(plot_png, da) if da is not None else None


def publish(
    key_prefix: str,
    result: xr.DataArray | xr.Dataset,
    report: LocalityReport,
    budget: ByteBudget,
    output: str,
    plot: Future[bytes] | None = None,
    dashboard: str | None = None,
    predicted: str | None = None,
) -> None:
    """Locality report (with ``predicted``, the egress plan's Markdown beside the measurement, when given), PNG
    plot (embedded; from :func:`start_plot` when given), statistics table, and a link to the Dask dashboard when
    the cluster serves one."""
    locality_md = budget_markdown(report, budget.minimum, budget.centralised)
    if predicted:
        locality_md += "\n\n### Predicted before the run, beside measured\n\n" + predicted
    create_markdown_artifact(
        key=f"{key_prefix}-locality",
        markdown=locality_md,
        description="Bytes moved between regions, against the physical minimum and a centralised run",
    )
    da = plottable(result)
    if da is not None:
        png = base64.b64encode(plot.result() if plot is not None else plot_png(da)).decode()
        create_markdown_artifact(
            key=f"{key_prefix}-plot",
            markdown=f"## {title_of(da)}\n\n![{da.name}](data:image/png;base64,{png})\n\nResult written to `{output}`.",
            description="Plot of the result",
        )
    arrays = [result] if isinstance(result, xr.DataArray) else list(result.data_vars.values())
    create_table_artifact(
        key=f"{key_prefix}-statistics",
        table=[statistics_row(a) for a in arrays],
        description="Statistics of the result",
    )
    if dashboard:
        publish_dashboard(key_prefix, dashboard)


def publish_dashboard(key_prefix: str, link: str) -> None:
    """The Dask dashboard of the cluster the run used (task stream, worker memory), as a link artifact."""
    create_link_artifact(
        key=f"{key_prefix}-dask-dashboard",
        link=link,
        link_text="Dask dashboard",
        description="The cluster's Dask dashboard",
    )
