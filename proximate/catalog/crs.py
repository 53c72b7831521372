"""Footprints of projected grids: the lon/lat box a grid covers, from its CRS and its x/y axes, through pyproj.

A grid with only projected x/y coordinates (Lambert, Mercator, polar stereographic, UTM, sinusoidal, rotated
pole without 2-D lat/lon, geostationary) says where it is through its CRS: a CF ``grid_mapping`` variable's
attributes, or WKT in ``crs_wkt`` / ``spatial_ref`` (what GDAL and rioxarray write), or a ``crs`` attribute.
The box is that of the grid's outline (cell edges, densified, so curved edges count) transformed by PROJ
(``Transformer.transform_bounds``, which also includes a pole inside the grid and reports an antimeridian
crossing as ``west > east``). Every function here is pure: attributes and numbers in, a box or ``None`` out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from proximate.catalog.geo import BBox, lon_extent, normalize_lon

#: Points per outline edge handed to PROJ (the grid's edges are curves on the sphere).
DENSIFY = 51
#: Samples per axis when the outline leaves the Earth (a geostationary full disk): the box of those on it.
DISK_SAMPLES = 201
#: Bisection steps towards the limb between a sample on the Earth and its neighbour off it.
LIMB_STEPS = 30
_KM = {"km", "kilometre", "kilometer", "kilometres", "kilometers"}
_RADIANS = {"rad", "radian", "radians"}
#: Attributes that hold a CRS as text (WKT, PROJ string, "EPSG:n"), as GDAL, rioxarray and CF write them.
CRS_TEXT_KEYS = ("crs_wkt", "spatial_ref", "crs", "proj4", "proj4text", "proj4_params")
X_NAMES = {"projection_x_coordinate", "grid_longitude", "projection_x_angular_coordinate"}
Y_NAMES = {"projection_y_coordinate", "grid_latitude", "projection_y_angular_coordinate"}


def crs_from_attrs(attrs: Mapping[str, Any]) -> Any | None:
    """The pyproj CRS that attributes describe (WKT first: it is exact; then CF grid-mapping parameters; then a
    ``crs`` / ``proj4`` string); ``None`` if they describe none pyproj understands."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    for key in CRS_TEXT_KEYS:
        value = attrs.get(key)
        if isinstance(value, str) and value.strip():
            with contextlib.suppress(CRSError):
                return CRS.from_user_input(value)
    if "grid_mapping_name" in attrs:
        cf = {k: _plain(v) for k, v in attrs.items()}
        with contextlib.suppress(CRSError, ValueError, TypeError, KeyError):
            return CRS.from_cf(cf)
    return None


def _plain(value: Any) -> Any:
    """numpy attribute values as pyproj's ``from_cf`` takes them (scalars, lists)."""
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def geographic_of(crs: Any) -> Any:
    """The plain geographic CRS a CRS's coordinates refer to: a rotated pole's is the unrotated one."""
    geo = crs.geodetic_crs
    while geo is not None and geo.is_derived and geo.source_crs is not None:
        geo = geo.source_crs
    return geo


def axis_scale(units: Any, crs: Any) -> float:
    """Factor from an axis's units to the CRS's: km to metres, and a geostationary scan angle (radians) to the
    metres PROJ expects (the angle times the satellite height, as CF defines it)."""
    text = str(units or "").strip().lower()
    if text in _KM:
        return 1000.0
    if text in _RADIANS:
        params = crs.to_dict() if crs is not None else {}
        if params.get("proj") == "geos":
            return float(params.get("h", 1.0))
    return 1.0


def axis_extent(centres: np.ndarray, bounds: np.ndarray | None = None) -> tuple[float, float] | None:
    """(low, high) edge of a 1-D axis: its cell bounds when they bracket every centre, else centres widened by
    half the step at each end (cells are centred on their coordinate in CF and GDAL alike)."""
    c = np.asarray(centres, dtype=np.float64).ravel()
    c = c[np.isfinite(c)]
    if c.size == 0:
        return None
    if bounds is not None and bounds_bracket(c, np.asarray(bounds, dtype=np.float64)):
        return float(np.nanmin(bounds)), float(np.nanmax(bounds))
    half = float(np.median(np.abs(np.diff(np.sort(c))))) / 2.0 if c.size > 1 else 0.0
    return float(c.min()) - half, float(c.max()) + half


def bounds_bracket(points: np.ndarray, bounds: np.ndarray, *, period: float | None = None) -> bool:
    """Whether ``bounds`` (shape ``points.shape + (n,)``) are real cell bounds: finite and each cell's bounds
    bracket its point (within a millionth of the cell). ``period=360`` compares longitudes around the circle."""
    p = np.asarray(points, dtype=np.float64)
    b = np.asarray(bounds, dtype=np.float64)
    if b.ndim < 1 or b.size == 0 or b.size % max(p.size, 1) or b.size == p.size:
        return False
    b = b.reshape(p.size, -1)
    p = p.reshape(-1)
    keep = np.isfinite(p)
    p, b = p[keep], b[keep]
    if p.size == 0 or not np.isfinite(b).all():
        return False
    d = b - p[:, None]
    if period is not None:
        d = (d + period / 2) % period - period / 2
    width = d.max(axis=1) - d.min(axis=1)
    tol = 1e-6 * np.maximum(width, 1e-12)
    return bool(np.all(d.min(axis=1) <= tol) and np.all(d.max(axis=1) >= -tol) and np.all(width > 0))


def projected_bbox(crs: Any, x_range: tuple[float, float], y_range: tuple[float, float]) -> BBox | None:
    """[west, south, east, north] in degrees of the x/y rectangle in ``crs``; ``None`` if none of it is on Earth."""
    from pyproj import Transformer
    from pyproj.exceptions import ProjError

    transformer = Transformer.from_crs(crs, geographic_of(crs), always_xy=True)
    (x0, x1), (y0, y1) = sorted(x_range), sorted(y_range)
    lon, lat = (np.asarray(v) for v in transformer.transform(*_outline(x0, x1, y0, y1)))
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        # The outline leaves the Earth (a geostationary disk's limb): its box would miss the inside's extremes.
        return _sampled_bbox(transformer, (x0, x1), (y0, y1))
    poles = _poles_inside(transformer, (x0, x1), (y0, y1))
    try:
        west, south, east, north = (float(v) for v in transformer.transform_bounds(x0, y0, x1, y1, densify_pts=DENSIFY))
    except ProjError:
        west = south = east = north = np.inf
    # PROJ 9 takes a rotated pole's (ob_tran) rectangle to hold the pole when it does not: its box is kept only
    # when it agrees with where the poles are; otherwise the densified outline's own box is the answer.
    claimed = {p for p, edge in ((90.0, north), (-90.0, south)) if edge == p}
    if not np.isfinite([west, south, east, north]).all() or claimed != poles:
        extent = (-180.0, 180.0) if poles else lon_extent(lon)
        assert extent is not None
        west, east = extent
        south = -90.0 if -90.0 in poles else float(lat.min())
        north = 90.0 if 90.0 in poles else float(lat.max())
    elif east - west >= 360.0:
        west, east = -180.0, 180.0
    else:
        west, east = (float(v) for v in normalize_lon(np.array([west, east])))
        if east == -180.0 and west > east:
            east = 180.0
    return [west, max(south, -90.0), east, min(north, 90.0)]


def _outline(x0: float, x1: float, y0: float, y1: float, n: int = DENSIFY) -> tuple[np.ndarray, np.ndarray]:
    """The rectangle's edges, ``n`` points each, in order around it."""
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(n, x1), x1 - (x1 - x0) * t, np.full(n, x0)])
    ys = np.concatenate([np.full(n, y0), y0 + (y1 - y0) * t, np.full(n, y1), y1 - (y1 - y0) * t])
    return xs, ys


def _poles_inside(transformer: Any, x_range: tuple[float, float], y_range: tuple[float, float]) -> set[float]:
    """The poles (90, -90) whose grid coordinates fall inside the rectangle."""
    inside = set()
    for pole in (90.0, -90.0):
        px, py = transformer.transform(0.0, pole, direction="INVERSE")
        if np.isfinite(px) and np.isfinite(py) and x_range[0] <= px <= x_range[1] and y_range[0] <= py <= y_range[1]:
            inside.add(pole)
    return inside


def _sampled_bbox(transformer: Any, x_range: tuple[float, float], y_range: tuple[float, float]) -> BBox | None:
    """The box of the grid's points that lie on the Earth (PROJ gives inf for the others), for outlines that
    leave it: a geostationary full disk's corners look at space. A coarse sample, then the limb itself found by
    bisection between each sample on the Earth and its neighbour off it (the extremes lie on the limb)."""
    xs = np.linspace(*x_range, DISK_SAMPLES)
    ys = np.linspace(*y_range, DISK_SAMPLES)
    xx, yy = np.meshgrid(xs, ys)
    lon, lat = (np.asarray(v) for v in transformer.transform(xx, yy))
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return None
    limb_lon, limb_lat = _limb(transformer, xx, yy, ok)
    lon = np.concatenate([lon[ok], limb_lon])
    lat = np.concatenate([lat[ok], limb_lat])
    poles = _poles_inside(transformer, x_range, y_range)
    extent = (-180.0, 180.0) if poles else lon_extent(lon)
    assert extent is not None
    south = -90.0 if -90.0 in poles else float(lat.min())
    north = 90.0 if 90.0 in poles else float(lat.max())
    return [extent[0], south, extent[1], north]


def _limb(transformer: Any, xx: np.ndarray, yy: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of the limb between each pair of row or column neighbours where one is on the Earth and the other
    off it."""
    pairs = []
    for axis in (0, 1):
        lo = tuple(slice(None, -1) if a == axis else slice(None) for a in (0, 1))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in (0, 1))
        for on, off in ((lo, hi), (hi, lo)):
            mask = ok[on] & ~ok[off]
            pairs.append((xx[on][mask], yy[on][mask], xx[off][mask], yy[off][mask]))
    return _bisect(transformer, *(np.concatenate(column) for column in zip(*pairs, strict=True)))


def _bisect(transformer: Any, on_x, on_y, off_x, off_y) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(LIMB_STEPS):
        mx, my = (on_x + off_x) / 2, (on_y + off_y) / 2
        lon, _lat = transformer.transform(mx, my)
        good = np.isfinite(np.asarray(lon))
        on_x, on_y = np.where(good, mx, on_x), np.where(good, my, on_y)
        off_x, off_y = np.where(good, off_x, mx), np.where(good, off_y, my)
    lon, lat = (np.asarray(v) for v in transformer.transform(on_x, on_y))
    keep = np.isfinite(lon) & np.isfinite(lat)
    return lon[keep], lat[keep]
