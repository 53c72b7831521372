"""Zarr stores (v2 and v3, consolidated or not) through zarr-python, every group; broken metadata named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from proximate.catalog.formats.base import FormatHandler, Header, Var, capped_attrs, decode, qualified, read_limited
from proximate.confine import ConfinedLocalStore, ExternalReferenceError
from proximate.formats import ZARR_MARKERS


class ZarrHandler(FormatHandler):
    name = "zarr"

    def read_header(self, full: Path) -> tuple[Header, Callable[[], None]]:
        import zarr

        try:
            group = zarr.open_group(ConfinedLocalStore(full, read_only=True), mode="r")
            header = Header(attrs={}, dims={})
            header.attrs = capped_attrs(dict(group.attrs), "the store", header.warnings)
            _read_group(group, "", header)
        except ExternalReferenceError:
            raise  # a key leaving the store: said as such, and nothing more of the store is read
        except Exception as exc:
            broken = broken_metadata(full)
            if broken:
                raise ValueError(f"{full.name}: broken Zarr metadata {broken}") from exc
            raise
        return header, lambda: None


def broken_metadata(full: Path) -> str | None:
    """The first metadata file of the store (relative path and the JSON error) that is not valid JSON."""
    for path in sorted(full.rglob("*")):
        if path.name in ZARR_MARKERS and not path.is_symlink() and path.is_file():
            try:
                json.loads(path.read_bytes())
            except (ValueError, UnicodeDecodeError) as exc:
                return f"{path.relative_to(full).as_posix()}: {exc}"
    return None


def _read_group(group: Any, path: str, header: Header) -> None:
    for name, arr in group.arrays():
        _add_array(arr, name, path, header)
    for name, sub in group.groups():
        _read_group(sub, qualified(path, name), header)


def _add_array(arr: Any, name: str, group: str, header: Header) -> None:
    attrs = dict(arr.attrs)
    dims = getattr(arr.metadata, "dimension_names", None) or attrs.pop("_ARRAY_DIMENSIONS", None)
    attrs.pop("_ARRAY_DIMENSIONS", None)
    attrs = capped_attrs(attrs, f"array {qualified(group, name)!r}", header.warnings)
    dims = tuple(str(d) for d in dims) if dims else tuple(f"{name}_dim_{i}" for i in range(arr.ndim))
    # Zarr has no shared dimensions: a group's dimension names are its own, so they carry its path.
    dims = tuple(qualified(group, d) for d in dims)
    for d, n in zip(dims, arr.shape, strict=True):
        header.dims.setdefault(d, int(n))
    dtype = np.dtype(arr.dtype) if not hasattr(arr.dtype, "to_native_dtype") else arr.dtype.to_native_dtype()

    def read(arr: Any = arr, attrs: dict[str, Any] = attrs) -> np.ndarray:
        return decode(read_limited(arr, chunks=arr.chunks), attrs)

    def read_rows(rows: slice, arr: Any = arr, attrs: dict[str, Any] = attrs) -> np.ndarray:
        return decode(arr[rows], attrs)

    header.variables[qualified(group, name)] = Var(
        attrs=attrs,
        dims=dims,
        shape=tuple(int(s) for s in arr.shape),
        dtype=str(np.dtype(dtype)),
        chunks=[int(c) for c in arr.chunks],
        read=read,
        numeric=np.dtype(dtype).kind in "fiu",
        group=group,
        read_rows=read_rows if arr.ndim else None,
    )
