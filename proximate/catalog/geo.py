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
    antimeridian. Two shapes rather than one multipolygon: OpenSearch indexes an array of shapes as their
    union just the same, and osmem-server (the test stand-in) only honours a multipolygon's first polygon."""
    west, south, east, north = check_bbox(bbox)
    return [box_shape(w, south, e, north) for w, e in lon_intervals(west, east)]
