"""Headers of formats read through an xarray backend (cfgrib, rioxarray): a lazily opened Dataset as a Header.

The backends decode nothing here (``decode_times``, ``mask_and_scale`` off), so coordinates arrive raw and CF
times as numbers with units, exactly as the NetCDF and Zarr handlers give them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from proximate.catalog.formats.base import Header, Var, decode, qualified

if TYPE_CHECKING:
    import xarray as xr

#: Encoding keys a backend keeps out of ``attrs`` that the extractor reads as attributes (the CRS link).
_ENCODED_ATTRS = ("grid_mapping", "coordinates")


def add_dataset(ds: xr.Dataset, group: str, header: Header) -> None:
    """Every variable of ``ds`` into ``header`` under ``group`` (its dimensions too)."""
    for name, size in ds.sizes.items():
        header.dims[qualified(group, str(name))] = int(size)
    for name, var in ds.variables.items():
        attrs = dict(var.attrs)
        for key in _ENCODED_ATTRS:
            if key in var.encoding and key not in attrs:
                attrs[key] = var.encoding[key]
        dtype = np.dtype(var.encoding.get("dtype", var.dtype))
        chunks = var.encoding.get("preferred_chunks")
        header.variables[qualified(group, str(name))] = Var(
            attrs=attrs,
            dims=tuple(qualified(group, str(d)) for d in var.dims),
            shape=tuple(int(s) for s in var.shape),
            dtype=str(dtype),
            chunks=[int(chunks[d]) for d in var.dims] if isinstance(chunks, dict) and set(var.dims) <= set(chunks)
            else None,
            read=_reader(var, attrs),
            numeric=dtype.kind in "fiu",
            group=group,
        )  # fmt: skip


def _reader(var: xr.Variable, attrs: dict[str, Any]):
    def read() -> np.ndarray:
        return decode(np.asarray(var.values), attrs)

    return read
