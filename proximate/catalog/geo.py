"""Bounding-box arithmetic on the sphere's longitude circle: one place for the antimeridian rules.

A bbox is ``[west, south, east, north]`` in degrees, longitudes in [-180, 180]; ``west > east`` means the box
crosses the antimeridian. Catalog backends and the extractor share these functions so that a box means the
same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BBox = list[float]


def normalize_lon(values: np.ndarray) -> np.ndarray:
    """Longitudes into [-180, 180) whatever convention (0..360, -180..180, unwrapped) the file uses."""
    lon = np.asarray(values, dtype=np.float64)
    # Only move what is outside: the modulo would round values that are already fine.
    return np.where((lon >= -180.0) & (lon < 180.0), lon, ((lon + 180.0) % 360.0) - 180.0)


def lon_extent(values: np.ndarray) -> tuple[float, float] | None:
    """Smallest arc holding every longitude, as (west, east); (-180, 180) when the points circle the globe.

    "Circle the globe" means no gap between neighbouring longitudes is wider than twice the typical gap, so a
    global grid is global whatever its first meridian, while a region is never widened to guess cell edges.
    """
    lon = np.asarray(values, dtype=np.float64).ravel()
    lon = lon[np.isfinite(lon)]
    if lon.size == 0:
        return None
    u = np.unique(normalize_lon(lon))
    n = u.size
    gaps = np.diff(np.append(u, u[0] + 360.0))  # gaps[i] is the gap after u[i]; the last one wraps around
    largest = float(gaps.max())
    if n > 2 and largest <= 2.0 * float(np.median(gaps)):
        return (-180.0, 180.0)
    i = n - 1 if gaps[-1] == largest else int(np.argmax(gaps))
    west, east = float(u[(i + 1) % n]), float(u[i])
    if west > east and east == -180.0:  # an arc ending exactly on the antimeridian does not cross it
        east = 180.0
    return (west, east)


def union_bboxes(boxes: Sequence[Sequence[float]]) -> BBox:
    """The smallest box holding every box (antimeridian-aware): one box is itself; several take the smallest
    longitude arc over points sampled along each box's arc (a degree apart, so a wide box stays wide)."""
    if len(boxes) == 1:
        return [float(v) for v in boxes[0]]
    lons = []
    for west, _south, east, _north in boxes:
        span = (east - west) % 360.0 or (360.0 if west != east else 0.0)
        lons.append(west + np.linspace(0.0, span, max(2, int(np.ceil(span)) + 1)))
    extent = lon_extent(np.concatenate(lons))
    assert extent is not None
    return [extent[0], min(float(b[1]) for b in boxes), extent[1], max(float(b[3]) for b in boxes)]


def check_bbox(bbox: Sequence[float]) -> BBox:
    """Validate a bbox and return it as a list of floats; errors say which number is wrong."""
    if len(bbox) != 4:
        raise ValueError(f"bbox needs 4 numbers [west, south, east, north], got {len(bbox)}")
    west, south, east, north = (float(v) for v in bbox)
    for name, v, lim in (("west", west, 180), ("east", east, 180), ("south", south, 90), ("north", north, 90)):
        if not np.isfinite(v) or abs(v) > lim:
            raise ValueError(f"bbox {name} = {v} is outside [-{lim}, {lim}]")
    if south > north:
        raise ValueError(f"bbox south ({south}) is north of north ({north})")
    return [west, south, east, north]


def lon_intervals(west: float, east: float) -> list[tuple[float, float]]:
    """The one or two plain longitude intervals a (possibly antimeridian-crossing) box covers."""
    if west <= east:
        return [(west, east)]
    return [(west, 180.0), (-180.0, east)]


def bbox_intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two boxes share at least one point (edges included), antimeridian-aware."""
    aw, as_, ae, an = a
    bw, bs, be, bn = b
    if as_ > bn or bs > an:
        return False
    return any(x0 <= y1 and y0 <= x1 for x0, x1 in lon_intervals(aw, ae) for y0, y1 in lon_intervals(bw, be))


#: Degrees a flat box is widened by in its flat direction (a zero-area envelope is not a valid polygon).
FLAT_EPSILON = 1e-9


def box_shape(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    """GeoJSON for a plain (non-crossing) box: a point, or an envelope; a box flat in one direction is
    widened by :data:`FLAT_EPSILON` there (far below any grid's precision) so every server can index it."""
    if west == east and south == north:
        return {"type": "point", "coordinates": [west, south]}
    if west == east:
        west, east = max(west - FLAT_EPSILON, -180.0), min(east + FLAT_EPSILON, 180.0)
    if south == north:
        south, north = max(south - FLAT_EPSILON, -90.0), min(north + FLAT_EPSILON, 90.0)
    return {"type": "envelope", "coordinates": [[west, north], [east, south]]}


def bbox_shapes(bbox: Sequence[float]) -> list[dict[str, Any]]:
    """A box as GeoJSON shapes for OpenSearch's geo_shape: one envelope, or two halves split at the
    antimeridian (a query ORs them; a document holds them as one geometry collection, see
    ``proximate.catalog.opensearch.document_shape``)."""
    west, south, east, north = check_bbox(bbox)
    return [box_shape(w, south, e, north) for w, e in lon_intervals(west, east)]


# -- footprints of cells: meshes and grids with cell bounds ----------------------------------------------------

#: Degrees below which a gap between cells is rounding (cells sharing a vertex meet exactly, up to float error).
ARC_TOLERANCE = 1e-6


def _fill_missing_vertices(values: np.ndarray) -> np.ndarray:
    """Each cell's missing vertices (NaN: a mixed mesh's fill values, a vertex at a pole) replaced by the cell's
    first valid vertex, which adds a zero-length edge: the cell's arc and winding stay the same."""
    valid = np.isfinite(values)
    first = np.argmax(valid, axis=1)
    first_value = values[np.arange(values.shape[0]), first]
    return np.where(valid, values, first_value[:, None])


def cell_arcs(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """The longitude arcs and latitude range that cells cover, from their vertices.

    Args:
        lon: vertex longitudes in degrees, shape ``(cells, vertices)``, NaN where a cell has fewer vertices.
        lat: vertex latitudes, the same shape.

    Returns:
        ``(arcs, south, north)``: ``arcs`` is an ``(n, 2)`` array of merged, sorted ``[start, end]`` intervals
        on the circle ``[0, 360]`` that the cells' longitudes cover; a cell winding once around a pole covers
        every longitude and reaches that pole. ``None`` if no cell has a valid vertex.
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lat = np.where(np.abs(lat) <= 90.0, lat, np.nan)
    # A vertex on a pole has no longitude of its own (writers put anything there): it only counts for latitude.
    lon = np.where(np.isfinite(lat) & (np.abs(lat) < 90.0 - 1e-9), lon, np.nan)
    keep = np.isfinite(lon).any(axis=1)
    if not keep.any():
        return None
    lon, lat = _fill_missing_vertices(lon[keep]), lat[keep]
    # Each edge's longitude step taken the short way round, so a cell crossing 180 is one run, not 358 degrees.
    steps = (np.diff(lon, axis=1, append=lon[:, :1]) + 180.0) % 360.0 - 180.0
    unwrapped = lon[:, :1] + np.concatenate([np.zeros((lon.shape[0], 1)), np.cumsum(steps[:, :-1], axis=1)], axis=1)
    west = unwrapped.min(axis=1)
    span = unwrapped.max(axis=1) - west
    # Steps summing to a full turn: the cell winds around a pole, so it holds every longitude and the pole.
    winding = np.abs(steps.sum(axis=1)) > 180.0
    lat_mean = np.nanmean(lat, axis=1)
    south = float(np.nanmin(lat))
    north = float(np.nanmax(lat))
    if winding.any():
        span = np.where(winding, 360.0, span)
        north = 90.0 if (winding & (lat_mean > 0)).any() else north
        south = -90.0 if (winding & (lat_mean <= 0)).any() else south
    return merge_arcs(west, span), south, north


def merge_arcs(west: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Arcs (start, length in degrees) merged into sorted, disjoint ``[start, end]`` intervals on ``[0, 360]``;
    arcs closer than :data:`ARC_TOLERANCE` are joined."""
    west = np.asarray(west, dtype=np.float64).ravel()
    span = np.minimum(np.asarray(span, dtype=np.float64).ravel(), 360.0)
    if (span >= 360.0).any():
        return np.array([[0.0, 360.0]])
    start = west % 360.0
    end = start + span
    # An arc past 360 continues at 0: split it there, so every interval lies on [0, 360].
    over = end > 360.0
    start = np.concatenate([start, np.zeros(int(over.sum()))])
    end = np.concatenate([np.minimum(end, 360.0), end[over] - 360.0])
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    opens = np.concatenate([[True], start[1:] > reach[:-1] + ARC_TOLERANCE])
    closes = np.concatenate([opens[1:], [True]])
    return np.stack([start[opens], reach[closes]], axis=1)


def arcs_lon_extent(arcs: np.ndarray) -> tuple[float, float]:
    """The smallest arc holding merged intervals (from :func:`merge_arcs`) as (west, east) in [-180, 180]: the
    complement of their widest gap, or (-180, 180) when no gap is left (they circle the globe)."""
    starts, ends = arcs[:, 0], arcs[:, 1]
    gaps = np.append(starts[1:] - ends[:-1], starts[0] + 360.0 - ends[-1])  # gap after each; the last wraps
    i = int(np.argmax(gaps))
    if gaps[i] <= ARC_TOLERANCE:
        return (-180.0, 180.0)
    west = float(starts[(i + 1) % len(starts)])
    east = float(ends[i])
    west, east = (float(normalize_lon(np.array(v))) for v in (west, east))
    if east == -180.0:  # an arc ending exactly on the antimeridian does not cross it
        east = 180.0
    return (west, east)
