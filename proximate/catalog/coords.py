"""Coordinate variables of a header: which are latitude/longitude, their values in degrees, and their bounds.

Shared by the bounding box (:mod:`proximate.catalog.bbox`) and the time span (:mod:`proximate.catalog.timespan`)
of :func:`proximate.catalog.extract.extract`. Values come through the format handler's bounded read
(:func:`proximate.catalog.formats.base.read_limited`), which samples a coordinate too long to read whole; a sampled
coordinate's bounds are then left out, with a warning, since they cannot be matched to the sample.
"""

from __future__ import annotations

import numpy as np

from proximate.catalog.crs import bounds_bracket
from proximate.catalog.formats import Header, Var

LAT_UNITS = {"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"}
LON_UNITS = {"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"}
_RADIANS = {"rad", "radian", "radians"}


def name_of(header: Header, var: Var) -> str:
    """The qualified name under which ``header`` holds ``var`` (warnings name variables by it)."""
    return next(k for k, v in header.variables.items() if v is var)


def var_attr(var: Var, key: str) -> str:
    """Attribute ``key`` of ``var`` as stripped lower-case text (``""`` when absent): how CF values compare."""
    return str(var.attrs.get(key, "")).strip().lower()


def is_lat(var: Var) -> bool:
    """Whether ``var`` is a numeric latitude (by standard name or degrees-north units)."""
    return var.numeric and (var_attr(var, "standard_name") == "latitude" or var_attr(var, "units") in LAT_UNITS)


def is_lon(var: Var) -> bool:
    """Whether ``var`` is a numeric longitude (by standard name or degrees-east units)."""
    return var.numeric and (var_attr(var, "standard_name") == "longitude" or var_attr(var, "units") in LON_UNITS)


def in_degrees(values: np.ndarray, var: Var) -> np.ndarray:
    """Coordinate values in degrees: CF allows radians for latitude and longitude (units say which)."""
    return np.degrees(values) if var_attr(var, "units") in _RADIANS else values


def with_bounds(header: Header, var: Var, warnings: list[str], *, period: float | None = None) -> list[np.ndarray]:
    """A coordinate's values and those of its bounds, when they are real bounds (bracketing every point)."""
    values = in_degrees(var.read(), var)
    out = [values]
    if values.size != n_values(var):  # sampled (see read_limited): its bounds could not be matched to it
        warnings.append(f"coordinate of {n_values(var)} values: its extent is that of a sample of {values.size}")
        return out
    for key in ("bounds", "climatology"):
        bname = var.attrs.get(key)
        bvar = header.lookup(var, bname) if isinstance(bname, str) else None
        if bvar is None or not bvar.numeric:
            continue
        bounds = in_degrees(bvar.read(), var)
        if bounds_bracket(values, bounds, period=period):
            out.append(bounds)
        else:
            warnings.append(f"{key} {bname!r} do not bracket their coordinate's values: ignored")
    return out


def n_values(var: Var) -> int:
    """How many values the header declares ``var`` holds (what it says, not what was read)."""
    return int(np.prod(var.shape, dtype=np.int64))
