"""PNG plots of results, rendered headless so flows can run anywhere.

Drawn with matplotlib's object API on an Agg canvas, not pyplot: no global figure state, so a flow can render a
plot in a thread while it writes its result, and no tight-bbox pass (which renders every figure twice).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import xarray as xr


def title_of(da: xr.DataArray) -> str:
    """What a reader needs above a plot: the quantity, its units, its level and its time.

    ``long_name`` (else the variable name, spaced), ``[units]``, then any scalar coordinates (``height 10 m``,
    ``2026-06-01 00:00``) and the time coverage a seasonal mean records in its attributes.
    """
    what = str(da.attrs.get("long_name") or str(da.name or "").replace("_", " "))
    units = da.attrs.get("units")
    parts = [f"{what} [{units}]" if units else what]
    for name, coord in da.coords.items():
        if coord.ndim != 0 or name in da.dims:
            continue
        value = coord.values
        if np.issubdtype(coord.dtype, np.datetime64):
            parts.append(pd.Timestamp(value).strftime("%Y-%m-%d %H:%M"))
        elif np.issubdtype(coord.dtype, np.number):
            parts.append(f"{name} {float(value):g} {coord.attrs.get('units', '')}".rstrip())
    start, end = da.attrs.get("time_coverage_start"), da.attrs.get("time_coverage_end")
    if start and end:
        parts.append(f"{start} to {end}")
    return ", ".join(parts)


def plot_png(da: xr.DataArray, title: str | None = None) -> bytes:
    """A map (2-D), facets (3-D, one panel per entry of the first dimension, e.g. seasons) or a line (1-D) of
    ``da``; returns PNG bytes. Colour limits are the 2nd and 98th percentiles, shared by every panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    da = da.squeeze()
    title = title or title_of(da)
    if da.ndim == 1:
        fig = Figure(figsize=(8, 3.5), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(da[da.dims[0]].values, da.values)
        ax.set_xlabel(str(da.dims[0]))
        fig.suptitle(title, fontsize=10)
        return _png(FigureCanvasAgg(fig))
    panels = [da] if da.ndim == 2 else [da.isel({da.dims[0]: i}) for i in range(da.sizes[da.dims[0]])]
    values = np.asarray(da.values, dtype="f8")
    finite = values[np.isfinite(values)]
    vmin, vmax = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols + 0.8, 2.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    image = None
    for ax, panel in zip(axes, panels, strict=False):
        ydim, xdim = panel.dims[-2], panel.dims[-1]
        x, y = panel[xdim].values, panel[ydim].values
        image = ax.imshow(
            panel.values,
            origin="lower" if y[0] < y[-1] else "upper",
            extent=(x.min(), x.max(), y.min(), y.max()),
            vmin=vmin,
            vmax=vmax,
            cmap="RdBu_r" if vmin < 0 < vmax else "viridis",
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_xlabel(xdim, fontsize=8)
        ax.set_ylabel(ydim, fontsize=8)
        ax.tick_params(labelsize=7)
        if len(panels) > 1:
            ax.set_title(f"{da.dims[0]} {panel[da.dims[0]].values}", fontsize=9)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes[: len(panels)]), shrink=0.9, label=da.attrs.get("units", ""))
    fig.suptitle(title, fontsize=10)
    return _png(FigureCanvasAgg(fig))


def _png(canvas) -> bytes:
    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()
