"""PNG plots of results, rendered headless so flows can run anywhere.

Drawn with matplotlib's object API on an Agg canvas, not pyplot: no global figure state, so a flow can render a
plot in a thread while it writes its result, and no tight-bbox pass (which renders every figure twice).
"""

from __future__ import annotations

import io
import textwrap

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


#: Figure width in inches at :data:`DPI`: 1,000 pixels, legible in a Prefect artifact and on a slide.
WIDTH_IN = 10.0
DPI = 100

#: Attribute of a result whose colour scale is symmetric around zero whatever its values (``"diverging"``): a
#: difference that happens to be positive everywhere is still a difference, and white must still mean none.
DIVERGING_ATTR = "proximate_colour_scale"

_LATITUDE_UNITS = {"degrees_north", "degree_north", "degrees_N", "degreeN"}
_LONGITUDE_UNITS = {"degrees_east", "degree_east", "degrees_E", "degreeE"}


def colour_limits(values: np.ndarray, diverging: bool | None = None) -> tuple[float, float, str, bool]:
    """Colour limits for ``values``: ``(vmin, vmax, extend, diverging)``.

    Data that straddles zero (a difference, an anomaly), or any data when ``diverging`` is True, gets a symmetric
    scale around zero, so white means no difference and equal distances mean equal magnitudes; anything else
    (``diverging`` None and data of one sign, or ``diverging`` False) spans its 2nd to 98th percentile. A few
    extreme values should not wash out the map, so the scale may clip them: ``extend`` (``"neither"``, ``"min"``,
    ``"max"`` or ``"both"``, as matplotlib's colour bar takes it) then draws an arrow on the side that was clipped,
    so a reader knows the data goes beyond the colours.
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0, "neither", False
    low, high = (float(v) for v in np.percentile(finite, [2, 98]))
    lowest, highest = float(finite.min()), float(finite.max())
    if diverging is None:
        diverging = lowest < 0 < highest
    if diverging:
        high = max(abs(low), abs(high))
        low = -high
    if low == high:  # a constant field: any scale around it
        low, high = low - 0.5, high + 0.5
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (lowest < low, highest > high)
    ]
    return low, high, extend, diverging


def _axis_label(coord: xr.DataArray, name: str) -> tuple[str, object | None]:
    """An axis's label and, on latitude or longitude, a tick formatter writing degrees (30°N, 150°W)."""
    from matplotlib.ticker import FuncFormatter

    units = str(coord.attrs.get("units", ""))
    standard = coord.attrs.get("standard_name", name)
    if units in _LATITUDE_UNITS or standard == "latitude":
        return "latitude", FuncFormatter(lambda v, _: f"{abs(v):g}°{'N' if v > 0 else 'S' if v < 0 else ''}")
    if units in _LONGITUDE_UNITS or standard == "longitude":
        return "longitude", FuncFormatter(_longitude_label)
    return (f"{name} [{units}]" if units else name), None


def _longitude_label(value: float, _position: object = None) -> str:
    """A longitude in degrees east or west (225, on a 0-360 grid, is 135°W)."""
    v = (value + 180.0) % 360.0 - 180.0
    return f"{abs(v):g}°{'E' if 0 < v < 180 else 'W' if v < 0 else ''}"


def plot_png(da: xr.DataArray, title: str | None = None) -> bytes:
    """:func:`figure` of ``da`` as PNG bytes, 1,000 pixels wide.

    Examples:
        >>> from pathlib import Path
        >>> Path("seasonal-mean.png").write_bytes(plot_png(seasonal_mean))  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return _png(FigureCanvasAgg(figure(da, title)))


def figure(da: xr.DataArray, title: str | None = None):
    """A map (2-D), facets (3-D, one panel per entry of the first dimension, e.g. seasons) or a line (1-D) of
    ``da``, as a matplotlib ``Figure`` (not drawn yet).

    Every panel shares one colour scale (:func:`colour_limits`: symmetric around zero for differences, arrows on
    the colour bar where values are clipped), labelled with the quantity and its units; latitude and longitude axes
    are in degrees and keep their true proportions; the title wraps instead of running off the figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MultipleLocator

    da = da.squeeze()
    title = textwrap.fill(title or title_of(da), width=95)
    units = da.attrs.get("units", "")
    quantity = str(da.attrs.get("long_name") or str(da.name or "").replace("_", " "))
    if da.ndim == 1:
        fig = Figure(figsize=(WIDTH_IN, 4.0), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        ax.plot(da[da.dims[0]].values, da.values)
        label, formatter = _axis_label(da[da.dims[0]], str(da.dims[0]))
        ax.set_xlabel(label)
        if formatter is not None:
            ax.xaxis.set_major_formatter(formatter)
        ax.set_ylabel(f"{quantity} [{units}]" if units else quantity)
        ax.grid(alpha=0.3)
        fig.suptitle(title, fontsize=11)
        return fig
    panels = [da] if da.ndim == 2 else [da.isel({da.dims[0]: i}) for i in range(da.sizes[da.dims[0]])]
    forced = True if da.attrs.get(DIVERGING_ATTR) == "diverging" else None
    vmin, vmax, extend, diverging = colour_limits(np.asarray(da.values, dtype="f8"), forced)
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    ydim, xdim = da.dims[-2], da.dims[-1]
    x, y = da[xdim].values, da[ydim].values
    ylabel, yformat = _axis_label(da[ydim], str(ydim))
    xlabel, xformat = _axis_label(da[xdim], str(xdim))
    geographic = yformat is not None and xformat is not None
    # Panel height from the data's own proportions on a lat/lon grid (plate carree), else a 2:1 panel.
    aspect = (y.max() - y.min()) / max(x.max() - x.min(), 1e-9) if geographic else 0.5
    panel_width = (WIDTH_IN - 1.2) / cols
    fig = Figure(figsize=(WIDTH_IN, rows * panel_width * aspect + 0.9 + 0.2 * title.count("\n")), dpi=DPI)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    image = None
    for ax, panel in zip(axes, panels, strict=False):
        py = panel[ydim].values
        image = ax.imshow(
            panel.values,
            origin="lower" if py[0] < py[-1] else "upper",
            extent=(x.min(), x.max(), y.min(), y.max()),
            vmin=vmin,
            vmax=vmax,
            cmap="RdBu_r" if diverging else "viridis",
            aspect="equal" if geographic else "auto",
            interpolation="nearest",
        )
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        for axis, formatter, span in ((ax.xaxis, xformat, np.ptp(x)), (ax.yaxis, yformat, np.ptp(y))):
            if formatter is not None:
                axis.set_major_formatter(formatter)
                if span >= 150:  # whole-globe axes read best at the parallels and meridians maps use
                    axis.set_major_locator(MultipleLocator(30 if axis is ax.yaxis else 60))
        ax.tick_params(labelsize=8)
        if len(panels) > 1:
            value = panel[da.dims[0]].values
            ax.set_title(str(value) if da.dims[0] == "season" else f"{da.dims[0]} {value}", fontsize=10)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.colorbar(
        image,
        ax=list(axes[: len(panels)]),
        shrink=0.9,
        extend=extend,
        label=textwrap.fill(f"{quantity} [{units}]" if units else quantity, width=50),
    )
    fig.suptitle(title, fontsize=11)
    return fig


def _png(canvas) -> bytes:
    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()
