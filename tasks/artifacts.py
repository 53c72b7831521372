"""Prefect artifacts for analysis runs: locality report, plot, result statistics."""

from __future__ import annotations

import base64

import numpy as np
import xarray as xr
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from proximate.locality_report import LocalityReport
from proximate.plots import plot_png


def _mib(n: float) -> str:
    return f"{n / 2**20:,.3f} MiB"


def locality_markdown(report: LocalityReport, minimum: int, centralised: int, usd_per_gb: float = 0.02) -> str:
    rows = "\n".join(
        f"| {src} | {dst} | {n:,} |" for (src, dst), n in sorted(report.bytes_between.items()) if src != dst
    )
    ratio = report.cross_region_bytes / minimum if minimum else float("nan")
    this_cost = f"${report.egress_cost(usd_per_gb):.6f}"
    central = f"{centralised / max(report.cross_region_bytes, 1):,.0f}x more"
    central_cost = f"${centralised / 1e9 * usd_per_gb:.6f}"
    return f"""# Data locality

| from | to | bytes |
| --- | --- | ---: |
{rows or "| - | - | 0 |"}

| | cross-region | vs this run | egress at ${usd_per_gb}/GB |
| --- | ---: | ---: | ---: |
| this run (measured, worker transfer logs) | {_mib(report.cross_region_bytes)} | 1.00x | {this_cost} |
| physical minimum | {_mib(minimum)} | {ratio:.2f}x of minimum | ${minimum / 1e9 * usd_per_gb:.6f} |
| centralised (client region reads every input) | {_mib(centralised)} | {central} | {central_cost} |

Tasks per region: {", ".join(f"{r}: {n}" for r, n in sorted(report.tasks_by_region.items()))}
"""


def publish(
    key_prefix: str,
    result: xr.DataArray | xr.Dataset,
    report: LocalityReport,
    *,
    minimum: int,
    centralised: int,
    output: str,
) -> None:
    """Locality report, PNG plot (embedded), statistics table."""
    create_markdown_artifact(
        key=f"{key_prefix}-locality",
        markdown=locality_markdown(report, minimum, centralised),
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


def statistics_row(da: xr.DataArray) -> dict:
    values = np.asarray(da.values, dtype="f8")
    finite = values[np.isfinite(values)]
    return {
        "variable": str(da.name),
        "units": str(da.attrs.get("units", "")),
        "shape": "x".join(map(str, da.shape)) or "scalar",
        "count": int(finite.size),
        "mean": float(finite.mean()) if finite.size else None,
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
    }
