"""Dataset metadata from file headers: what the catalog knows about one file or store, whatever its format.

``extract(path)`` reads headers and coordinate variables only, never data arrays, so a 10 GB file costs the
same as a 10 kB one. The format is told by content (:func:`proximate.formats.detect_format`) and read by its
handler (:mod:`proximate.catalog.formats`); what follows is the same for all of them. The record says
"unknown" (``None``) rather than guessing: no lat/lon coordinates and no CRS means no bbox, no decodable CF
time means no time span.

The box is :mod:`proximate.catalog.bbox`'s, the time span :mod:`proximate.catalog.timespan`'s (both re-exported
here, with their limits); this module turns a header into a record, caps its size, and makes the record of a
dataset that cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from proximate.catalog.bbox import CELLS_PER_BLOCK, MAX_TRACED_VALUES, compute_bbox
from proximate.catalog.coords import name_of
from proximate.catalog.formats import HANDLERS, Header
from proximate.catalog.formats.base import capped_attrs
from proximate.catalog.records import DatasetRecord, VariableInfo, now_iso, record_id
from proximate.catalog.timespan import cf_datetime_iso, compute_time_span
from proximate.formats import UnsupportedFormatError, dataset_format, fingerprint, stat_dataset

# The box's and time span's names are listed so that callers keep importing them from here (and linters see
# the imports above as re-exports, not unused).
__all__ = [
    "CELLS_PER_BLOCK",
    "MAX_ATTR_CHARS",
    "MAX_RECORD_BYTES",
    "MAX_TRACED_VALUES",
    "cf_datetime_iso",
    "compute_bbox",
    "compute_time_span",
    "error_record",
    "extract",
    "extract_in_region",
]

#: Longer attribute strings are cut (a ``history`` can hold thousands of lines of NCO commands).
MAX_ATTR_CHARS = 1000
#: A record (as JSON) larger than this loses its attributes, then variables, with a warning saying so.
MAX_RECORD_BYTES = 1_000_000
#: Attributes through which one variable names others as its coordinates, bounds, grid or mesh.
_REFERENCE_ATTRS = (
    "coordinates",
    "bounds",
    "climatology",
    "grid_mapping",
    "mesh",
    "node_coordinates",
    "edge_coordinates",
    "face_coordinates",
    "face_node_connectivity",
    "edge_node_connectivity",
    "boundary_node_connectivity",
    "face_edge_connectivity",
    "face_face_connectivity",
    "ancillary_variables",
)


def _py(value: Any) -> Any:
    """Attribute value into JSON-safe Python (numpy scalars and arrays, bytes)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if len(value) > MAX_ATTR_CHARS:
            return value[:MAX_ATTR_CHARS] + f"... [{len(value) - MAX_ATTR_CHARS} more characters]"
        return value
    if isinstance(value, np.ndarray):
        return [_py(v) for v in value.ravel()[:100].tolist()]
    if isinstance(value, (list, tuple)):
        return [_py(v) for v in list(value)[:100]]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return str(value)


def _text(attrs: dict[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    value = _py(value)
    return value if isinstance(value, str) else str(value)


# -- what the header says --------------------------------------------------------------------------------------


def _referenced(header: Header) -> set[str]:
    """Qualified names of the variables other variables name (coordinates, bounds, grid mappings, meshes)."""
    names: set[str] = set()
    for var in header.variables.values():
        for key in _REFERENCE_ATTRS:
            value = var.attrs.get(key)
            if isinstance(value, str):
                for tok in value.split():
                    target = header.lookup(var, tok.rstrip(":"))
                    names.add(name_of(header, target) if target is not None else tok.rstrip(":"))
    return names


def _variables(header: Header) -> list[VariableInfo]:
    referenced = _referenced(header)
    out = []
    for name, var in header.variables.items():
        is_coord = (var.dims == (name,)) or name in referenced or "cf_role" in var.attrs or not var.dims
        out.append(
            VariableInfo(
                name=name,
                standard_name=_text(var.attrs, "standard_name"),
                long_name=_text(var.attrs, "long_name"),
                units=_text(var.attrs, "units"),
                cell_methods=_text(var.attrs, "cell_methods"),
                dims=list(var.dims),
                shape=list(var.shape),
                dtype=var.dtype,
                chunks=var.chunks,
                coordinate=bool(is_coord),
            )
        )
    return out


def extract(
    path: str | os.PathLike[str], *, region: str | None = None, rel_path: str | None = None, etag: str | None = None
) -> DatasetRecord:
    """Read one dataset's header into a record (headers only: no data is read).

    Args:
        path: The file (or Zarr store) to read.
        region: The region holding it, recorded in the record.
        rel_path: Its path under the region's root, recorded (``path`` otherwise).
        etag: The ETag the sync recorded for it, kept as its fingerprint.

    Returns:
        The record: variables, units, dims, time span, bounding box, size.

    Raises:
        UnsupportedFormatError: A format proximate does not read; other errors for an unreadable file (see
            :func:`extract_in_region` for the variant that turns either into a record saying why).

    Examples:
        >>> record = extract("/fsx/ecmwf/forecast/t2m.nc", region="ecmwf", rel_path="forecast/t2m.nc")
        >>> record.bbox, record.time_start, [v.name for v in record.variables]
    """
    full = Path(path)
    shown = rel_path if rel_path is not None else str(path)
    fmt = dataset_format(full)
    size, mtime_ns = stat_dataset(full)
    header, close = HANDLERS[fmt].read_header(full)
    try:
        warnings: list[str] = list(header.warnings)
        attrs = {str(k): _py(v) for k, v in capped_attrs(header.attrs, "the file", warnings).items()}
        bbox = compute_bbox(header, warnings)
        start, end, cal = compute_time_span(header, warnings)
        variables = _variables(header)
    finally:
        close()
    now = now_iso()
    record = DatasetRecord(
        id=record_id(region, shown),
        region=region,
        path=shown,
        format=fmt,
        size=size,
        mtime_ns=mtime_ns,
        etag=etag,
        warnings=warnings,
        title=_text(attrs, "title"),
        institution=_text(attrs, "institution"),
        source=_text(attrs, "source"),
        conventions=_text(attrs, "Conventions") or _text(attrs, "conventions"),
        history=_text(attrs, "history"),
        attrs=attrs,
        dimensions=dict(header.dims),
        variables=variables,
        time_start=start,
        time_end=end,
        calendar=cal,
        bbox=bbox,
        indexed_at=now,
        last_good_at=now,
    )
    return _within_record_size(record)


def _within_record_size(record: DatasetRecord) -> DatasetRecord:
    """``record`` cut to :data:`MAX_RECORD_BYTES`: its attributes go first, then variables beyond what fits;
    a warning says what went. A record that still does not fit (thousands of dimensions) is refused."""
    size = len(record.model_dump_json())
    if size <= MAX_RECORD_BYTES:
        return record
    note = f"record of {size} bytes is over {MAX_RECORD_BYTES}: "
    record = record.model_copy(update={"attrs": {}, "history": None})
    record.warnings.append(note + "global attributes left out")
    if len(record.model_dump_json()) > MAX_RECORD_BYTES:
        per_var = max(1, len(record.model_dump_json()) // max(len(record.variables), 1))
        keep = max(0, MAX_RECORD_BYTES // 2 // per_var)
        record.warnings.append(f"{note}{len(record.variables)} variables, the first {keep} kept")
        record = record.model_copy(update={"variables": record.variables[:keep]})
    if len(record.model_dump_json()) > MAX_RECORD_BYTES:
        raise ValueError(f"{record.path}: its record would be larger than {MAX_RECORD_BYTES} bytes")
    return record


def error_record(
    region: str | None,
    path: str,
    message: str,
    *,
    full: Path | None = None,
    etag: str | None = None,
    status: str = "error",
    fmt: str | None = None,
) -> DatasetRecord:
    """The record of a dataset that could not be read: where it is, why (``status`` ``"unsupported"`` for a
    format proximate does not read, ``"error"`` for a truncated or corrupt file), its size and time."""
    size = mtime_ns = None
    found = fingerprint(full) if full is not None else None
    if found is not None:
        size, mtime_ns = found
    return DatasetRecord(
        id=record_id(region, path),
        region=region,
        path=path,
        format=fmt,
        size=size,
        mtime_ns=mtime_ns,
        etag=etag,
        status=status,  # type: ignore[arg-type]
        error=message,
        indexed_at=now_iso(),
    )


def extract_in_region(region: str, path: str, etag: str | None = None) -> DatasetRecord:
    """Worker-side entry: resolve (region, path) here, on a worker of that region, and extract.

    An unsupported, corrupt, unreadable or refused dataset (a symlink leaving the region, a loop, a FIFO, an
    HDF5 reference out of the file) gives a record saying so; only a misrouted call (wrong region) or a
    vanished file raises.

    Args:
        region: The region this worker belongs to.
        path: The dataset's path under the region's root.
        etag: The ETag the sync saw, kept in the record.

    Returns:
        The dataset's record (``status`` ``"ok"``, ``"unsupported"`` or ``"error"``).

    Raises:
        FileNotFoundError: The call ran outside ``region``, or nothing is at ``path`` any more.

    Examples:
        >>> extract_in_region("eu-west-2", "daily/tas_2025.nc").status  # doctest: +SKIP
        'ok'
    """
    from proximate.regions import RegionPathError, local_root, resolve

    entry = local_root(region) / path  # a misrouted call raises here
    try:
        full = resolve(region, path)
    except (OSError, RuntimeError, RegionPathError) as exc:
        if isinstance(exc, FileNotFoundError) and not os.path.lexists(entry):
            raise  # vanished since it was listed: the batch reports it as such
        return error_record(region, path, f"refused {region}:{path}: {exc}", full=entry, etag=etag)
    try:
        return extract(full, region=region, rel_path=path, etag=etag)
    except UnsupportedFormatError as exc:
        return error_record(region, path, f"{region}:{path}: {exc}", full=full, etag=etag, status="unsupported",
                            fmt=None if exc.kind in ("unknown", "empty") else exc.kind)  # fmt: skip
    except Exception as exc:
        if isinstance(exc, FileNotFoundError) and not os.path.lexists(entry):
            raise  # vanished since it was listed: the batch reports it as such
        return error_record(
            region, path, f"cannot read {region}:{path}: {type(exc).__name__}: {exc}", full=full, etag=etag
        )
