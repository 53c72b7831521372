"""Figures a scientist would put on a slide: wide enough, titled, in degrees, with units and honest colour scales."""

import io

import matplotlib.image
import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg

from proximate.plots import figure, plot_png
from proximate.testing import synthetic


def _map(values: np.ndarray, **attrs) -> xr.DataArray:
    lat = np.linspace(-89.5, 89.5, values.shape[-2])
    lon = np.linspace(-179.5, 179.5, values.shape[-1])
    return xr.DataArray(
        values,
        dims=("latitude", "longitude"),
        coords={
            "latitude": ("latitude", lat, {"units": "degrees_north"}),
            "longitude": ("longitude", lon, {"units": "degrees_east"}),
        },
        name="air_temperature",
        attrs={"units": "K", **attrs},
    )


def _colour_bar(fig):
    # The colour bar is the axes that is not a panel: matplotlib marks it with the colorbar it holds.
    [bar] = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    return bar._colorbar


def test_a_difference_map_is_wide_titled_in_degrees_with_a_symmetric_clipped_scale():
    rng = np.random.default_rng(0)
    values = rng.normal(0.3, 1.0, (90, 180))
    values[10, 10], values[20, 20] = -9.0, 12.0  # two outliers the scale should clip, not stretch to
    da = _map(values, long_name="Air temperature, ensemble mean minus observations")
    png = plot_png(da)
    height, width = matplotlib.image.imread(io.BytesIO(png)).shape[:2]
    assert width >= 900 and height >= 400

    fig = figure(da)
    assert "ensemble mean minus observations [K]" in fig.get_suptitle()
    bar = _colour_bar(fig)
    low, high = bar.mappable.get_clim()
    assert low == -high  # white is zero difference
    assert high >= np.percentile(np.abs(values), 97)  # covers the bulk of the data...
    assert high < 12.0 and bar.extend == "both"  # ...and says, with arrows, that the outliers are clipped
    assert "[K]" in bar.ax.get_ylabel()
    FigureCanvasAgg(fig).draw()  # tick labels exist once drawn
    panel = fig.axes[0]
    ticks = [t.get_text() for t in panel.get_xticklabels() + panel.get_yticklabels()]
    assert any(t.endswith("°W") for t in ticks) and any(t.endswith("°N") for t in ticks), ticks


def test_a_long_title_wraps_instead_of_running_off_the_figure():
    da = _map(np.full((45, 90), 280.0), long_name="A very long quantity name " * 8)
    fig = figure(da)
    lines = fig.get_suptitle().splitlines()
    assert len(lines) > 1 and max(len(line) for line in lines) <= 95


def test_seasonal_panels_share_one_labelled_scale_and_the_generated_seasons_are_smooth():
    from proximate import analysis

    ds = synthetic.daily_temperature(start="2024-01-01", days=366)
    mean = analysis.combine_seasonal([analysis.seasonal_partials(ds, "tas")])
    fig = figure(mean)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 4 and len({im.get_clim() for im in images}) == 1
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["DJF", "MAM", "JJA", "SON"]
    assert "[K]" in _colour_bar(fig).ax.get_ylabel()
    # The generated climate has no artefact at the equator: the zonal means' gradient changes by less than 1.5 K
    # from one 4-degree step to the next in every season (the old generator jumped 18 K between 4 S and 4 N).
    zonal = mean.mean("longitude")
    assert float(np.abs(zonal.diff("latitude").diff("latitude")).max()) < 1.5
    # ...and the seasons are opposite in the two hemispheres: northern mid-latitudes warmer in JJA than DJF.
    north = zonal.sel(latitude=slice(40, 60)).mean("latitude")
    south = zonal.sel(latitude=slice(-60, -40)).mean("latitude")
    assert float(north.sel(season="JJA") - north.sel(season="DJF")) > 10
    assert float(south.sel(season="DJF") - south.sel(season="JJA")) > 10


def test_the_generated_forecast_error_has_spatial_structure_not_pixel_noise():
    from proximate import analysis

    fc = synthetic.forecast(realizations=4, heights=2, nlat=90, nlon=180)
    obs = synthetic.observations(nlat=90, nlon=180, height=10.0)
    error = analysis.forecast_minus_observations(fc, obs, "air_temperature").values
    # Neighbouring grid boxes' errors are strongly correlated (independent noise would give about 0).
    anomaly = error - error.mean()
    lag1 = float((anomaly[:, 1:] * anomaly[:, :-1]).mean() / anomaly.var())
    assert lag1 > 0.6, lag1
    assert 0.2 < float(error.std()) < 3.0
