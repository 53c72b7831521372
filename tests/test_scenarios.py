"""The demo's real-data workload: HadCM3's A1B minus E1 scenario runs (iris-sample-data, Met Office), one run in
each region, averaged where each lives; the result equals numpy on the same files read with netCDF4, the figure is
one a scientist would show."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

A1B = "real/A1B_north_america.nc"
E1 = "real/E1_north_america.nc"
YEARS = (2070, 2099)


@pytest.fixture(autouse=True)
def outputs_under_tmp_path(tmp_path, monkeypatch):
    """These tests write their results to absolute paths under ``tmp_path``: allow that root (empty by default)."""
    monkeypatch.setenv("PROXIMATE_OUTPUT_ROOTS", str(tmp_path))


@pytest.fixture(scope="module")
def scenario_runs(region_roots) -> dict[str, Path]:
    """The demo's two HadCM3 runs, as the demo places them: A1B in region a, E1 in region b."""
    import iris_sample_data

    placed = {}
    for region, path in (("a", A1B), ("b", E1)):
        target = region_roots[region] / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(iris_sample_data.path) / Path(path).name, target)
        placed[region] = target
    return placed


def _period_mean(path: Path) -> np.ndarray:
    """The 2070-2099 mean of a run, from the file's own variables with netCDF4 and numpy (no xarray, no iris)."""
    import cftime
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        time = nc["time"]
        years = np.array([d.year for d in cftime.num2date(time[:], time.units, calendar=time.calendar)])
        values = np.asarray(nc["air_temperature"][:], dtype="f8")
    chosen = (years >= YEARS[0]) & (years <= YEARS[1])
    assert chosen.sum() == 30  # one value a year in these files
    return values[chosen].mean(axis=0)


@pytest.mark.slow  # a flow run on the two-region cluster: over 10 s under load
def test_scenario_difference_equals_numpy_moves_only_the_means_and_plots_a_slide_figure(
    prefect_server, cluster, scenario_runs, tmp_path
):
    import matplotlib.image
    import xarray as xr
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from flows.analysis import scenario_difference
    from proximate.plots import figure

    res = scenario_difference(
        scenario=f"a:{A1B}",
        baseline=f"b:{E1}",
        start_year=YEARS[0],
        end_year=YEARS[1],
        output=str(tmp_path / "a1b-minus-e1.nc"),
        scheduler_address=cluster.address,
    )
    expected = _period_mean(scenario_runs["a"]) - _period_mean(scenario_runs["b"])
    with xr.open_dataset(res.output) as ds:
        result = ds["air_temperature_difference"].load()
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-4)  # K; float32 sums of 30 years
    assert 0.5 < expected.mean() < 3.5  # A1B warms North America more than E1 by the end of the century

    # Only one run's mean crosses to the other's region, then the difference to the flow: 37 x 49 float32 each.
    # Measured is what the workers wrote: each transfer also carries Dask's message (about 350 B) and the result its
    # coordinates and attributes, pickled (about 2.6 kB here): kilobytes on top, never a year of either run (7 kB).
    mean_bytes = expected.size * 4
    assert res.budget.minimum == 2 * mean_bytes
    assert res.budget.minimum <= res.cross_region_bytes <= 1.1 * res.budget.minimum + 4 * 2**10, res
    assert res.budget.centralised == 2 * 30 * mean_bytes

    fig = figure(result)
    title = fig.get_suptitle()
    assert "A1B minus E1" in title and "2070-2099" in title and "[K]" in title, title
    [bar] = [ax._colorbar for ax in fig.axes if hasattr(ax, "_colorbar")]
    low, high = bar.mappable.get_clim()
    assert low == -high and high > 0  # a difference: white is none, though every value here is a warming
    assert "[K]" in bar.ax.get_ylabel()
    FigureCanvasAgg(fig).draw()
    panel = fig.axes[0]
    xticks = [t.get_text() for t in panel.get_xticklabels() if t.get_text()]
    yticks = [t.get_text() for t in panel.get_yticklabels() if t.get_text()]
    # Longitudes 225-315 east on the file's grid read as degrees west; latitudes as degrees north.
    assert xticks and all(t.endswith("°W") for t in xticks), xticks
    assert yticks and all(t.endswith("°N") for t in yticks), yticks

    # The run page's plot is that figure, at a width that reads on a slide.
    plot = _latest_artifact("scenario-difference-plot")
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", plot).group(1))
    height, width = matplotlib.image.imread(io.BytesIO(png)).shape[:2]
    assert width >= 900 and height >= 400, (width, height)


def test_scenario_difference_refuses_years_outside_the_runs_naming_them(scenario_runs):
    import xarray as xr

    from proximate.analysis import AnalysisInputError, scenario_difference

    with xr.open_dataset(scenario_runs["a"]) as a, xr.open_dataset(scenario_runs["b"]) as b:
        with pytest.raises(AnalysisInputError, match="no time in 2150-2160 \\(it covers 1860-2099\\)"):
            scenario_difference(a, b, "air_temperature", 2150, 2160)
        with pytest.raises(AnalysisInputError, match="variable 'tas' is not in the scenario"):
            scenario_difference(a, b, "tas", 2070, 2099)


def _latest_artifact(key: str) -> str:
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as c:
            return await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    [artifact, *_] = sorted(asyncio.run(read()), key=lambda a: a.created, reverse=True)
    return artifact.data
