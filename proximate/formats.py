"""What kind of dataset sits at a path (NetCDF file or Zarr store), and its size and modification time.

Shared by the reader (``proximate.io``) and the catalog's extractor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5", ".he5")
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")


def is_zarr_store(full: Path) -> bool:
    return full.is_dir() and any((full / m).exists() for m in ZARR_MARKERS)


def dataset_format(full: Path) -> Literal["netcdf", "zarr"]:
    """``"zarr"`` or ``"netcdf"`` from what is on disk; a clear error for anything else."""
    if full.is_dir():
        if is_zarr_store(full):
            return "zarr"
        raise ValueError(f"{full} is a directory but not a Zarr store")
    with open(full, "rb") as fh:
        magic = fh.read(8)
    if magic[:3] == b"CDF" or magic == b"\x89HDF\r\n\x1a\n":
        return "netcdf"
    raise ValueError(f"{full.name} is neither NetCDF (classic or HDF5-based) nor Zarr (starts with {magic[:8]!r})")


def stat_dataset(full: Path) -> tuple[int, int]:
    """(size in bytes, modification time in ns): a Zarr store's are the sum and the latest of its files."""
    if not full.is_dir():
        st = full.stat()
        return st.st_size, st.st_mtime_ns
    size, mtime = 0, full.stat().st_mtime_ns
    for dirpath, _dirs, files in os.walk(full):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return size, mtime
