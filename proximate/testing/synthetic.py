"""Generated CF-compliant data: an ensemble forecast and gridded observations (the Met Office scenario).

Deterministic for a given seed, so a test can recompute the expected result from the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr


def _grid(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    lat = np.linspace(-89.5, 89.5, nlat)
    lon = np.linspace(-179.5, 179.5, nlon)
    return lat, lon


def _climate(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Annual-mean near-surface temperature (K) of a plausible planet, on ``lat`` x ``lon`` (degrees).

    Smooth everywhere (no kink at the equator, continuous across the antimeridian): 300 K in the tropics falling
    to about 250 K at the poles, with a stationary wave of land and sea (warmer west coasts in mid-latitudes). The
    same function evaluated on two grids gives the same atmosphere, so generated observations and forecasts on
    different grids describe one truth.
    """
    phi, lam = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    zonal = 300.0 - 48.0 * np.sin(phi) ** 2
    waves = 4.0 * np.cos(phi) ** 2 * np.sin(2 * phi) ** 2 * np.cos(2 * lam + 0.6) + 1.5 * np.cos(phi) * np.cos(lam)
    return zonal + waves


def _smooth_fields(
    rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, count: int, amplitude: float, waves: int = 10
) -> np.ndarray:
    """``count`` random fields of large-scale structure (count x lat x lon, standard deviation near ``amplitude``).

    Each field is a sum of ``waves`` planetary waves (zonal wavenumbers 1-6, meridional 1-4), periodic in longitude
    and vanishing towards the poles as real wave patterns do: weather, forecast biases and ensemble spread have
    structure over thousands of kilometres, never independent values per grid point.
    """
    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    m = rng.integers(1, 7, (count, waves))
    n = rng.integers(1, 5, (count, waves))
    lon_phase = rng.uniform(0, 2 * np.pi, (count, waves))
    lat_phase = rng.uniform(0, 2 * np.pi, (count, waves))
    weight = rng.standard_normal((count, waves)) * np.sqrt(2.0 / waves) * amplitude
    # (count, waves, lat) and (count, waves, lon) factors: the fields are their weighted outer products.
    along_lat = np.cos(phi)[None, None, :] * np.sin(n[..., None] * phi[None, None, :] + lat_phase[..., None])
    along_lon = np.cos(m[..., None] * lam[None, None, :] + lon_phase[..., None])
    return np.einsum("cw,cwy,cwx->cyx", weight, along_lat, along_lon) * np.sqrt(2.0)


def forecast(*, realizations: int = 4, heights: int = 16, nlat: int = 90, nlon: int = 180, seed: int = 0) -> xr.Dataset:
    """Air temperature ensemble: realization x height x latitude x longitude, float32.

    The truth (:func:`_climate`, with a lapse rate of 6.5 K/km) plus the model's own error: a systematic bias of
    about 1 K with large-scale structure, shared by every member, and each member's perturbation (about 1 K,
    also smooth), so the ensemble mean minus observations is a map of the model's bias a forecaster would recognise.
    """
    rng = np.random.default_rng(seed)
    lat, lon = _grid(nlat, nlon)
    height = np.linspace(10.0, 10_000.0, heights)
    truth = _climate(lat, lon)[None] - 0.0065 * height[:, None, None]
    bias = 0.2 + _smooth_fields(rng, lat, lon, 1, amplitude=1.0)[0]
    members = _smooth_fields(rng, lat, lon, realizations, amplitude=1.0)
    data = np.empty((realizations, heights, nlat, nlon), dtype=np.float32)
    for r in range(realizations):  # one member at a time: the demo's forecast is 12 x 16 x 180 x 360
        data[r] = truth + (bias + members[r])[None]
    ds = xr.Dataset(
        {
            "air_temperature": (
                ("realization", "height", "latitude", "longitude"),
                data,
                {"standard_name": "air_temperature", "units": "K", "long_name": "Air temperature"},
            )
        },
        coords={
            "realization": ("realization", np.arange(realizations, dtype=np.int32), {"standard_name": "realization"}),
            "height": ("height", height, {"standard_name": "height", "units": "m", "positive": "up"}),
            "latitude": ("latitude", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "longitude": ("longitude", lon, {"standard_name": "longitude", "units": "degrees_east"}),
            "time": ((), pd.Timestamp("2026-06-01T00:00"), {"standard_name": "time"}),
        },
        attrs={
            "Conventions": "CF-1.8",
            "title": "Synthetic ensemble forecast",
            "institution": "proximate",
            "source": "proximate.testing.synthetic.forecast",
        },
    )
    return ds


def observations(*, nlat: int = 90, nlon: int = 180, seed: int = 1, height: float | None = None) -> xr.Dataset:
    """Near-surface air temperature observations on a latitude x longitude grid, float32.

    The same truth as :func:`forecast` plus an observation error of 0.3 K per grid box. With ``height``
    (metres), the observations are of the same atmosphere as :func:`forecast` at that height (its lapse rate
    applied) and say so with a scalar ``height`` coordinate, as CF data does; a forecast minus them is then the
    forecast's error, not the temperature difference between two levels.
    """
    rng = np.random.default_rng(seed)
    lat, lon = _grid(nlat, nlon)
    base = _climate(lat, lon)
    if height is not None:
        base = base - 0.0065 * height
    data = (base + 0.3 * rng.standard_normal((nlat, nlon))).astype(np.float32)
    coords = {
        "latitude": ("latitude", lat, {"standard_name": "latitude", "units": "degrees_north"}),
        "longitude": ("longitude", lon, {"standard_name": "longitude", "units": "degrees_east"}),
        "time": ((), pd.Timestamp("2026-06-01T00:00"), {"standard_name": "time"}),
    }
    if height is not None:
        coords["height"] = ((), float(height), {"standard_name": "height", "units": "m", "positive": "up"})
    return xr.Dataset(
        {
            "air_temperature": (
                ("latitude", "longitude"),
                data,
                {"standard_name": "air_temperature", "units": "K", "long_name": "Air temperature"},
            )
        },
        coords=coords,
        attrs={
            "Conventions": "CF-1.8",
            "title": "Synthetic gridded observations",
            "institution": "proximate",
            "source": "proximate.testing.synthetic.observations",
        },
    )


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str], chunks: dict[str, int] | None = None) -> Path:
    """Write atomically (temp name, then rename), netCDF4 with optional on-disk chunking."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding = {}
    if chunks:
        for name, var in ds.data_vars.items():
            sizes = zip(var.dims, var.shape, strict=True)
            encoding[name] = {"chunksizes": tuple(min(chunks.get(d, n), n) for d, n in sizes)}
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    os.replace(tmp, path)
    return path


def forecast_shape_for_bytes(target_bytes: int, *, heights: int = 16, nlat: int = 180, nlon: int = 360) -> int:
    """Realizations needed for a float32 forecast of at least ``target_bytes``."""
    per_realization = heights * nlat * nlon * 4
    return max(1, -(-target_bytes // per_realization))


def daily_temperature(
    *, start: str = "2024-01-01", days: int = 366, nlat: int = 45, nlon: int = 90, seed: int = 2
) -> xr.Dataset:
    """Daily near-surface temperature with a seasonal cycle (the EASI seasonal-mean workload's input)."""
    rng = np.random.default_rng(seed)
    lat, lon = _grid(nlat, nlon)
    time = pd.date_range(start, periods=days, freq="D")
    doy = time.dayofyear.values
    # The seasonal cycle's amplitude grows with latitude and changes sign across the equator through zero, so the
    # hemispheres' seasons are opposite without a jump between 4 S and 4 N; it peaks about 20 July in the north.
    amplitude = 14.0 * np.sin(np.deg2rad(lat))
    cycle = np.cos(2 * np.pi * (doy - 200) / 365.25)[:, None, None] * amplitude[None, :, None]
    # Weather: a few travelling large-scale patterns whose amplitudes persist from day to day (AR(1), 0.8 a day).
    patterns = _smooth_fields(rng, lat, lon, 8, amplitude=1.0)
    shocks = rng.standard_normal((days, len(patterns)))
    amplitudes = np.empty_like(shocks)
    amplitudes[0] = shocks[0]
    for day in range(1, days):
        amplitudes[day] = 0.8 * amplitudes[day - 1] + 0.6 * shocks[day]
    weather = np.einsum("tk,kyx->tyx", amplitudes, patterns) * (2.0 / np.sqrt(len(patterns)))
    data = (_climate(lat, lon)[None] + cycle + weather).astype(np.float32)
    return xr.Dataset(
        {
            "tas": (
                ("time", "latitude", "longitude"),
                data,
                {"standard_name": "air_temperature", "units": "K", "long_name": "Near-surface air temperature"},
            )
        },
        coords={
            "time": ("time", time, {"standard_name": "time"}),
            "latitude": ("latitude", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "longitude": ("longitude", lon, {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={
            "Conventions": "CF-1.8",
            "title": f"Synthetic daily temperature from {start}",
            "institution": "proximate",
            "source": "proximate.testing.synthetic.daily_temperature",
        },
    )


def trips(rows: int = 200_000, *, start: str = "2024-01-01", days: int = 31, seed: int = 3) -> pd.DataFrame:
    """Taxi trips with the New York yellow-cab schema: pickup and drop-off times and places, distance, fares.

    Durations grow with distance (about 2.5 minutes a mile plus noise), so a regression of one on the other has
    something to find; locations fall in a box around Manhattan.
    """
    rng = np.random.default_rng(seed)
    pickup = pd.Timestamp(start) + pd.to_timedelta(rng.uniform(0, days * 86400, rows), unit="s")
    distance = rng.gamma(2.0, 1.5, rows).round(2)
    passengers = rng.integers(1, 7, rows)
    minutes = 3.0 + 2.5 * distance + 0.2 * passengers + rng.normal(0.0, 2.0, rows).clip(-2.5, None)
    fare = (3.0 + 2.5 * distance + 0.5 * minutes).round(2)
    return pd.DataFrame(
        {
            "VendorID": rng.integers(1, 3, rows).astype("int64"),
            "tpep_pickup_datetime": pickup.floor("s"),
            "tpep_dropoff_datetime": (pickup + pd.to_timedelta(minutes * 60.0, unit="s")).floor("s"),
            "passenger_count": passengers.astype("int64"),
            "trip_distance": distance,
            "pickup_longitude": rng.uniform(-74.02, -73.93, rows),
            "pickup_latitude": rng.uniform(40.70, 40.82, rows),
            "PULocationID": rng.integers(1, 264, rows).astype("int64"),
            "fare_amount": fare,
            "total_amount": (fare * 1.18).round(2),
        }
    )


def write_parquet(df: pd.DataFrame, path: str | os.PathLike[str], row_group_size: int = 50_000) -> Path:
    """Write a table as Parquet atomically (temporary name, then rename), in row groups of ``row_group_size``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, row_group_size=row_group_size)
    os.replace(tmp, path)
    return path
