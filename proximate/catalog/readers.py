"""The readers' libraries, imported by each extraction child before its first file's clock starts.

An extraction child (:func:`proximate.catalog.indexing.extract_batch`) is bounded in wall time per file. The
readers import their libraries lazily, so without this module the first file of each new child (the first of a
night, and the first after a hostile file's child was stopped) would also pay for netCDF4, h5py, cftime, Zarr and
PyArrow: 0.14 s cold against 5 ms warm for a small NetCDF on a quiet machine, and many times that under
load. Imported here, as the sandbox's ``preload``, that cost is bounded by the child's start limit instead of by a
file's.

Importing this module in any other process is harmless but pointless.
"""

from __future__ import annotations

import contextlib

from proximate.native import load_in_safe_order

# SQLite and PROJ before anything can load ecCodes (see proximate.native).
load_in_safe_order()

import proximate.catalog.indexing  # noqa: E402,F401 - the extraction's own modules

# Not GDAL (rasterio) and ecCodes (cfgrib): together ~310 MB of address space, which the child's memory limit
# counts, for formats most regions do not hold; xarray imports them (listing its backends) on the first GRIB or
# GeoTIFF file, inside that file's bounds.

# Each reader is optional (extras): a missing one fails only the files of its format, as before.
with contextlib.suppress(ImportError):
    import cftime  # noqa: F401
    import h5py  # noqa: F401
    import netCDF4  # noqa: F401
with contextlib.suppress(ImportError):
    import zarr  # noqa: F401
with contextlib.suppress(ImportError):
    import pyarrow.parquet  # noqa: F401
