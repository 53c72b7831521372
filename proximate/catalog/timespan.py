"""The time span of a dataset from its header: CF time coordinates and their bounds, else a forecast's reference
times plus its forecast periods, decoded in the file's calendar (cftime).
"""

from __future__ import annotations

import calendar as _calendar
import datetime as _dt
import re
from typing import Any

import numpy as np

from proximate.catalog.coords import var_attr, with_bounds
from proximate.catalog.formats import Header, Var

_TIME_UNITS = re.compile(r"^\s*[a-zA-Z]+\s+since\s+\S", re.IGNORECASE)
#: Seconds per unit of a ``forecast_period`` (UDUNITS spellings).
_PERIOD_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}


def _is_time(name: str, var: Var) -> bool:
    units = var.attrs.get("units")
    cf_units = isinstance(units, str) and bool(_TIME_UNITS.match(units))
    return var.numeric and (
        var_attr(var, "standard_name") == "time" or var_attr(var, "axis") == "t" or (cf_units and var.dims == (name,))
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
    cal = var_attr(var, "calendar") or "standard"
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
    """Valid times of a forecast file that has no time coordinate: reference times plus forecast periods, and
    their bounds: a monthly mean's ``forecast_period`` is the middle of the month, its validity the period's
    bounds (the month), so a search inside the month finds it."""
    by_name = {var_attr(v, "standard_name"): (n, v) for n, v in header.variables.items() if v.numeric}
    if "forecast_reference_time" not in by_name or "forecast_period" not in by_name:
        return None
    ref_name, ref = by_name["forecast_reference_time"]
    period_name, period = by_name["forecast_period"]
    ref_values = np.concatenate([a.ravel() for a in with_bounds(header, ref, warnings)])
    refs = _decoded_range(ref_name, ref, ref_values, warnings)
    seconds = _PERIOD_SECONDS.get(var_attr(period, "units"))
    if refs is None or seconds is None:
        if seconds is None:
            warnings.append(f"forecast_period {period_name!r} has units {period.attrs.get('units')!r}: no time span")
        return None
    steps = np.concatenate([a.ravel() for a in with_bounds(header, period, warnings)])
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
            values = np.concatenate([a.ravel() for a in with_bounds(header, var, warnings)])
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
