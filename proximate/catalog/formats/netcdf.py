"""NetCDF (classic, 64-bit offset, NetCDF-4/HDF5, with or without a user block) through netCDF4, every group."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from proximate.catalog.formats.base import FormatHandler, Header, Var, decode, qualified, read_limited, safe_attrs
from proximate.confine import check_netcdf_file


class NetCDFHandler(FormatHandler):
    name = "netcdf"

    def read_header(self, full: Path) -> tuple[Header, Callable[[], None]]:
        import netCDF4

        check_netcdf_file(full)  # before netCDF-C opens it: HDF5 follows external links at open
        ds = netCDF4.Dataset(str(full), mode="r")
        try:
            _check_classic_size(ds, full)
            header = Header(attrs={}, dims={})
            _read_group(ds, "", header)
        except Exception:
            ds.close()
            raise
        return header, ds.close


def _read_group(grp: Any, path: str, header: Header) -> None:
    """One group's attributes (the root's become the header's), dimensions and variables, then its subgroups."""
    where = f"group {path!r}" if path else "the file"
    attrs = safe_attrs(grp.ncattrs(), grp.getncattr, where, header.warnings)
    if not path:
        header.attrs = attrs
    grp.set_auto_maskandscale(False)  # raw reads are several times cheaper; decode applies the CF rules
    for name, d in grp.dimensions.items():
        header.dims[qualified(path, name)] = len(d)
    for name, var in grp.variables.items():
        header.variables[qualified(path, name)] = _variable(var, path, header)
    for sub_name, sub in grp.groups.items():
        _read_group(sub, qualified(path, sub_name), header)


def _variable(var: Any, group: str, header: Header) -> Var:
    try:
        chunking = var.chunking()
    except Exception:  # classic formats have no chunking
        chunking = None
    chunks = [int(c) for c in chunking] if isinstance(chunking, (list, tuple)) else None
    try:
        dtype = str(np.dtype(var.dtype))
    except TypeError:
        dtype = getattr(var.dtype, "__name__", str(var.dtype))
    try:
        kind = np.dtype(var.dtype).kind if var.dtype is not str else "U"
    except TypeError:  # compound, enum and vlen types have no numpy kind worth reading as a coordinate
        kind = "O"
    attrs = safe_attrs(var.ncattrs(), var.getncattr, f"variable {qualified(group, var.name)!r}", header.warnings)

    def read(var: Any = var, attrs: dict[str, Any] = attrs) -> np.ndarray:
        return decode(read_limited(var, _read_netcdf, chunks), attrs)

    def read_rows(rows: slice, var: Any = var, attrs: dict[str, Any] = attrs) -> np.ndarray:
        return decode(var[rows], attrs)

    # Dimensions keep their group path too, so a subgroup's "time" is not the root's "time".
    dims = tuple(_dim_name(var, d) for d in var.dimensions) if group else tuple(var.dimensions)
    return Var(
        attrs=attrs,
        dims=dims,
        shape=tuple(int(s) for s in var.shape),
        dtype=dtype,
        chunks=chunks,
        read=read,
        numeric=kind in "fiu",
        group=group,
        read_rows=read_rows if var.ndim else None,
    )


def _dim_name(var: Any, dim: str) -> str:
    """A dimension's catalog name: prefixed with the path of the group that defines it (the root's are plain)."""
    grp = var.group()
    while grp is not None:
        if dim in grp.dimensions:
            path = grp.path.strip("/")
            return qualified(path, dim)
        grp = grp.parent
    return dim


def _check_classic_size(ds: Any, full: Path) -> None:
    """A classic-format file cut short (a partial download) still opens and reads as fill values: refuse it
    when it is smaller than the data its header declares."""
    if not str(ds.data_model).startswith("NETCDF3"):
        return
    declared = 0
    for var in ds.variables.values():
        try:
            declared += int(np.prod(var.shape, dtype=np.int64)) * np.dtype(var.dtype).itemsize
        except TypeError:
            return
    actual = full.stat().st_size
    if actual < declared:
        raise ValueError(f"{full.name} is truncated: {actual} bytes, but its header declares {declared} bytes of data")


def _read_netcdf(var: Any) -> Any:
    """All of a netCDF4 variable. A whole primitive array goes through ``Variable._get`` (start, count,
    stride), which ``var[...]`` calls after parsing the index in Python: the same values, about 5x cheaper
    for the small coordinates read here (0.05 instead of 0.29 ms), which adds up over thousands of files."""
    shape = [int(n) for n in var.shape]
    get = getattr(var, "_get", None)
    if get is None or not shape or 0 in shape or var.dtype is str or getattr(var, "_isprimitive", False) is not True:
        return var[...]
    data = get([0] * len(shape), shape, [1] * len(shape))
    return data if isinstance(data, np.ndarray) and list(data.shape) == shape else var[...]
