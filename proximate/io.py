"""Open datasets where they live.

``open_dataset(region, path)`` opens the file on a worker of that region (the client cannot see the regions'
file systems, not even a header) and returns a lazy xarray Dataset whose loading tasks are pinned to the
region. The file handles inside the graph hold the *region-relative* path and resolve it against the root of
the worker that runs them, so a misrouted read fails loudly instead of reading a same-named file elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import xarray as xr
from dask import is_dask_collection
from xarray.backends.file_manager import CachingFileManager
from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK, NetCDF4DataStore

from proximate.confine import ConfinedLocalStore, check_netcdf_file
from proximate.datasets import LOCATION_KEY, RegionPath
from proximate.formats import dataset_format
from proximate.pools import pool
from proximate.regions import pool_resource, resolve

# -- the read log --------------------------------------------------------------------------------------------------


class ReadLog:
    """Records every dataset this process opens for reading, in order: where reads really happened.

    Off until :func:`start_read_log` (a worker serving for months must not grow a list per file read). Tests run
    ``start_read_log`` and ``stop_read_log`` on every worker with ``client.run`` around a computation to prove
    which region read which file.
    """

    def __init__(self) -> None:
        self.opened: list[RegionPath] = []
        self.active = False

    def note(self, where: RegionPath) -> None:
        if self.active:
            self.opened.append(where)


_READ_LOG = ReadLog()


def start_read_log() -> None:
    """Start recording the datasets this process opens (forgetting what was recorded before)."""
    _READ_LOG.opened, _READ_LOG.active = [], True


def note_read(where: RegionPath) -> None:
    """Record that this process reads ``where`` (for readers outside this module, e.g. the table reader)."""
    _READ_LOG.note(where)


def stop_read_log() -> list[RegionPath]:
    """Stop recording; returns the datasets opened since :func:`start_read_log`, in order."""
    _READ_LOG.active = False
    return list(_READ_LOG.opened)


# -- NetCDF ----------------------------------------------------------------------------------------------------


def _open_netcdf4_in_region(where: RegionPath, mode: str = "r", **kwargs: Any):
    """Opener for the file manager: resolves the path here, on whichever worker is reading."""
    import netCDF4

    full = resolve(where.region, where.path)
    # Before netCDF-C opens it: HDF5 follows external links at open and external storage at read.
    check_netcdf_file(full, str(where))
    handle = netCDF4.Dataset(str(full), mode=mode, **kwargs)
    _READ_LOG.note(where)
    return handle


class RegionNetCDF4Store(NetCDF4DataStore):
    """netCDF4 store whose handle re-resolves its RegionPath in every process that opens it."""

    def __init__(self, where: RegionPath, fingerprint: tuple[Any, ...] = ()) -> None:
        manager = CachingFileManager(_open_netcdf4_in_region, where, mode="r", kwargs={}, lock=NETCDF4_PYTHON_LOCK)
        super().__init__(manager, lock=NETCDF4_PYTHON_LOCK)
        self.region_path = where
        self.fingerprint = fingerprint

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # Same file, same content: same Dask names (so reopening is free and graphs deduplicate).
        return ("proximate-netcdf", self.region_path.region, self.region_path.path, self.fingerprint)


# -- Zarr ------------------------------------------------------------------------------------------------------


class RegionZarrStore(ConfinedLocalStore):
    """Read-only Zarr store whose root is resolved lazily, on the worker that reads; every key it reads is
    resolved too, and one whose symlink leaves the store is refused."""

    def __init__(self, where: RegionPath, *, read_only: bool = True) -> None:
        self.region_path = where
        super().__init__(root=Path("."), read_only=read_only)

    @property  # type: ignore[override]
    def root(self) -> Path:
        root = resolve(self.region_path.region, self.region_path.path)
        _READ_LOG.note(self.region_path)
        return root

    @root.setter
    def root(self, value: Path) -> None:  # LocalStore.__init__ assigns it; ours is derived
        pass

    def with_read_only(self, read_only: bool = False) -> RegionZarrStore:
        return type(self)(self.region_path, read_only=read_only)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegionZarrStore) and other.region_path == self.region_path

    def __hash__(self) -> int:
        return hash(self.region_path)

    def __repr__(self) -> str:
        return f"RegionZarrStore({self.region_path})"

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("proximate-zarr", self.region_path.region, self.region_path.path)


# -- GRIB and GeoTIFF ---------------------------------------------------------------------------------------------

#: xarray engines for the formats their own libraries read; their reads, like all others, are tasks pinned to the
#: region by ``pool()`` (the backends keep the path resolved here, on the region's worker).
_XARRAY_ENGINES = {"grib": "cfgrib", "geotiff": "rasterio"}


def _open_with_engine(where: RegionPath, full: Path, fmt: str, xarray_kwargs: dict[str, Any]) -> xr.Dataset:
    kwargs = dict(xarray_kwargs)
    if fmt == "grib":
        from proximate.catalog.formats.grib import NO_INDEX, import_cfgrib

        import_cfgrib()
        # No .idx file beside the data: a region's tree is the sync's, and a reader must not write into it.
        kwargs["backend_kwargs"] = {**NO_INDEX, **kwargs.get("backend_kwargs", {})}
    else:
        kwargs.setdefault("band_as_variable", True)
    _READ_LOG.note(where)
    return xr.open_dataset(str(full), engine=_XARRAY_ENGINES[fmt], **kwargs)


# -- the worker-side open ------------------------------------------------------------------------------------------


def open_local(where: RegionPath, **xarray_kwargs: Any) -> xr.Dataset:
    """Open ``where`` in this process, which must belong to its region; loading tasks pinned there."""
    full = resolve(where.region, where.path)
    fmt = dataset_format(full)
    if fmt in ("parquet", "csv"):
        raise ValueError(f"{where} is a table ({fmt}): open it with proximate.open_table({where.region!r}, ...)")
    xarray_kwargs.setdefault("chunks", {})
    with pool(where.region):
        if fmt == "zarr":
            xarray_kwargs.setdefault("consolidated", None)
            ds = xr.open_zarr(RegionZarrStore(where), **xarray_kwargs)
        elif fmt in _XARRAY_ENGINES:
            ds = _open_with_engine(where, full, fmt, xarray_kwargs)
        else:
            stat = os.stat(full)
            ds = xr.open_dataset(
                RegionNetCDF4Store(where, fingerprint=(stat.st_size, stat.st_mtime_ns)), **xarray_kwargs
            )
    # Whatever xarray left lazy but not in Dask (scalar coordinates) would otherwise be read on the client,
    # which cannot see the file: load it here, it is small.
    for var in ds.variables.values():
        if not is_dask_collection(var.data):
            var.load()
    ds.encoding[LOCATION_KEY] = where
    ds.encoding["proximate_format"] = fmt
    return ds


def open_dataset(
    where: RegionPath | str, path: str | None = None, *, client: Any = None, **xarray_kwargs: Any
) -> xr.Dataset:
    """Open a NetCDF, Zarr, GRIB or GeoTIFF dataset on a worker of its region; return it lazy, reads pinned there.

    Args:
        where: A :class:`~proximate.datasets.RegionPath`, or the region's name with ``path``.
        path: The dataset's path under the region's root, when ``where`` is a region name.
        client: The Dask client to use; the default client (or, inside a task, a worker client) otherwise.
        **xarray_kwargs: Passed to ``xarray.open_dataset`` / ``open_zarr`` (``chunks={}`` unless given; GRIB
            through cfgrib, ``backend_kwargs={"filter_by_keys": ...}`` picking one hypercube of a mixed file;
            GeoTIFF through rioxarray, one variable per band).

    Returns:
        The lazy Dataset; ``proximate.datasets.location_of(ds)`` is ``where``.

    Examples:
        >>> with proximate.LocalRegionalCluster({"ecmwf": "/fsx/ecmwf"}) as cluster, cluster.client():
        ...     forecast = proximate.open_dataset("ecmwf", "forecast/air_temperature.nc", chunks={"realization": 1})
        ...     same = proximate.open_dataset(proximate.RegionPath("ecmwf", "forecast/air_temperature.nc"))
    """
    from proximate.client import client_context, require_region

    if not isinstance(where, RegionPath):
        if path is None:
            raise TypeError("open_dataset takes a RegionPath, or a region name and a path")
        where = RegionPath(where, path)  # validated before anything is sent
    elif path is not None:
        raise TypeError("open_dataset takes a RegionPath or (region, path), not both")
    kwargs = _submit_kwargs(xarray_kwargs)
    with client_context(client) as c:
        require_region(c, where.region)
        future = c.submit(open_local, where, pure=False, resources={pool_resource(where.region): 0}, **kwargs)
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
