"""The bounding box of a dataset from its header: latitude/longitude coordinates and the cells they outline, else
the CRS of its projected grids.

The work is bounded whatever the header declares: cells are traced :data:`CELLS_PER_BLOCK` at a time and not at
all beyond :data:`MAX_TRACED_VALUES` values or too many chunks (the box is then that of the points, with a warning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from proximate.catalog.coords import in_degrees, is_lat, is_lon, n_values, name_of, var_attr, with_bounds
from proximate.catalog.crs import (
    CRS_TEXT_KEYS,
    X_NAMES,
    Y_NAMES,
    axis_extent,
    axis_scale,
    bounds_bracket,
    crs_from_attrs,
)
from proximate.catalog.crs import projected_bbox as _projected_box
from proximate.catalog.formats import Header, Var
from proximate.catalog.formats.base import MAX_CHUNKS_READ, n_chunks
from proximate.catalog.geo import arcs_lon_extent, cell_arcs, lon_extent, merge_arcs, normalize_lon, union_bboxes

#: Cells whose vertices are read at once: bounds a mesh's or grid's memory while its cells are traced.
CELLS_PER_BLOCK = 1_000_000
#: Values (vertices, connectivity) beyond which cells are not traced: the box is then the points'.
MAX_TRACED_VALUES = 64_000_000
#: Degrees: a UGRID mesh given by its nodes alone (no face connectivity) whose node longitudes leave no gap wider
#: than this around the circle is global in longitude, and reaches a pole its nodes come this close to. Its faces
#: would join neighbouring nodes, so no face can leave a hole narrower than the widest gap between them; a
#: regional mesh leaves a gap of its missing longitudes, far wider than any global mesh's cells (a C12 cubed
#: sphere's are 7.5 degrees, and nodes at different latitudes fill each other's gaps).
NODE_GAP_DEGREES = 10.0


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
    lats = [a for v in gridded if is_lat(v) for a in with_bounds(header, v, warnings)]
    lons = [a for v in gridded if is_lon(v) for a in with_bounds(header, v, warnings, period=360.0)]
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
        if var_attr(mesh, "cf_role") != "mesh_topology":
            continue
        found = _mesh_box(header, mesh_name, mesh, warnings)
        if found is not None:
            box, dims = found
            boxes.append(box)
            covered |= {id(v) for v in header.variables.values() if v.dims and set(v.dims) <= dims}
    for lon in header.variables.values():
        if id(lon) in covered or not is_lon(lon) or not lon.dims:
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
    node_lon = next((v for v in nodes if v is not None and is_lon(v)), None)
    node_lat = next((v for v in nodes if v is not None and is_lat(v)), None)
    conn_name = mesh.attrs.get("face_node_connectivity")
    if node_lon is not None and node_lat is not None and not isinstance(conn_name, str):
        return _nodes_box(header, mesh, node_lon, node_lat)
    conn = header.lookup(mesh, conn_name) if isinstance(conn_name, str) else None
    if node_lon is None or node_lat is None or conn is None or not conn.numeric or len(conn.dims) != 2:
        return None
    if _too_big_to_trace(node_lon, node_lat, conn):
        warnings.append(f"mesh {name!r} is too large to trace its faces: its box is that of its points")
        return None
    lon, lat = in_degrees(node_lon.read(), node_lon), in_degrees(node_lat.read(), node_lat)
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


def _nodes_box(header: Header, mesh: Var, node_lon: Var, node_lat: Var) -> tuple[list[float], set[str]] | None:
    """The box of a UGRID mesh given by its nodes alone (no ``face_node_connectivity``), and the mesh's dimensions.

    Points alone leave a global mesh's box with a gap (the widest gap between its unevenly spread nodes): nodes
    whose longitudes circle the globe with no gap wider than :data:`NODE_GAP_DEGREES` are global in longitude,
    and then reach a pole their nodes come within :data:`NODE_GAP_DEGREES` of. Other meshes get their nodes'
    box."""
    lon, lat = in_degrees(node_lon.read(), node_lon), in_degrees(node_lat.read(), node_lat)
    if lon.shape != lat.shape:
        return None
    keep = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90.0)
    lon, lat = lon[keep], lat[keep]
    if lon.size == 0:
        return None
    south, north = float(lat.min()), float(lat.max())
    if _widest_lon_gap(lon) <= NODE_GAP_DEGREES:
        west, east = -180.0, 180.0
        south = -90.0 if south <= -90.0 + NODE_GAP_DEGREES else south
        north = 90.0 if north >= 90.0 - NODE_GAP_DEGREES else north
    else:
        extent = lon_extent(lon)
        assert extent is not None
        west, east = extent
    dims = set(node_lon.dims)
    for key in ("edge_node_connectivity", "boundary_node_connectivity"):
        other = header.lookup(mesh, str(mesh.attrs.get(key, "")))
        if other is not None and other.dims:
            dims.add(str(mesh.attrs.get(key.split("_")[0] + "_dimension", other.dims[0])))
    return [west, south, east, north], dims


def _widest_lon_gap(lon: np.ndarray) -> float:
    """Degrees of the widest gap between neighbouring longitudes around the circle (360 for a single one)."""
    u = np.unique(normalize_lon(lon))
    return float(np.diff(np.append(u, u[0] + 360.0)).max())


def _bounded_pair(header: Header, lon: Var) -> tuple[Var, Var, Var] | None:
    """(lat, lon bounds, lat bounds) of a longitude whose CF bounds describe cells with 3 or more vertices."""
    lon_b = header.lookup(lon, str(lon.attrs.get("bounds", "")))
    if lon_b is None or not lon_b.numeric or lon_b.shape[:-1] != lon.shape or lon_b.shape[-1] < 3:
        return None
    for lat in header.variables.values():
        if is_lat(lat) and lat.dims == lon.dims:
            lat_b = header.lookup(lat, str(lat.attrs.get("bounds", "")))
            if lat_b is not None and lat_b.numeric and lat_b.shape == lon_b.shape:
                return lat, lon_b, lat_b
    return None


def _bounds_box(header: Header, lon: Var, lat: Var, lon_b: Var, lat_b: Var, warnings: list[str]) -> list[float] | None:
    """The box of the cells that a lat/lon pair's bounds outline, read a block of rows at a time."""
    if _too_big_to_trace(lon, lat, lon_b, lat_b):
        warnings.append(f"cells of {name_of(header, lon)!r} are too many to trace: its box is that of its points")
        return None
    per_row = int(np.prod(lon.shape[1:], dtype=np.int64))
    rows = max(1, CELLS_PER_BLOCK // max(per_row, 1))
    parts = []
    for first in range(0, lon.shape[0], rows):
        block = slice(first, first + rows)
        values = [v.read_block(block) for v in (lon, lat, lon_b, lat_b)]
        if any(v is None for v in values):
            return None
        lo, la, lo_b, la_b = (in_degrees(v, var) for v, var in zip(values, (lon, lat, lon, lat), strict=True))
        if not (bounds_bracket(lo, lo_b, period=360.0) and bounds_bracket(la, la_b)):
            name = name_of(header, lon)
            warnings.append(f"cell bounds of {name!r} do not bracket their points: its box is that of its points")
            return None
        nv = lo_b.shape[-1]
        part = cell_arcs(lo_b.reshape(-1, nv), la_b.reshape(-1, nv))
        if part is not None:
            parts.append(part)
    return _arcs_box(parts)


def _too_big_to_trace(*variables: Var) -> bool:
    """Whether tracing cells would read more than :data:`MAX_TRACED_VALUES` values or too many chunks: a header
    can declare any size, so the work must be bounded by something other than the file's word."""
    return any(n_values(v) > MAX_TRACED_VALUES or n_chunks(v.shape, v.chunks) > MAX_CHUNKS_READ for v in variables)


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
    x = next((a for a in axes if var_attr(a, "standard_name") in X_NAMES or var_attr(a, "axis") == "x"), None)
    y = next((a for a in axes if var_attr(a, "standard_name") in Y_NAMES or var_attr(a, "axis") == "y"), None)
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


def _own_crs(header: Header, var: Var, warnings: list[str]) -> tuple[Any, str] | None:
    """The CRS a variable states in its own attributes (``crs``, ``crs_wkt``, ``spatial_ref``, ``proj4``) as PROJ
    or WKT text, which old GDAL and rioxarray wrote on the data variable instead of a grid mapping; with the text
    (two variables on the same axes with different CRSs are two grids). A text naming another variable is left to
    :func:`_file_crs`; any other text pyproj refuses is a warning naming the variable."""
    texts = {k: v for k in CRS_TEXT_KEYS if isinstance(v := var.attrs.get(k), str) and v.strip()}
    if not texts:
        return None
    crs = crs_from_attrs(texts)
    if crs is not None:
        return crs, next(iter(texts.values()))
    if not any(header.lookup(var, v.strip()) is not None for v in texts.values()):
        keys = ", ".join(texts)
        warnings.append(f"{keys} of {name_of(header, var)!r} is not a CRS pyproj understands: no bbox from it")
    return None


def _crs_bbox(header: Header, warnings: list[str]) -> list[float] | None:
    """The box of every grid that has a CRS and x/y axes: its outline transformed to lon/lat."""
    boxes: list[list[float]] = []
    seen: set[tuple[int, str, int, int]] = set()
    refused: set[int] = set()
    fallback: Any = None
    for var in header.variables.values():
        if len(var.dims) < 2:
            continue
        mapping = _grid_mapping_of(header, var)
        crs = crs_from_attrs(mapping.attrs) if mapping is not None else None
        if mapping is not None and crs is None and id(mapping) not in refused:
            refused.add(id(mapping))
            name = name_of(header, var)
            warnings.append(f"grid mapping of {name!r} is not a CRS pyproj understands: no bbox from it")
        own = _own_crs(header, var, warnings) if mapping is None else None
        if own is not None:
            crs = own[0]
        if crs is None:
            fallback = _file_crs(header) if fallback is None else fallback
            crs = fallback
        axes = _xy_axes(header, var) if crs is not None else None
        if axes is None:
            continue
        x, y = axes
        key = (id(mapping), own[1] if own is not None else "", id(x), id(y))
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
            warnings.append(f"the grid of {name_of(header, var)!r} does not transform to lon/lat: {exc}")
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
