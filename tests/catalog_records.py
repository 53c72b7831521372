"""Catalog records for the contract suite, and a brute-force reference that says which records a query must
return. The reference shares no code with the backends: boxes are compared as sets of whole-degree points,
text as sets of words found by its own regular expression."""

from __future__ import annotations

import re
from functools import cache

from proximate.catalog.records import DatasetRecord, VariableInfo, record_id

_WORDS = re.compile(r"[A-Za-z0-9]+")


def make_record(
    region: str,
    path: str,
    *,
    variables: list[tuple[str, str | None, str | None]] = (),
    title: str | None = None,
    time: tuple[str, str] | None = None,
    bbox: list[float] | None = None,
    size: int = 1000,
    status: str = "ok",
    error: str | None = None,
    attrs: dict | None = None,
) -> DatasetRecord:
    attrs = dict(attrs or {})
    if title:
        attrs["title"] = title
    return DatasetRecord(
        id=record_id(region, path),
        region=region,
        path=path,
        format="netcdf",
        size=size,
        mtime_ns=1_700_000_000_000_000_000 + size * 1_000_003_001,
        status=status,
        error=error,
        title=title,
        attrs=attrs,
        variables=[
            VariableInfo(name=n, standard_name=sn, long_name=ln, dims=["time"], shape=[1], dtype="float32")
            for n, sn, ln in variables
        ]
        + [VariableInfo(name="time", standard_name="time", dims=["time"], shape=[1], dtype="float64", coordinate=True)],
        time_start=time[0] if time else None,
        time_end=time[1] if time else None,
        bbox=bbox,
        last_good_at="2026-01-01T00:00:00Z" if status == "ok" else None,
    )


def sample_records() -> list[DatasetRecord]:
    """Varied on purpose: regions, names, spans (one 360-day-style), boxes (global, crossing 180°, polar,
    point, line), sizes, one error record, and words an injection attempt could hit."""
    tas = ("tas", "air_temperature", "Near-Surface Air Temperature")
    pr = ("pr", "precipitation_flux", "Precipitation")
    uas = ("uas", "eastward_wind", "Eastward Near-Surface Wind")
    sst = ("tos", "sea_surface_temperature", "Sea Surface Temperature")
    out = [
        make_record("a", "cmip/tas_global_2000.nc", variables=[tas], title="Global temperature",
                    time=("2000-01-01T00:00:00", "2000-12-30T00:00:00"), bbox=[-180, -90, 180, 90], size=5_000),
        make_record("a", "cmip/pr_europe_2001.nc", variables=[pr], title="European precipitation",
                    time=("2001-01-01T00:00:00", "2001-12-31T00:00:00"), bbox=[-10, 35, 30, 70], size=2_500),
        make_record("a", "pacific/tos_2005.nc", variables=[sst], title="Pacific SST across the date line",
                    time=("2005-01-01T00:00:00", "2005-06-30T00:00:00"), bbox=[150, -20, -150, 20], size=8_000),
        make_record("a", "obs/station 1 or 2.nc", variables=[tas], title="Station 1 or 2 observations",
                    time=("1990-01-01T00:00:00", "1990-01-31T00:00:00"), bbox=[5, 50, 5, 50], size=100),
        make_record("a", "arctic/uas.nc", variables=[uas, tas], title="Arctic winds",
                    time=("2010-01-01T00:00:00", "2020-12-31T00:00:00"), bbox=[-180, 60, 180, 90], size=50_000),
        make_record("b", "climate/tas_2070_2099.nc", variables=[tas], title="Projection (360-day calendar)",
                    time=("2070-09-01T00:00:00", "2099-10-01T00:00:00"), bbox=[-8, 49, 2, 61], size=1_000_000),
        make_record("b", "mesh/currents.nc", variables=[uas], title="Unstructured mesh currents",
                    time=None, bbox=[170, -50, 178, -40], size=4_000),
        make_record("b", "named/regions.nc", variables=[pr], title="Named regions only", time=None, bbox=None,
                    size=3_000, attrs={"institution": "Met Office Hadley Centre"}),
        make_record("b", "line/transect.nc", variables=[sst], title="Equator transect",
                    time=("1999-12-31T00:00:00", "2000-01-01T00:00:00"), bbox=[-30, 0, 10, 0], size=700),
        make_record("b", "broken/corrupt.nc", status="error", error="cannot read b:broken/corrupt.nc: OSError: "
                    "NetCDF: HDF error", size=12),
        make_record("b", "weird/quote'\"name.nc", variables=[("x_y", None, "odd \") OR 1=1 -- name")],
                    title="Quotes * and : symbols", size=42),
    ]  # fmt: skip
    for i in range(12):  # enough records for several pages, with ties in size
        out.append(
            make_record(
                "a" if i % 3 else "b",
                f"bulk/file_{i:02d}.nc",
                variables=[tas if i % 2 else pr],
                title=f"Bulk file number {i}",
                time=(f"{1980 + i}-01-01T00:00:00", f"{1980 + i}-12-31T00:00:00"),
                bbox=[-170 + 20 * i, -10, -160 + 20 * i, 10],
                size=1000 * (i % 4),
            )
        )
    return out


# -- the reference ---------------------------------------------------------------------------------------------


@cache
def _points(bbox: tuple[float, ...] | None) -> frozenset[tuple[int, int]]:
    """Whole-degree points inside a box (edges included; 180 and -180 are the same meridian)."""
    if bbox is None:
        return frozenset()
    west, south, east, north = bbox
    lons = [x for x in range(-180, 181) if (west <= x <= east if west <= east else (x >= west or x <= east))]
    lats = [y for y in range(-90, 91) if south <= y <= north]
    return frozenset(((-180 if x == 180 else x), y) for x in lons for y in lats)


def _words(record: DatasetRecord) -> set[str]:
    parts = [record.path, record.region or "", record.error or ""]
    for v in record.variables:
        parts += [v.name, v.standard_name or "", v.long_name or "", v.units or ""]
    for k, val in record.attrs.items():
        parts += [k, str(val)]
    return {w.lower() for w in _WORDS.findall(" ".join(parts))}


def matches(record: DatasetRecord, **q) -> bool:
    """Whether ``record`` answers a query given as CatalogQuery keyword arguments."""
    if q.get("text") is not None:
        words = {w.lower() for w in _WORDS.findall(q["text"])}
        if not words or not words <= _words(record):
            return False
    data_vars = [v for v in record.variables if not v.coordinate]
    if q.get("variable") is not None and q["variable"] not in {v.name for v in data_vars}:
        return False
    if q.get("standard_name") is not None and q["standard_name"] not in {v.standard_name for v in data_vars}:
        return False
    for key in ("region", "status"):
        if q.get(key) is not None and getattr(record, key) != q[key]:
            return False
    if q.get("min_size") is not None and not (record.size is not None and record.size >= q["min_size"]):
        return False
    if q.get("max_size") is not None and not (record.size is not None and record.size <= q["max_size"]):
        return False
    if q.get("time_start") is not None and not (record.time_end and record.time_end >= q["time_start"]):
        return False
    if q.get("time_end") is not None and not (record.time_start and record.time_start <= q["time_end"]):
        return False
    if q.get("bbox") is not None:
        rec_box = tuple(record.bbox) if record.bbox else None
        if not _points(rec_box) & _points(tuple(q["bbox"])):
            return False
    return True
