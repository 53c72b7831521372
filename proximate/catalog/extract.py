"""Dataset metadata from file headers: what the catalog knows about one file or store, whatever its format.

``extract(path)`` reads headers and coordinate variables only, never data arrays, so a 10 GB file costs the
same as a 10 kB one. The format is told by content (:func:`proximate.formats.detect_format`) and read by its
handler (:mod:`proximate.catalog.formats`); what follows is the same for all of them. The record says
"unknown" (``None``) rather than guessing: no lat/lon coordinates and no CRS means no bbox, no decodable CF
time means no time span.
"""

from __future__ import annotations

import calendar as _calendar
import datetime as _dt
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from proximate.catalog.crs import X_NAMES, Y_NAMES, axis_extent, axis_scale, bounds_bracket, crs_from_attrs
from proximate.catalog.crs import projected_bbox as _projected_box
from proximate.catalog.formats import HANDLERS, Header, Var
from proximate.catalog.formats.base import MAX_CHUNKS_READ, capped_attrs, n_chunks
from proximate.catalog.geo import arcs_lon_extent, cell_arcs, lon_extent, merge_arcs, union_bboxes
from proximate.catalog.records import DatasetRecord, VariableInfo, now_iso, record_id
from proximate.formats import UnsupportedFormatError, dataset_format, fingerprint, stat_dataset

#: Longer attribute strings are cut (a ``history`` can hold thousands of lines of NCO commands).
MAX_ATTR_CHARS = 1000

_LAT_UNITS = {"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"}
_LON_UNITS = {"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"}
_RADIANS = {"rad", "radian", "radians"}
_TIME_UNITS = re.compile(r"^\s*[a-zA-Z]+\s+since\s+\S", re.IGNORECASE)
#: Seconds per unit of a ``forecast_period`` (UDUNITS spellings).
_PERIOD_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}
#: Cells whose vertices are read at once: bounds a mesh's or grid's memory while its cells are traced.
CELLS_PER_BLOCK = 1_000_000
#: Values (vertices, connectivity) beyond which cells are not traced: the box is then the points'.
MAX_TRACED_VALUES = 64_000_000
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
                    names.add(_name_of(header, target) if target is not None else tok.rstrip(":"))
    return names


def _name_of(header: Header, var: Var) -> str:
    return next(k for k, v in header.variables.items() if v is var)


def _attr(var: Var, key: str) -> str:
    return str(var.attrs.get(key, "")).strip().lower()


def _is_lat(var: Var) -> bool:
    return var.numeric and (_attr(var, "standard_name") == "latitude" or _attr(var, "units") in _LAT_UNITS)


def _is_lon(var: Var) -> bool:
    return var.numeric and (_attr(var, "standard_name") == "longitude" or _attr(var, "units") in _LON_UNITS)


def _degrees(values: np.ndarray, var: Var) -> np.ndarray:
    """Coordinate values in degrees: CF allows radians for latitude and longitude (units say which)."""
    return np.degrees(values) if _attr(var, "units") in _RADIANS else values


def _with_bounds(header: Header, var: Var, warnings: list[str], *, period: float | None = None) -> list[np.ndarray]:
    """A coordinate's values and those of its bounds, when they are real bounds (bracketing every point)."""
    values = _degrees(var.read(), var)
    out = [values]
    if values.size != _size(var):  # sampled (see read_limited): its bounds could not be matched to it
        warnings.append(f"coordinate of {_size(var)} values: its extent is that of a sample of {values.size}")
        return out
    for key in ("bounds", "climatology"):
        bname = var.attrs.get(key)
        bvar = header.lookup(var, bname) if isinstance(bname, str) else None
        if bvar is None or not bvar.numeric:
            continue
        bounds = _degrees(bvar.read(), var)
        if bounds_bracket(values, bounds, period=period):
            out.append(bounds)
        else:
            warnings.append(f"{key} {bname!r} do not bracket their coordinate's values: ignored")
    return out


def _geographic_bbox(header: Header, warnings: list[str]) -> list[float] | None:
    """The box of every latitude/longitude coordinate (1-D axes, 2-D auxiliary fields on rotated or projected
    grids, UGRID node/face/edge coordinates) and their bounds. Scalar ones are left out: a GOES file's
    sub-satellite point or a model's reference location is a point of the file, not its footprint.

    Where the file says what its cells are (a UGRID mesh's faces, cell bounds with three or more vertices) the
    box is that of the cells (:func:`_cell_boxes`): points alone cannot tell a global cubed-sphere or tripolar
    grid, whose longitudes are unevenly spread, from one with a gap, and miss the cells across 180 and the poles.
    """
    cell_boxes, covered = _cell_boxes(header, warnings)
    gridded = [v for v in header.variables.values() if v.dims and id(v) not in covered]
    lats = [a for v in gridded if _is_lat(v) for a in _with_bounds(header, v, warnings)]
    lons = [a for v in gridded if _is_lon(v) for a in _with_bounds(header, v, warnings, period=360.0)]
    if not lats or not lons:
        return union_bboxes(cell_boxes) if cell_boxes else None
    lat = np.concatenate([a.ravel() for a in lats])
    lat = lat[np.isfinite(lat) & (np.abs(lat) <= 90.0)]
    lon = np.concatenate([a.ravel() for a in lons])
    extent = lon_extent(lon)
    if lat.size == 0 or extent is None:
        if cell_boxes:
            return union_bboxes(cell_boxes)
        warnings.append("latitude/longitude coordinates hold no valid values")
        return None
    return union_bboxes([*cell_boxes, [extent[0], float(lat.min()), extent[1], float(lat.max())]])


def _cell_boxes(header: Header, warnings: list[str]) -> tuple[list[list[float]], set[int]]:
    """Boxes of the cells the file describes, and the ``id``s of the coordinate variables they account for.

    Cells are UGRID 2-D meshes (``face_node_connectivity`` over ``node_coordinates``; every lat/lon variable on
    the mesh's dimensions is then covered) and lat/lon pairs with CF cell bounds of three or more vertices
    (curvilinear grids such as tripolar ocean grids, unstructured grids without a mesh variable). A mesh or a
    pair whose cells cannot be read (bounds that do not bracket their points) is left to the points.
    """
    boxes: list[list[float]] = []
    covered: set[int] = set()
    for mesh_name, mesh in header.variables.items():
        if _attr(mesh, "cf_role") != "mesh_topology":
            continue
        found = _mesh_box(header, mesh_name, mesh, warnings)
        if found is not None:
            box, dims = found
            boxes.append(box)
            covered |= {id(v) for v in header.variables.values() if v.dims and set(v.dims) <= dims}
    for lon in header.variables.values():
        if id(lon) in covered or not _is_lon(lon) or not lon.dims:
            continue
        pair = _bounded_pair(header, lon)
        if pair is None:
            continue
        lat, lon_b, lat_b = pair
        box = _bounds_box(header, lon, lat, lon_b, lat_b, warnings)
        if box is not None:
            boxes.append(box)
            covered |= {id(lon), id(lat)}
    return boxes, covered


def _arcs_box(parts: list[tuple[np.ndarray, float, float]]) -> list[float] | None:
    """One box from the (arcs, south, north) of each block of cells."""
    if not parts:
        return None
    arcs = np.concatenate([p[0] for p in parts])
    west, east = arcs_lon_extent(merge_arcs(arcs[:, 0], arcs[:, 1] - arcs[:, 0]))
    return [west, min(p[1] for p in parts), east, max(p[2] for p in parts)]


def _mesh_box(header: Header, name: str, mesh: Var, warnings: list[str]) -> tuple[list[float], set[str]] | None:
    """A UGRID mesh's box from its faces, and the mesh's dimensions (nodes, faces, edges, boundaries)."""
    tokens = str(mesh.attrs.get("node_coordinates", "")).split()
    nodes = [header.lookup(mesh, t) for t in tokens]
    node_lon = next((v for v in nodes if v is not None and _is_lon(v)), None)
    node_lat = next((v for v in nodes if v is not None and _is_lat(v)), None)
    conn_name = mesh.attrs.get("face_node_connectivity")
    conn = header.lookup(mesh, conn_name) if isinstance(conn_name, str) else None
    if node_lon is None or node_lat is None or conn is None or not conn.numeric or len(conn.dims) != 2:
        return None
    if _too_big_to_trace(node_lon, node_lat, conn):
        warnings.append(f"mesh {name!r} is too large to trace its faces: its box is that of its points")
        return None
    lon, lat = _degrees(node_lon.read(), node_lon), _degrees(node_lat.read(), node_lat)
    if lon.shape != lat.shape or lon.ndim != 1:
        return None
    face_dim = str(mesh.attrs.get("face_dimension", conn.dims[0]))
    transposed = conn.dims[0] != face_dim
    start_index = int(np.asarray(conn.attrs.get("start_index", 0)).ravel()[0])
    n_faces = conn.shape[1] if transposed else conn.shape[0]
    rows = CELLS_PER_BLOCK
    parts = []
    for first in range(0, n_faces, rows):
        block = conn.read() if transposed else conn.read_block(slice(first, first + rows))
        if block is None:
            warnings.append(f"faces of mesh {name!r} cannot be read whole: its box is that of its points")
            return None
        block = block.T if transposed else block
        index = block - start_index
        valid = np.isfinite(index) & (index >= 0) & (index < lon.size)
        safe = np.where(valid, index, 0).astype(np.int64)
        part = cell_arcs(np.where(valid, lon[safe], np.nan), np.where(valid, lat[safe], np.nan))
        if part is not None:
            parts.append(part)
        if transposed:
            break
    box = _arcs_box(parts)
    if box is None:
        return None
    dims = set(node_lon.dims) | {face_dim}
    for key in ("edge_node_connectivity", "boundary_node_connectivity", "face_edge_connectivity",
                "face_face_connectivity"):  # fmt: skip
        other = header.lookup(mesh, str(mesh.attrs.get(key, "")))
        if other is not None and other.dims:
            dims.add(str(mesh.attrs.get(key.split("_")[0] + "_dimension", other.dims[0])))
    return box, dims


def _bounded_pair(header: Header, lon: Var) -> tuple[Var, Var, Var] | None:
    """(lat, lon bounds, lat bounds) of a longitude whose CF bounds describe cells with 3 or more vertices."""
    lon_b = header.lookup(lon, str(lon.attrs.get("bounds", "")))
    if lon_b is None or not lon_b.numeric or lon_b.shape[:-1] != lon.shape or lon_b.shape[-1] < 3:
        return None
    for lat in header.variables.values():
        if _is_lat(lat) and lat.dims == lon.dims:
            lat_b = header.lookup(lat, str(lat.attrs.get("bounds", "")))
            if lat_b is not None and lat_b.numeric and lat_b.shape == lon_b.shape:
                return lat, lon_b, lat_b
    return None


def _bounds_box(header: Header, lon: Var, lat: Var, lon_b: Var, lat_b: Var, warnings: list[str]) -> list[float] | None:
    """The box of the cells that a lat/lon pair's bounds outline, read a block of rows at a time."""
    if _too_big_to_trace(lon, lat, lon_b, lat_b):
        warnings.append(f"cells of {_name_of(header, lon)!r} are too many to trace: its box is that of its points")
        return None
    per_row = int(np.prod(lon.shape[1:], dtype=np.int64))
    rows = max(1, CELLS_PER_BLOCK // max(per_row, 1))
    parts = []
    for first in range(0, lon.shape[0], rows):
        block = slice(first, first + rows)
        values = [v.read_block(block) for v in (lon, lat, lon_b, lat_b)]
        if any(v is None for v in values):
            return None
        lo, la, lo_b, la_b = (_degrees(v, var) for v, var in zip(values, (lon, lat, lon, lat), strict=True))
        if not (bounds_bracket(lo, lo_b, period=360.0) and bounds_bracket(la, la_b)):
            name = _name_of(header, lon)
            warnings.append(f"cell bounds of {name!r} do not bracket their points: its box is that of its points")
            return None
        nv = lo_b.shape[-1]
        part = cell_arcs(lo_b.reshape(-1, nv), la_b.reshape(-1, nv))
        if part is not None:
            parts.append(part)
    return _arcs_box(parts)


def _size(var: Var) -> int:
    return int(np.prod(var.shape, dtype=np.int64))


def _too_big_to_trace(*variables: Var) -> bool:
    """Whether tracing cells would read more than :data:`MAX_TRACED_VALUES` values or too many chunks: a header
    can declare any size, so the work must be bounded by something other than the file's word."""
    return any(_size(v) > MAX_TRACED_VALUES or n_chunks(v.shape, v.chunks) > MAX_CHUNKS_READ for v in variables)


def _grid_mapping_of(header: Header, var: Var) -> Var | None:
    """The grid-mapping variable ``var`` names (plain or CF 1.7's ``"crs: x y"`` form)."""
    value = var.attrs.get("grid_mapping")
    if not isinstance(value, str) or not value.split():
        return None
    return header.lookup(var, value.split()[0].rstrip(":"))


def _xy_axes(header: Header, var: Var) -> tuple[Var, Var] | None:
    """The 1-D x and y coordinate variables of ``var``'s grid: by standard name or axis, else its last two
    dimensions' coordinates (CF's T, Z, Y, X order, which GDAL and rioxarray follow too)."""
    axes = [header.variables.get(d) for d in var.dims]
    axes = [a for a in axes if a is not None and len(a.dims) == 1 and a.numeric]
    x = next((a for a in axes if _attr(a, "standard_name") in X_NAMES or _attr(a, "axis") == "x"), None)
    y = next((a for a in axes if _attr(a, "standard_name") in Y_NAMES or _attr(a, "axis") == "y"), None)
    if x is None or y is None:
        if len(var.dims) < 2:
            return None
        y, x = (header.variables.get(d) for d in var.dims[-2:])
        if x is None or y is None or len(x.dims) != 1 or len(y.dims) != 1 or not (x.numeric and y.numeric):
            return None
    return x, y


def _file_crs(header: Header) -> Any | None:
    """A CRS the file states without a ``grid_mapping`` link: global WKT/``crs`` attributes, or a lone
    ``crs``/``spatial_ref`` variable (some writers never link them)."""
    crs = crs_from_attrs(header.attrs)
    if crs is not None:
        return crs
    for name in ("crs", "spatial_ref", "transverse_mercator", "lambert_azimuthal_equal_area"):
        var = header.variables.get(name)
        if var is not None:
            crs = crs_from_attrs(var.attrs)
            if crs is not None:
                return crs
    return None


def _crs_bbox(header: Header, warnings: list[str]) -> list[float] | None:
    """The box of every grid that has a CRS and x/y axes: its outline transformed to lon/lat."""
    boxes: list[list[float]] = []
    seen: set[tuple[int, int, int]] = set()
    refused: set[int] = set()
    fallback: Any = None
    for var in header.variables.values():
        if len(var.dims) < 2:
            continue
        mapping = _grid_mapping_of(header, var)
        crs = crs_from_attrs(mapping.attrs) if mapping is not None else None
        if mapping is not None and crs is None and id(mapping) not in refused:
            refused.add(id(mapping))
            name = _name_of(header, var)
            warnings.append(f"grid mapping of {name!r} is not a CRS pyproj understands: no bbox from it")
        if crs is None:
            fallback = _file_crs(header) if fallback is None else fallback
            crs = fallback
        axes = _xy_axes(header, var) if crs is not None else None
        if axes is None:
            continue
        x, y = axes
        key = (id(mapping), id(x), id(y))
        if key in seen:
            continue
        seen.add(key)
        extents = []
        for axis in (x, y):
            bname = axis.attrs.get("bounds")
            bvar = header.lookup(axis, bname) if isinstance(bname, str) else None
            extent = axis_extent(axis.read(), bvar.read() if bvar is not None and bvar.numeric else None)
            scale = axis_scale(axis.attrs.get("units"), crs)
            extents.append(None if extent is None else (extent[0] * scale, extent[1] * scale))
        if extents[0] is None or extents[1] is None:
            continue
        try:
            box = _projected_box(crs, extents[0], extents[1])
        except Exception as exc:  # PROJ refusing a CRS is a property of the file, not a failure of the run
            warnings.append(f"the grid of {_name_of(header, var)!r} does not transform to lon/lat: {exc}")
            continue
        if box is not None:
            boxes.append(box)
    return union_bboxes(boxes) if boxes else None


def compute_bbox(header: Header, warnings: list[str]) -> list[float] | None:
    """[west, south, east, north]: from latitude/longitude coordinates where the file has them, else from the
    CRS of its projected grids; ``None`` with neither."""
    notes: list[str] = []
    box = _geographic_bbox(header, notes)
    if box is None:
        box = _crs_bbox(header, notes)
        if box is None and any("no valid values" in n for n in notes):
            notes.append("no bbox")
    warnings += notes
    return box


def _is_time(name: str, var: Var) -> bool:
    units = var.attrs.get("units")
    cf_units = isinstance(units, str) and bool(_TIME_UNITS.match(units))
    return var.numeric and (
        _attr(var, "standard_name") == "time" or _attr(var, "axis") == "t" or (cf_units and var.dims == (name,))
    )


def cf_datetime_iso(value: Any) -> str:
    """A decoded CF date (cftime, any calendar) as a sortable ISO string that every backend accepts as a date:
    day clamped into the real month (360_day's 30 February is the 28th/29th), year clamped to 1..9999."""
    year = min(max(int(value.year), 1), 9999)
    month = int(value.month)
    day = min(int(value.day), _calendar.monthrange(year, month)[1])
    return f"{year:04d}-{month:02d}-{day:02d}T{int(value.hour):02d}:{int(value.minute):02d}:{int(value.second):02d}"


def _decoded_range(name: str, var: Var, values: np.ndarray, warnings: list[str]) -> tuple[Any, Any, str] | None:
    """(first, last, calendar) of a CF time variable's values as cftime dates; ``None`` (with a warning) if
    its units or calendar do not decode."""
    import cftime

    units = var.attrs.get("units")
    if not isinstance(units, str) or not _TIME_UNITS.match(units):
        warnings.append(f"time variable {name!r} has units {units!r}, not '<unit> since <date>': no time span")
        return None
    cal = _attr(var, "calendar") or "standard"
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    try:
        first, last = cftime.num2date([values.min(), values.max()], units, calendar=cal, only_use_cftime_datetimes=True)
    except Exception as exc:
        warnings.append(f"time variable {name!r} does not decode ({units!r}, calendar {cal!r}): {exc}")
        return None
    return first, last, cal


def _forecast_range(header: Header, warnings: list[str]) -> tuple[Any, Any, str] | None:
    """Valid times of a forecast file that has no time coordinate: reference times plus forecast periods."""
    by_name = {_attr(v, "standard_name"): (n, v) for n, v in header.variables.items() if v.numeric}
    if "forecast_reference_time" not in by_name or "forecast_period" not in by_name:
        return None
    ref_name, ref = by_name["forecast_reference_time"]
    period_name, period = by_name["forecast_period"]
    refs = _decoded_range(ref_name, ref, ref.read().ravel(), warnings)
    seconds = _PERIOD_SECONDS.get(_attr(period, "units"))
    if refs is None or seconds is None:
        if seconds is None:
            warnings.append(f"forecast_period {period_name!r} has units {period.attrs.get('units')!r}: no time span")
        return None
    steps = period.read().ravel()
    steps = steps[np.isfinite(steps)]
    if steps.size == 0:
        return None
    first, last, cal = refs
    lead = _dt.timedelta(seconds=float(steps.min()) * seconds)
    tail = _dt.timedelta(seconds=float(steps.max()) * seconds)
    return first + lead, last + tail, cal


def compute_time_span(header: Header, warnings: list[str]) -> tuple[str | None, str | None, str | None]:
    """(start, end, calendar) over every time coordinate and its bounds/climatology bounds, or, with none, the
    forecast reference times plus forecast periods; Nones without."""
    lo: str | None = None
    hi: str | None = None
    cal_seen: str | None = None
    ranges = []
    for name, var in header.variables.items():
        if _is_time(name, var):
            values = np.concatenate([a.ravel() for a in _with_bounds(header, var, warnings)])
            ranges.append(_decoded_range(name, var, values, warnings))
    if not any(ranges):
        ranges = [_forecast_range(header, warnings)]
    for found in ranges:
        if found is None:
            continue
        start, end = cf_datetime_iso(found[0]), cf_datetime_iso(found[1])
        lo = start if lo is None or start < lo else lo
        hi = end if hi is None or end > hi else hi
        cal_seen = cal_seen or found[2]
    return lo, hi, cal_seen


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
    """Read one dataset's header into a record. Raises on an unreadable file (:class:`UnsupportedFormatError`
    for a format proximate does not read; see :func:`extract_in_region` for the variant that turns either into
    a record saying why)."""
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
