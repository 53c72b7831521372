"""Crafted files an attacker (or a broken writer) can put in a region, written with h5py, netCDF4 and zarr
directly (never by the code under test). Shared by the confinement and hostile-night tests."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import zarr

#: Bytes a test puts in another region's file: they must never come back from region a.
SECRET = b"REGION-B-SECRET-" * 16


def external_storage(path: Path, target: str | Path, size: int) -> Path:
    """A NetCDF-4/HDF5 file whose variable ``x``'s raw bytes are ``size`` bytes of ``target`` (HDF5 external
    storage): netCDF4 and xarray read ``target`` when ``x`` is read."""
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(size,), dtype="u1", external=[(os.fspath(target), 0, size)])
        f["x"].attrs["units"] = "degrees_north"  # a coordinate the extractor would read
    return path


def external_link(path: Path, target: Path, name: str = "/v") -> Path:
    """An HDF5 file whose object ``v`` is an external link to ``target:name``."""
    with h5py.File(path, "w") as f:
        f["v"] = h5py.ExternalLink(os.fspath(target), name)
    return path


def virtual_dataset(path: Path, target: Path, name: str, shape: tuple[int, ...]) -> Path:
    """An HDF5 file whose dataset ``v`` is a virtual view of ``target:name``."""
    layout = h5py.VirtualLayout(shape=shape, dtype="u1")
    layout[...] = h5py.VirtualSource(os.fspath(target), name, shape=shape)
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("v", layout)
    return path


def secret_h5(path: Path) -> Path:
    """Another region's HDF5 file holding :data:`SECRET` as dataset ``v``."""
    with h5py.File(path, "w") as f:
        f["v"] = np.frombuffer(SECRET, dtype="u1")
    return path


def huge_latitudes(path: Path, n: int = 500_000_000) -> Path:
    """A NetCDF-4 file of about a kilobyte declaring ``n`` latitudes (nothing written: all fill values)."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("lat", n)
        ds.createDimension("lon", 1)
        ds.createVariable("lat", "f4", ("lat",)).units = "degrees_north"
        ds.createVariable("lon", "f4", ("lon",)).units = "degrees_east"
    return path


def many_chunks(path: Path, n: int = 100_000_000) -> Path:
    """A Zarr v2 store of a few hundred bytes whose ``time`` has ``n`` one-value chunks (none written)."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    time = group.create_array("time", shape=(n,), chunks=(1,), dtype="f8", fill_value=0.0)
    time.attrs.update({"units": "days since 2000-01-01", "_ARRAY_DIMENSIONS": ["time"]})
    return path


def many_attributes(path: Path, n: int = 20_000, chars: int = 1000) -> Path:
    """A NetCDF-4 file with ``n`` global attributes of ``chars`` characters each (a 20 MB record, once)."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        for i in range(n):
            ds.setncattr(f"a{i:05d}", "x" * chars)
    return path


def many_latitude_variables(path: Path, variables: int = 100, n: int = 4_000_000) -> Path:
    """A small NetCDF-4 file whose ``variables`` latitude variables each declare ``n`` values, each under the
    extractor's per-coordinate cap: together gigabytes once read, a file nobody foresaw."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("n", n)
        ds.createDimension("lon", 1)
        for i in range(variables):
            ds.createVariable(f"lat{i}", "f4", ("n",)).units = "degrees_north"
        ds.createVariable("lon", "f4", ("lon",)).units = "degrees_east"
    return path


def good_netcdf(path: Path, i: int = 0) -> Path:
    """A small, indexable NetCDF-3 file (scipy's writer, through xarray) whose box depends on ``i``."""
    import xarray as xr

    ds = xr.Dataset(
        {"tas": (("lat", "lon"), np.full((4, 5), 280.0 + i, "f4"), {"units": "K"})},
        coords={
            "lat": ("lat", np.linspace(-10, 10, 4), {"units": "degrees_north"}),
            "lon": ("lon", np.linspace(i % 170, i % 170 + 4, 5), {"units": "degrees_east"}),
        },
    )
    path.write_bytes(bytes(ds.to_netcdf()))
    return path
