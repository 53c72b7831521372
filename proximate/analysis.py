"""The scientists' workloads as pure functions over (lazy, region-pinned) xarray objects.

Each builds a lazy graph; the scheduler's router runs every part where its data lives. Checks that can fail
(missing variable, incompatible grids or units) run on metadata, before any heavy work. Each workload also has
its byte budget: what must cross regions at least (the physical minimum) and what a centralised run, reading
every input from the client region, would move. The flows only wire these together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from proximate.datasets import RegionPath, location_of
from proximate.errors import ProximateInputError
from proximate.plots import DIVERGING_ATTR
from proximate.pools import pool

if TYPE_CHECKING:
    from proximate.catalog import Catalog, DatasetRecord
    from proximate.catalog.query import DatasetQuery
    from proximate.locality_report import LocalityReport

LAT_NAMES = ("latitude", "lat", "grid_latitude", "y")
LON_NAMES = ("longitude", "lon", "grid_longitude", "x")
STATISTICS = ("mean", "min", "max", "std")
#: Meteorological seasons in calendar order (xarray's ``time.season`` groups sort them alphabetically).
SEASONS = ("DJF", "MAM", "JJA", "SON")
LEVEL_NAMES = ("height", "level", "pressure", "z")


class AnalysisInputError(ProximateInputError):
    """The inputs cannot be combined as asked; the message says what to change."""


class ParameterError(AnalysisInputError):
    """A flow parameter has a value that cannot work; the message starts with the parameter's name."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message if message.startswith(parameter) else f"{parameter}: {message}")
        self.parameter = parameter


def require_variable(ds: xr.Dataset, variable: str, what: str = "dataset") -> xr.DataArray:
    if variable not in ds.data_vars:
        available = ", ".join(sorted(map(str, ds.data_vars))) or "(none)"
        raise AnalysisInputError(f"variable {variable!r} is not in the {what}; available: {available}")
    return ds[variable]


def _dim(da: xr.DataArray, names: Sequence[str], what: str) -> str:
    for name in names:
        if name in da.dims:
            return name
    raise AnalysisInputError(f"{da.name!r} has no {what} dimension (dims: {', '.join(map(str, da.dims))})")


def check_units(a: xr.DataArray, b: xr.DataArray) -> None:
    ua, ub = a.attrs.get("units"), b.attrs.get("units")
    if ua and ub and ua != ub:
        raise AnalysisInputError(f"units differ: {a.name!r} is in {ua!r}, {b.name!r} in {ub!r}; convert one first")


def _same_grid(a: xr.DataArray, b: xr.DataArray, lat: tuple[str, str], lon: tuple[str, str]) -> bool:
    return (
        a.sizes[lat[0]] == b.sizes[lat[1]]
        and a.sizes[lon[0]] == b.sizes[lon[1]]
        and np.allclose(a[lat[0]].values, b[lat[1]].values)
        and np.allclose(a[lon[0]].values, b[lon[1]].values)
    )


def select_level(da: xr.DataArray, height: float | None = None, height_index: int | None = None) -> xr.DataArray:
    """One level by value (nearest) or by position; ``da`` unchanged when neither is given."""
    if height is None and height_index is None:
        return da
    level_dim = next((d for d in LEVEL_NAMES if d in da.dims), None)
    if level_dim is None:
        raise AnalysisInputError(f"{da.name!r} has no height/level dimension to select from")
    if height is not None:
        return da.sel({level_dim: height}, method="nearest")
    size = da.sizes[level_dim]
    if not -size <= int(height_index) < size:
        raise AnalysisInputError(f"height_index {height_index} is out of range: {level_dim} has {size} levels")
    return da.isel({level_dim: int(height_index)})


def scalar_level(da: xr.DataArray | xr.Dataset) -> tuple[str, float] | None:
    """The level a field is at when it says so with a scalar coordinate (``height = 10 m``): (name, value)."""
    for name in LEVEL_NAMES:
        coord = da.coords.get(name)
        if coord is not None and coord.ndim == 0 and name not in da.dims:
            return name, float(coord.values)
    return None


def _level_of_observations(
    fc: xr.DataArray, obs: xr.DataArray, height: float | None, height_index: int | None
) -> tuple[float | None, int | None]:
    """The forecast level to compare with: the observations' own when they carry one (and the caller asked for
    none, or for the same); what was asked otherwise."""
    at = scalar_level(obs)
    if at is None:
        return height, height_index
    name, value = at
    units = obs.coords[name].attrs.get("units", "")
    level_dim = next((d for d in LEVEL_NAMES if d in fc.dims), None)
    if level_dim is None:
        return height, height_index
    levels = fc[level_dim].values
    if height is None and height_index is None:
        nearest = float(levels[np.abs(levels - value).argmin()])
        if not np.isclose(nearest, value, rtol=1e-6, atol=1e-6):
            raise AnalysisInputError(
                f"the observations are at {name} {value:g} {units}, a level the forecast lacks (nearest"
                f" {nearest:g}); give height or height_index to compare with another level on purpose"
            )
        return value, None
    chosen = float(select_level(fc[level_dim], height, height_index).values)
    if not np.isclose(chosen, value, rtol=1e-6, atol=1e-6):
        raise AnalysisInputError(
            f"the observations are at {name} {value:g} {units} but the forecast level asked is {chosen:g}"
            f" {units}: leave height and height_index empty to compare at the observations' level"
        )
    return height, height_index


def forecast_minus_observations(
    forecast: xr.Dataset,
    observations: xr.Dataset,
    variable: str,
    *,
    height: float | None = None,
    height_index: int | None = None,
    realization_dim: str = "realization",
    observation_variable: str | None = None,
) -> xr.DataArray:
    """The Met Office computation: ensemble mean, one level, minus observations (interpolated onto the forecast
    grid when the grids differ). Lazy.

    Observations that carry their level (a scalar ``height`` coordinate) are compared with the forecast at that
    level; asking for another one is refused, as a difference across levels measures the lapse rate, not the
    forecast."""
    fc = require_variable(forecast, variable, "forecast")
    obs = require_variable(observations, observation_variable or variable, "observations")
    check_units(fc, obs)
    height, height_index = _level_of_observations(fc, obs, height, height_index)
    if realization_dim not in fc.dims:
        raise AnalysisInputError(f"forecast {variable!r} has no {realization_dim!r} dimension to average over")
    mean = select_level(fc.mean(realization_dim), height, height_index)
    lat = (_dim(mean, LAT_NAMES, "latitude"), _dim(obs, LAT_NAMES, "latitude"))
    lon = (_dim(mean, LON_NAMES, "longitude"), _dim(obs, LON_NAMES, "longitude"))
    extra = set(obs.dims) - {lat[1], lon[1]}
    if extra:
        raise AnalysisInputError(f"observations have dimensions the forecast level lacks: {sorted(extra)}")
    if not _same_grid(mean, obs, lat, lon):
        lat_ok = _overlap(mean[lat[0]].values, obs[lat[1]].values)
        lon_ok = _overlap(mean[lon[0]].values, obs[lon[1]].values)
        if not (lat_ok and lon_ok):
            raise AnalysisInputError("forecast and observation grids do not overlap; nothing to compare")
        target = {lat[1]: mean[lat[0]].values, lon[1]: mean[lon[0]].values}
        # Interpolate where fewer bytes have to move: upsampling observations is cheaper to do beside the
        # forecast (the raw observations cross), downsampling beside the observations (the result crosses).
        where = location_of(forecast)
        region = where.region if where else None
        upsampling = obs.size < mean[lat[0]].size * mean[lon[0]].size
        with pool(region) if region and upsampling else contextlib.nullcontext():
            obs = obs.interp(target)
    obs = obs.rename({lat[1]: lat[0], lon[1]: lon[0]}) if lat[0] != lat[1] or lon[0] != lon[1] else obs
    obs = obs.assign_coords({lat[0]: mean[lat[0]], lon[0]: mean[lon[0]]})
    diff = mean - obs
    diff.name = f"{variable}_forecast_minus_observation"
    what = fc.attrs.get("long_name") or variable.replace("_", " ")
    diff.attrs = {
        "units": fc.attrs.get("units", ""),
        "long_name": f"{what[:1].upper()}{what[1:]}, ensemble mean minus observations",
    }
    return diff


def _scenario_label(da: xr.DataArray, ds: xr.Dataset) -> str:
    """How a title names a run: its ``Model scenario`` attribute (the Met Office's), else its file's name."""
    label = da.attrs.get("Model scenario") or da.attrs.get("experiment_id") or ds.attrs.get("experiment_id")
    if label:
        return str(label)
    where = location_of(ds)
    return where.path.rsplit("/", 1)[-1].rsplit(".", 1)[0] if where else str(da.name)


def period(da: xr.DataArray, start_year: int, end_year: int, what: str) -> xr.DataArray:
    """The times of ``da`` in the years ``start_year`` to ``end_year`` (inclusive), time first; lazy.

    Raises:
        AnalysisInputError: ``da`` has no time axis, or none of its times falls in those years.
    """
    time = _dim(da, ("time",), "time")
    if start_year > end_year:
        raise AnalysisInputError(f"start year {start_year} is after end year {end_year}")
    # Years by the calendar's own year field (a 360-day model calendar decodes to cftime, not datetime64).
    years = da[time].dt.year
    chosen = (years >= start_year) & (years <= end_year)
    if not bool(chosen.any()):
        first, last = int(years.min()), int(years.max())
        raise AnalysisInputError(f"the {what} has no time in {start_year}-{end_year} (it covers {first}-{last})")
    index = np.flatnonzero(chosen.values)
    # Years in order are one slice: a plain slice of the chunks, where an index array would add a shuffle.
    contiguous = index[-1] - index[0] + 1 == index.size
    return da.isel({time: slice(index[0], index[-1] + 1) if contiguous else index}).transpose(time, ...)


def scenario_difference(
    scenario: xr.Dataset, baseline: xr.Dataset, variable: str, start_year: int, end_year: int
) -> xr.DataArray:
    """The climate-change signal between two runs of a model: ``scenario`` minus ``baseline``, each averaged over
    ``start_year``-``end_year`` where its data lives (only the two means cross, never the years). Lazy.

    Args:
        scenario: The run of interest (e.g. HadCM3 under SRES A1B).
        baseline: The run it is compared with (e.g. the E1 mitigation scenario), on the same grid.
        variable: The variable both runs have, in the same units.
        start_year: First year of the averaging period.
        end_year: Last year of the averaging period (inclusive).

    Returns:
        The difference, named ``<variable>_difference``, with units, a ``long_name`` naming the scenarios and
        the years, and :data:`DIVERGING_ATTR` so that plots centre the colour scale on zero.

    Raises:
        AnalysisInputError: a variable, the time axis or the years missing, different units or grids.

    Examples:
        >>> a1b = proximate.open_dataset("ecmwf", "real/A1B_north_america.nc")
        >>> e1 = proximate.open_dataset("gcp", "real/E1_north_america.nc")
        >>> signal = scenario_difference(a1b, e1, "air_temperature", 2070, 2099).compute()
    """
    a = require_variable(scenario, variable, "scenario")
    b = require_variable(baseline, variable, "baseline")
    check_units(a, b)
    lat = (_dim(a, LAT_NAMES, "latitude"), _dim(b, LAT_NAMES, "latitude"))
    lon = (_dim(a, LON_NAMES, "longitude"), _dim(b, LON_NAMES, "longitude"))
    if lat[0] != lat[1] or lon[0] != lon[1] or not _same_grid(a, b, lat, lon):
        raise AnalysisInputError("the scenario and the baseline are on different grids; regrid one first")
    years = period(a, start_year, end_year, "scenario"), period(b, start_year, end_year, "baseline")
    mean_a, mean_b = (p.mean(p.dims[0]) for p in years)  # time first: each mean runs where its run lives
    diff = mean_a - mean_b
    labels = _scenario_label(a, scenario), _scenario_label(b, baseline)
    what = str(a.attrs.get("long_name") or a.attrs.get("standard_name") or variable).replace("_", " ")
    diff.name = f"{variable}_difference"
    diff.attrs = {
        "units": a.attrs.get("units", ""),
        "long_name": f"{what[:1].upper()}{what[1:]}, {labels[0]} minus {labels[1]}, {start_year}-{end_year} mean",
        DIVERGING_ATTR: "diverging",
    }
    return diff


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(max(a.min(), b.min()) <= min(a.max(), b.max()))


@dataclass
class SeasonalPartials:
    """What one dataset contributes to a seasonal mean: per-season sums and counts (small, and additive)."""

    total: xr.DataArray
    count: xr.DataArray


def seasonal_partials(
    ds: xr.Dataset, variable: str, *, valid_min: float | None = None, valid_max: float | None = None
) -> SeasonalPartials:
    """Masked per-season sums and counts of one dataset; lazy, so they are computed where the data lives."""
    da = require_variable(ds, variable)
    if "time" not in da.dims:
        raise AnalysisInputError(f"{variable!r} has no time dimension; a seasonal mean needs one")
    if valid_min is not None:
        da = da.where(da >= valid_min)
    if valid_max is not None:
        da = da.where(da <= valid_max)
    groups = da.groupby("time.season")
    total, count = groups.sum(skipna=True), groups.count()
    # The time the partials cover, from the (in-memory) index: for titles and the result's attributes.
    times = ds.indexes.get("time")
    if times is not None and len(times):
        total.attrs.update(time_coverage_start=str(times.min())[:10], time_coverage_end=str(times.max())[:10])
    total.attrs.update({k: da.attrs[k] for k in ("units", "long_name", "standard_name") if k in da.attrs})
    return SeasonalPartials(total=total, count=count)


def combine_seasonal(partials: Sequence[SeasonalPartials]) -> xr.DataArray:
    """Count-weighted seasonal mean over datasets: sum of sums over sum of counts (lazy)."""
    if not partials:
        raise AnalysisInputError("no datasets to combine")
    first = partials[0]
    for p in partials[1:]:
        if p.total.dims != first.total.dims or any(
            p.total.sizes[d] != first.total.sizes[d] for d in first.total.dims if d != "season"
        ):
            raise AnalysisInputError(
                f"datasets are on different grids: {dict(first.total.sizes)} vs {dict(p.total.sizes)}"
            )
    for p in partials[1:]:
        for dim in first.total.dims:
            if dim != "season" and dim in first.total.coords and dim in p.total.coords:
                a, b = first.total[dim].values, p.total[dim].values
                if a.shape != b.shape or not np.allclose(a, b):
                    raise AnalysisInputError(f"datasets differ in their {dim!r} coordinates; regrid them first")
    total = sum((p.total for p in partials[1:]), start=first.total)
    count = sum((p.count for p in partials[1:]), start=first.count)
    # Back to the data's own type: sums over counts would otherwise double a float32 field's size and digits.
    mean = (total / count.where(count > 0)).astype(first.total.dtype)
    present = [s for s in SEASONS if s in mean["season"].values]
    mean = mean.reindex(season=present + [s for s in mean["season"].values if s not in present])
    mean.name = f"{first.total.name or 'value'}_seasonal_mean"
    starts = [p.total.attrs.get("time_coverage_start") for p in partials]
    ends = [p.total.attrs.get("time_coverage_end") for p in partials]
    what = first.total.attrs.get("long_name") or str(first.total.name or "value").replace("_", " ")
    mean.attrs = {"long_name": f"Seasonal mean of {what[:1].lower()}{what[1:]}"}
    if "units" in first.total.attrs:
        mean.attrs["units"] = first.total.attrs["units"]
    if all(starts) and all(ends):
        mean.attrs.update(time_coverage_start=min(starts), time_coverage_end=max(ends))
    return mean


def check_statistics(statistics: Sequence[str] | None) -> list[str]:
    """The statistics to compute (all of :data:`STATISTICS` when none are given); unknown names refused."""
    chosen = list(statistics or STATISTICS)
    unknown = [s for s in chosen if s not in STATISTICS]
    if unknown:
        raise AnalysisInputError(f"unknown statistics {unknown}; choose from {', '.join(STATISTICS)}")
    return chosen


def summarize(
    ds: xr.Dataset, variables: Sequence[str], dims: Sequence[str] | None, statistics: Sequence[str]
) -> xr.Dataset:
    """Reductions (mean, min, max, std) of each variable over ``dims`` (all dims when empty); lazy."""
    check_statistics(statistics)
    out = {}
    for name in variables:
        da = require_variable(ds, name)
        reduce_dims = list(dims) if dims else list(da.dims)
        missing = [d for d in reduce_dims if d not in da.dims]
        if missing:
            raise AnalysisInputError(f"{name!r} has no dimensions {missing}; it has {list(map(str, da.dims))}")
        for stat in statistics:
            out[f"{name}_{stat}"] = getattr(da, stat)(reduce_dims)
    return xr.Dataset(out)


def significant_digits(dtype: np.dtype) -> int:
    """Decimal digits a value of ``dtype`` holds: 6 for float32, 15 for float64, all of an integer's."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return int(np.finfo(dtype).precision)
    return 20


def round_to(value: float, digits: int) -> float:
    """``value`` to ``digits`` significant digits (what a float32 mean can claim, not 17 digits of noise)."""
    return float(f"{value:.{digits}g}")


def statistics_row(da: xr.DataArray) -> dict:
    """Count, mean, min, max and std of a computed array's finite values, with its name, units and shape,
    rounded to the precision of the array's type."""
    values = np.asarray(da.values, dtype="f8")
    finite = values[np.isfinite(values)]
    digits = significant_digits(da.dtype)

    def stat(fn) -> float | None:
        return round_to(float(fn(finite)), digits) if finite.size else None

    return {
        "variable": str(da.name),
        "units": str(da.attrs.get("units", "")),
        "shape": "x".join(map(str, da.shape)) or "scalar",
        "count": int(finite.size),
        "mean": stat(np.mean),
        "min": stat(np.min),
        "max": stat(np.max),
        "std": stat(np.std),
    }


def reduction_rows(datasets: Sequence[RegionPath], results: Sequence[xr.Dataset]) -> list[dict]:
    """One table row per dataset and reduction: shape, mean, min and max of each computed reduction."""
    rows = []
    for where, result in zip(datasets, results, strict=True):
        for name, da in result.data_vars.items():
            row = {"dataset": str(where), "statistic": name}
            row.update({k: v for k, v in statistics_row(da).items() if k in ("shape", "mean", "min", "max")})
            rows.append(row)
    return rows


# -- choosing datasets ------------------------------------------------------------------------------------------


def matching_records(
    catalog: Catalog, query: DatasetQuery, variables: Sequence[str] = (), *, parameter: str = "variable"
) -> list[DatasetRecord]:
    """Every record ``query`` matches, each holding all of ``variables``, before any heavy work.

    Raises:
        ParameterError: the query matched nothing (names the query), or a matching dataset lacks a variable
            (names it and what the dataset has); ``parameter`` is the variables' parameter name.
    """
    from proximate.catalog.query import find_all

    records = find_all(catalog, query)
    if not records:
        raise ParameterError("query", f"the catalog query matched no datasets: {query.describe()}")
    check_record_variables(records, variables, parameter=parameter)
    return records


def check_record_variables(
    records: Sequence[DatasetRecord], variables: Sequence[str], *, parameter: str = "variable"
) -> None:
    """Refuse a variable some of ``records`` lack, from the catalog's metadata (no file is opened).

    Raises:
        ParameterError: names the variable, a dataset lacking it and what that dataset has.
    """
    for variable in variables:
        lacking = [r for r in records if variable not in r.variable_names]
        if lacking:
            have = sorted({v for r in lacking for v in r.variable_names})
            raise ParameterError(
                parameter,
                f"variable {variable!r} is not in {len(lacking)} matching dataset(s) (e.g. {lacking[0].location});"
                f" available there: {', '.join(have) or '(none)'}",
            )


# -- byte budgets -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ByteBudget:
    """What a workload must move between regions at least, and what a centralised run would move."""

    #: The physical minimum: bytes that have to cross whatever the placement.
    minimum: int
    #: Bytes a centralised run reads across regions: every input it touches, from the client region.
    centralised: int


def compare_budget(
    forecast: xr.Dataset,
    observations: xr.Dataset,
    variable: str,
    result: xr.DataArray,
    *,
    height: float | None = None,
    height_index: int | None = None,
) -> ByteBudget:
    """Budget of :func:`forecast_minus_observations`: the smaller operand of the subtraction crosses once (the
    ensemble-mean level or the raw observations, which may be interpolated beside the forecast), then the result
    goes to the client; a centralised run reads the forecast level of every realization and the observations."""
    height, height_index = _level_of_observations(forecast[variable], observations[variable], height, height_index)
    level = select_level(forecast[variable].mean("realization"), height, height_index)
    obs = observations[variable].nbytes
    return ByteBudget(
        minimum=min(level.nbytes, obs) + result.nbytes,
        centralised=select_level(forecast[variable], height, height_index).nbytes + obs,
    )


def seasonal_budget(
    datasets: Sequence[xr.Dataset], partials: Sequence[SeasonalPartials], variable: str, result: xr.DataArray
) -> ByteBudget:
    """Budget of a seasonal mean: the partial sums and counts of every region but the one that combines them
    (the region with the most), then the result to the client; a centralised run reads every input."""
    by_region: dict[str, int] = {}
    for ds, p in zip(datasets, partials, strict=True):
        where = location_of(ds)
        region = where.region if where else "client"
        by_region[region] = by_region.get(region, 0) + p.total.nbytes + p.count.nbytes
    return ByteBudget(
        minimum=sum(by_region.values()) - max(by_region.values()) + result.nbytes,
        centralised=sum(ds[variable].nbytes for ds in datasets),
    )


def summarize_budget(datasets: Sequence[xr.Dataset], variables: Sequence[str], results: Sequence[xr.Dataset]):
    """Budget of :func:`summarize` over datasets: each reduction goes to the client (the minimum); a
    centralised run reads every variable."""
    return ByteBudget(
        minimum=sum(r.nbytes for r in results),
        centralised=sum(ds[v].nbytes for ds in datasets for v in variables),
    )


def scenario_budget(
    scenario: xr.Dataset, baseline: xr.Dataset, variable: str, start_year: int, end_year: int, result: xr.DataArray
) -> ByteBudget:
    """Budget of :func:`scenario_difference`: one run's period mean crosses to the other's region, then the
    result goes to the client; a centralised run reads both runs' years of the period."""
    periods = [period(ds[variable], start_year, end_year, "run") for ds in (scenario, baseline)]
    mean_bytes = [p.isel({p.dims[0]: 0}, drop=True).nbytes for p in periods]  # a mean is one time step's size
    return ByteBudget(minimum=min(mean_bytes) + result.nbytes, centralised=sum(p.nbytes for p in periods))


# -- what a run returns ---------------------------------------------------------------------------------------------


@dataclass
class AnalysisResult:
    """What an analysis run returns: where it wrote, what it read, and what crossed regions against its budget."""

    #: Written results: one path or URL, or one per dataset for per-dataset workloads.
    outputs: list[str]
    #: The datasets it read, where they live.
    datasets: list[RegionPath]
    #: Bytes measured crossing regions (worker transfer logs, the client counting as a region).
    cross_region_bytes: int
    budget: ByteBudget
    tasks_by_region: dict[str, int] = field(default_factory=dict)
    #: Wall time of the Dask computations, seconds.
    compute_seconds: float = 0.0

    @property
    def output(self) -> str:
        """The written result (the first, for per-dataset workloads)."""
        return self.outputs[0]

    @classmethod
    def of(
        cls, outputs: list[str], datasets: list[RegionPath], reports: Sequence[LocalityReport], budget: ByteBudget
    ) -> AnalysisResult:
        """The result of a run whose computations measured ``reports``."""
        tasks: dict[str, int] = {}
        for report in reports:
            for region, n in report.tasks_by_region.items():
                tasks[region] = tasks.get(region, 0) + n
        return cls(
            outputs=outputs,
            datasets=datasets,
            cross_region_bytes=sum(r.cross_region_bytes for r in reports),
            budget=budget,
            tasks_by_region=tasks,
            compute_seconds=sum(r.seconds for r in reports),
        )
