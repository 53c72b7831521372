"""Dataset references as a scientist types them: ``region:path`` (e.g. ``ecmwf:forecast/t.nc``) or a catalog
record id. Parsed and validated before any work starts."""

from __future__ import annotations

from typing import Any

import xarray as xr

from proximate.regions import RegionPath

DatasetRef = str


def parse_reference(ref: DatasetRef) -> RegionPath | str:
    """``region:path`` becomes a RegionPath (validated); anything else is taken as a catalog id."""
    region, sep, path = ref.partition(":")
    if sep and "/" not in region and path:
        return RegionPath(region, path)
    if not ref.strip():
        raise ValueError("empty dataset reference")
    return ref


def open_reference(ref: DatasetRef, *, client: Any = None, catalog: Any = None, **xarray_kwargs: Any) -> xr.Dataset:
    """Open a referenced dataset in its region (lazy, reads pinned there)."""
    from proximate.io import open_dataset

    parsed = parse_reference(ref)
    if isinstance(parsed, RegionPath):
        return open_dataset(parsed.region, parsed.path, client=client, **xarray_kwargs)
    from proximate.catalog import open_from_catalog  # catalog ids

    return open_from_catalog(parsed, catalog=catalog, client=client, **xarray_kwargs)
