"""Prefect artifacts for analysis runs: locality report, plot, result statistics."""

from __future__ import annotations

import base64

import xarray as xr
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from proximate.analysis import ByteBudget, statistics_row
from proximate.locality_report import LocalityReport, budget_markdown
from proximate.plots import plot_png


def publish(
    key_prefix: str,
    result: xr.DataArray | xr.Dataset,
    report: LocalityReport,
    budget: ByteBudget,
    output: str,
) -> None:
    """Locality report, PNG plot (embedded), statistics table."""
    create_markdown_artifact(
        key=f"{key_prefix}-locality",
        markdown=budget_markdown(report, budget.minimum, budget.centralised),
        description="Bytes moved between regions, against the physical minimum and a centralised run",
    )
    arrays = [result] if isinstance(result, xr.DataArray) else list(result.data_vars.values())
    plottable = next((a for a in arrays if a.ndim >= 1), None)
    if plottable is not None:
        png = base64.b64encode(plot_png(plottable)).decode()
        create_markdown_artifact(
            key=f"{key_prefix}-plot",
            markdown=f"![{plottable.name}](data:image/png;base64,{png})\n\nResult written to `{output}`.",
            description="Plot of the result",
        )
    create_table_artifact(
        key=f"{key_prefix}-statistics",
        table=[statistics_row(a) for a in arrays],
        description="Statistics of the result",
    )
