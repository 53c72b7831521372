"""The readers' libraries, imported by each extraction child before its first file's clock starts.

An extraction child (:func:`proximate.catalog.indexing.extract_batch`) is bounded in wall time per file. The
readers import their libraries lazily, so without this module the first file of each new child (the first of a
night, and the first after a hostile file's child was stopped) would also pay for netCDF4, h5py, cftime, pyproj,
Zarr, rasterio and cfgrib and for xarray's discovery of its backends: about 0.15 s on a quiet machine, more than a
small file takes, and many times that under load. Imported here, as the sandbox's ``preload``, that cost is bounded
by the child's start limit instead of by a file's.

Importing this module in any other process is harmless but pointless.
"""

from __future__ import annotations

import contextlib

from proximate.native import load_in_safe_order

# SQLite and PROJ before anything can load ecCodes (see proximate.native).
load_in_safe_order()

import proximate.catalog.indexing  # noqa: E402,F401 - the extraction's own modules

# Each reader is optional (extras): a missing one fails only the files of its format, as before.
with contextlib.suppress(ImportError):
    import cftime  # noqa: F401
    import h5py  # noqa: F401
    import netCDF4  # noqa: F401
with contextlib.suppress(ImportError):
    import xarray.backends.plugins as _plugins

    _plugins.list_engines()  # the entry-point scan xarray does on its first open_dataset
with contextlib.suppress(ImportError):
    import zarr  # noqa: F401
with contextlib.suppress(ImportError):
    import pyarrow.parquet  # noqa: F401
with contextlib.suppress(ImportError):
    import rioxarray  # noqa: F401
from proximate.catalog.formats.grib import import_cfgrib  # noqa: E402
from proximate.formats import UnsupportedFormatError  # noqa: E402

with contextlib.suppress(UnsupportedFormatError):  # the grib extra is not installed
    import_cfgrib()
