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
_KM = {"km", "kilometre", "kilometer", "kilometres", "kilometers"}
_RADIANS = {"rad", "radian", "radians"}
X_NAMES = {"projection_x_coordinate", "grid_longitude", "projection_x_angular_coordinate"}
Y_NAMES = {"projection_y_coordinate", "grid_latitude", "projection_y_angular_coordinate"}


def crs_from_attrs(attrs: Mapping[str, Any]) -> Any | None:
    """The pyproj CRS that attributes describe (WKT first: it is exact; then CF grid-mapping parameters; then a
    ``crs`` / ``proj4`` string); ``None`` if they describe none pyproj understands."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    for key in ("crs_wkt", "spatial_ref", "crs", "proj4", "proj4text", "proj4_params"):
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
    try:
        box = transformer.transform_bounds(x0, y0, x1, y1, densify_pts=DENSIFY)
    except ProjError:
        box = (np.inf,) * 4
    if all(np.isfinite(box)):
        west, south, east, north = (float(v) for v in box)
        if east - west >= 360.0:
            west, east = -180.0, 180.0
        else:
            west, east = (float(v) for v in normalize_lon(np.array([west, east])))
            if east == -180.0 and west > east:
                east = 180.0
        return [west, max(south, -90.0), east, min(north, 90.0)]
    return _sampled_bbox(transformer, (x0, x1), (y0, y1))


def _sampled_bbox(transformer: Any, x_range: tuple[float, float], y_range: tuple[float, float]) -> BBox | None:
    """The box of the grid's points that lie on the Earth (PROJ gives inf for the others), for outlines that
    leave it: a geostationary full disk's corners look at space."""
    xs = np.linspace(*x_range, DISK_SAMPLES)
    ys = np.linspace(*y_range, DISK_SAMPLES)
    xx, yy = np.meshgrid(xs, ys)
    lon, lat = transformer.transform(xx.ravel(), yy.ravel())
    lon, lat = np.asarray(lon), np.asarray(lat)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return None
    extent = lon_extent(lon[ok])
    south, north = float(lat[ok].min()), float(lat[ok].max())
    for pole in (90.0, -90.0):  # a pole inside the grid: every longitude and the pole itself
        px, py = transformer.transform(0.0, pole, direction="INVERSE")
        if np.isfinite(px) and np.isfinite(py) and x_range[0] <= px <= x_range[1] and y_range[0] <= py <= y_range[1]:
            extent, south, north = (-180.0, 180.0), min(south, pole), max(north, pole)
    assert extent is not None
    return [extent[0], south, extent[1], north]
