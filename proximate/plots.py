"""PNG plots of results, rendered headless (Agg) so flows can run anywhere."""

from __future__ import annotations

import io

import xarray as xr


def plot_png(da: xr.DataArray, title: str | None = None) -> bytes:
    """A map (2-D) or facets (3-D, e.g. seasons) of ``da``; returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    da = da.squeeze(drop=True)
    if da.ndim == 3:
        grid = da.plot(col=da.dims[0], col_wrap=min(4, da.sizes[da.dims[0]]), robust=True)
        fig = grid.fig
    else:
        fig, ax = plt.subplots(figsize=(8, 4))
        if da.ndim >= 2:
            da.plot(ax=ax, robust=True)
        else:
            da.plot(ax=ax)
        ax.set_title(title or str(da.name or ""))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
