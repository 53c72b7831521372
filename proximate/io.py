"""Open datasets where they live.

``open_dataset(region, path)`` opens the file on a worker of that region (the client cannot see the regions'
file systems, not even a header) and returns a lazy xarray Dataset whose loading tasks are pinned to the
region. The file handles inside the graph hold the *region-relative* path and resolve it against the root of
the worker that runs them, so a misrouted read fails loudly instead of reading a same-named file elsewhere.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

import xarray as xr
from dask import is_dask_collection
from xarray.backends.file_manager import CachingFileManager
from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK, NetCDF4DataStore
from zarr.storage import LocalStore

from proximate.formats import dataset_format
from proximate.pools import pool
from proximate.regions import RegionPath, check_relative_path, pool_resource, resolve

# -- NetCDF ----------------------------------------------------------------------------------------------------


#: (region, path) of every file this process opened for reading, newest last: where reads really happened.
OPENED: deque[tuple[str, str]] = deque(maxlen=100_000)


def opened_files() -> list[tuple[str, str]]:
    """For ``client.run``: the files this worker opened."""
    return list(OPENED)


def _open_netcdf4_in_region(region: str, path: str, mode: str = "r", **kwargs: Any):
    """Opener for the file manager: resolves the path here, on whichever worker is reading."""
    import netCDF4

    handle = netCDF4.Dataset(str(resolve(region, path)), mode=mode, **kwargs)
    OPENED.append((region, path))
    return handle


class RegionNetCDF4Store(NetCDF4DataStore):
    """netCDF4 store whose handle re-resolves (region, path) in every process that opens it."""

    def __init__(self, region: str, path: str, fingerprint: tuple[Any, ...] = ()) -> None:
        manager = CachingFileManager(
            _open_netcdf4_in_region, region, path, mode="r", kwargs={}, lock=NETCDF4_PYTHON_LOCK
        )
        super().__init__(manager, lock=NETCDF4_PYTHON_LOCK)
        self.region_path = RegionPath(region, path)
        self.fingerprint = fingerprint

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # Same file, same content: same Dask names (so reopening is free and graphs deduplicate).
        return ("proximate-netcdf", self.region_path.region, self.region_path.path, self.fingerprint)


# -- Zarr ------------------------------------------------------------------------------------------------------


class RegionZarrStore(LocalStore):
    """Read-only Zarr store whose root is resolved lazily, on the worker that reads."""

    def __init__(self, region: str, path: str, *, read_only: bool = True) -> None:
        self.region_path = RegionPath(region, path)
        super().__init__(root=Path("."), read_only=read_only)

    @property  # type: ignore[override]
    def root(self) -> Path:
        root = resolve(self.region_path.region, self.region_path.path)
        OPENED.append((self.region_path.region, self.region_path.path))
        return root

    @root.setter
    def root(self, value: Path) -> None:  # LocalStore.__init__ assigns it; ours is derived
        pass

    def with_read_only(self, read_only: bool = False) -> RegionZarrStore:
        return type(self)(self.region_path.region, self.region_path.path, read_only=read_only)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegionZarrStore) and other.region_path == self.region_path

    def __hash__(self) -> int:
        return hash(self.region_path)

    def __repr__(self) -> str:
        return f"RegionZarrStore({self.region_path})"

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("proximate-zarr", self.region_path.region, self.region_path.path)


# -- the worker-side open ------------------------------------------------------------------------------------------


def open_local(region: str, path: str, **xarray_kwargs: Any) -> xr.Dataset:
    """Open (region, path) in this process, which must belong to ``region``; loading tasks pinned there."""
    rel = str(check_relative_path(path))
    full = resolve(region, rel)
    fmt = dataset_format(full)
    xarray_kwargs.setdefault("chunks", {})
    with pool(region):
        if fmt == "zarr":
            xarray_kwargs.setdefault("consolidated", None)
            ds = xr.open_zarr(RegionZarrStore(region, rel), **xarray_kwargs)
        else:
            stat = os.stat(full)
            store = RegionNetCDF4Store(region, rel, fingerprint=(stat.st_size, stat.st_mtime_ns))
            ds = xr.open_dataset(store, **xarray_kwargs)
    # Whatever xarray left lazy but not in Dask (scalar coordinates) would otherwise be read on the client,
    # which cannot see the file: load it here, it is small.
    for var in ds.variables.values():
        if not is_dask_collection(var.data):
            var.load()
    ds.attrs.setdefault("proximate_region", region)
    ds.attrs.setdefault("proximate_path", rel)
    ds.encoding["proximate_region"] = region
    ds.encoding["proximate_path"] = rel
    ds.encoding["proximate_format"] = fmt
    return ds


def open_dataset(region: str, path: str, *, client: Any = None, **xarray_kwargs: Any) -> xr.Dataset:
    """Open a NetCDF or Zarr dataset on a worker of ``region``; return it lazy, its reads pinned there."""
    from proximate.client import client_context, require_region

    RegionPath(region, path)  # validate before anything is sent
    kwargs = _submit_kwargs(xarray_kwargs)
    with client_context(client) as c:
        require_region(c, region)
        future = c.submit(open_local, region, path, pure=False, resources={pool_resource(region): 0}, **kwargs)
        return future.result()


def _submit_kwargs(xarray_kwargs: dict[str, Any]) -> dict[str, Any]:
    # client.submit reserves some keyword names; pass xarray's through untouched.
    reserved = {
        "key",
        "workers",
        "resources",
        "retries",
        "priority",
        "fifo_timeout",
        "allow_other_workers",
        "actor",
        "actors",
        "pure",
    }
    clash = reserved & set(xarray_kwargs)
    if clash:
        raise TypeError(f"open_dataset does not accept {sorted(clash)}")
    return xarray_kwargs
