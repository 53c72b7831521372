"""The catalog's misses on real files, each on a file written here the way the real ones are: a CRS as PROJ or
WKT text in a data variable's own ``crs`` attribute (old GDAL and rioxarray), a monthly mean's validity given by
its ``forecast_period`` bounds, GRIB sent as WMO bulletins (a heading before each message), and a global UGRID
mesh given by its nodes alone.

Oracles are computed here without the code under test: boxes from pyproj over the grid's densified outline
(:func:`test_catalog_real_data.expected_box`), times by hand, GRIB points from ecCodes, mesh extents from numpy.
"""

from __future__ import annotations

import sqlite3  # noqa: F401  before eccodes (and pyproj below), see proximate.catalog.formats.grib.import_cfgrib

import numpy as np
import pyproj
import pytest
import xarray as xr
from test_catalog_real_data import assert_box_close, expected_box, half_cell_degrees

from proximate.catalog import CatalogQuery, open_catalog
from proximate.catalog.bbox import NODE_GAP_DEGREES
from proximate.catalog.extract import extract
from proximate.formats import WMO_SCAN_BYTES, UnsupportedFormatError, detect_format

GLOBAL = [-180.0, -90.0, 180.0, 90.0]


def search(tmp_path, records, **query) -> list[str]:
    """Paths that a SQLite catalog holding ``records`` answers ``query`` with."""
    cat = open_catalog("sqlite", sqlite_path=tmp_path / "catalog.sqlite")
    try:
        cat.upsert(records)
        return sorted(r.path for r in cat.search(CatalogQuery(**query)).records)
    finally:
        cat.close()


# -- a. a CRS as text in a data variable's own attribute ---------------------------------------------------------

UTM33 = pyproj.CRS.from_epsg(32633)
LAEA_PROJ = "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=m +no_defs"
LAEA = pyproj.CRS.from_proj4(LAEA_PROJ)


@pytest.mark.parametrize(
    ("crs_text", "crs"),
    [(UTM33.to_wkt(), UTM33), ("+proj=utm +zone=33 +datum=WGS84 +units=m +no_defs", UTM33),
     (LAEA.to_wkt(version="WKT1_GDAL"), LAEA), (LAEA_PROJ, LAEA)],
    ids=["utm-wkt2", "utm-proj", "laea-wkt1-gdal", "laea-proj"],
)  # fmt: skip
def test_crs_text_in_the_data_variables_own_attribute_gives_its_box(tmp_path, crs_text, crs):
    # As GDAL's old netCDF driver and rioxarray wrote it: x/y without standard names, no grid_mapping, the CRS on
    # the band itself.
    x = np.arange(400_000.0, 700_001.0, 5_000.0) + (3.0e6 if crs is LAEA else 0.0)
    y = np.arange(5_600_000.0, 5_200_000.0 - 1, -5_000.0) - (2.5e6 if crs is LAEA else 0.0)
    ds = xr.Dataset(
        {"band1": (("y", "x"), np.zeros((y.size, x.size), "f4"), {"crs": crs_text})}, coords={"x": x, "y": y}
    )
    ds.to_netcdf(tmp_path / "band.nc")
    rec = extract(tmp_path / "band.nc")
    half = 2_500.0
    expected = expected_box(crs, (x.min() - half, x.max() + half), (y.min() - half, y.max() + half))
    assert_box_close(rec.bbox, expected, half_cell_degrees(5_000.0, expected))
    lon, lat = (expected[0] + expected[2]) / 2, (expected[1] + expected[3]) / 2
    assert search(tmp_path, [rec], bbox=[lon, lat, lon + 0.01, lat + 0.01]) == [rec.path]


def test_crs_text_pyproj_refuses_is_named_and_gives_no_box(tmp_path):
    ds = xr.Dataset(
        {"band1": (("y", "x"), np.zeros((3, 4), "f4"), {"crs": "+proj=nonsense +zone=99"})},
        coords={"x": np.arange(4.0), "y": np.arange(3.0)},
    )
    ds.to_netcdf(tmp_path / "bad.nc")
    rec = extract(tmp_path / "bad.nc")
    assert rec.bbox is None and rec.status == "ok"
    assert any("'band1'" in w and "not a CRS pyproj understands" in w for w in rec.warnings), rec.warnings


# -- b. a forecast period's bounds ------------------------------------------------------------------------------


def write_monthly_mean(path, *, scalar: bool) -> None:
    """A January 2024 monthly mean as Iris writes one: reference time at the month's start, forecast period at
    its middle (372 h) with bounds covering the month (0..744 h), and no time coordinate."""
    dims = () if scalar else ("forecast_period",)
    bounds = [0.0, 744.0] if scalar else [[0.0, 744.0]]
    ds = xr.Dataset(
        {"tas": (dims, np.float32(280.0) if scalar else np.zeros(1, "f4"), {"cell_methods": "forecast_period: mean"})},
        coords={
            "forecast_period": (dims, 372.0 if scalar else [372.0],
                                {"standard_name": "forecast_period", "units": "hours",
                                 "bounds": "forecast_period_bnds"}),
            "forecast_period_bnds": ((*dims, "bnds"), bounds),
            "forecast_reference_time": ((), 0.0, {"standard_name": "forecast_reference_time",
                                                  "units": "hours since 2024-01-01 00:00"}),
        },
    )  # fmt: skip
    ds.to_netcdf(path)


@pytest.mark.parametrize("scalar", [True, False], ids=["scalar-period", "period-axis"])
def test_monthly_mean_is_valid_over_its_forecast_period_bounds(tmp_path, scalar):
    write_monthly_mean(tmp_path / "tas_jan.nc", scalar=scalar)
    rec = extract(tmp_path / "tas_jan.nc")
    # 2024-01-01T00 plus 0 h and plus 744 h (31 days), by hand
    assert (rec.time_start, rec.time_end) == ("2024-01-01T00:00:00", "2024-02-01T00:00:00")
    inside = dict(time_start="2024-01-03T00:00:00", time_end="2024-01-04T00:00:00")  # before the middle (16th)
    assert search(tmp_path, [rec], **inside) == [rec.path]
    assert search(tmp_path, [rec], time_start="2024-02-02T00:00:00", time_end="2024-02-03T00:00:00") == []


# -- c. GRIB behind WMO bulletin headings -----------------------------------------------------------------------


def grib_message(date: int, step: str) -> tuple[bytes, np.ndarray, np.ndarray]:
    """One GRIB 2 message from ecCodes' sample, with its points' latitudes and longitudes."""
    import eccodes

    h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
    try:
        eccodes.codes_set(h, "dataDate", date)
        eccodes.codes_set(h, "dataTime", 0)
        eccodes.codes_set(h, "stepRange", step)
        eccodes.codes_set_values(h, np.linspace(250.0, 300.0, eccodes.codes_get(h, "numberOfValues")))
        return (eccodes.codes_get_message(h), eccodes.codes_get_array(h, "latitudes"),
                eccodes.codes_get_array(h, "longitudes"))  # fmt: skip
    finally:
        eccodes.codes_release(h)


@pytest.mark.parametrize(
    "heading",
    [b"\x01\r\r\n%03d\r\r\nHTXA50 KWBC 010000\r\r\n", b"HTXA50 KWBC 010000 RRA\n",
     b"00001234" + b"00" + b"\x01\r\r\n%03d\r\r\nYTXA50 EGRR 010000\r\r\n"],
    ids=["gts", "plain-lf-bbb", "ftp-length-prefix"],
)  # fmt: skip
def test_grib_behind_wmo_bulletin_headings_is_read(tmp_path, heading):
    first, lats, lons = grib_message(20240301, "6")
    second, _, _ = grib_message(20240301, "12")
    path = tmp_path / "bulletins.bin"
    with open(path, "wb") as fh:
        for number, message in enumerate((first, second)):
            fh.write((heading % number if b"%03d" in heading else heading) + message + b"\r\r\n\x03")
    assert detect_format(path) == "grib"
    rec = extract(path)
    assert rec.status == "ok" and rec.format == "grib" and rec.variable_names == ["t"], rec.error
    west_east = np.where(lons >= 180, lons - 360, lons)
    assert rec.bbox == pytest.approx([west_east.min(), lats.min(), west_east.max(), lats.max()])
    assert (rec.time_start, rec.time_end) == ("2024-03-01T06:00:00", "2024-03-01T12:00:00")  # date plus 6 h, 12 h


def test_grib_far_behind_a_heading_or_without_one_is_not_grib(tmp_path):
    message, _, _ = grib_message(20240301, "6")
    far = tmp_path / "far.bin"  # a heading, then GRIB only after the bounded scan
    far.write_bytes(b"HTXA50 KWBC 010000\r\r\n" + b"\x00" * WMO_SCAN_BYTES + message)
    text = tmp_path / "notes.txt"  # text that mentions GRIB is not a bulletin
    text.write_bytes(b"These notes say GRIB files are read by cfgrib.\n" + message)
    for path in (far, text):
        assert detect_format(path) == "unknown"
        with pytest.raises(UnsupportedFormatError, match=f"format not recognised: {path.name}"):
            extract(path)


# -- d. a global UGRID mesh given by its nodes alone ------------------------------------------------------------


def write_node_mesh(path, lon: np.ndarray, lat: np.ndarray) -> None:
    """A UGRID 2-D mesh with node coordinates and data on the nodes, and no face connectivity."""
    ds = xr.Dataset(
        {
            "mesh": ((), 0, {"cf_role": "mesh_topology", "topology_dimension": 2,
                             "node_coordinates": "mesh_node_x mesh_node_y"}),
            "mesh_node_x": ("nmesh_node", lon, {"standard_name": "longitude", "units": "degrees_east"}),
            "mesh_node_y": ("nmesh_node", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "zeta": ("nmesh_node", np.zeros(lon.size, "f4"), {"mesh": "mesh", "location": "node"}),
        }
    )  # fmt: skip
    ds.to_netcdf(path)


def fibonacci_nodes(n: int, lat_limit: float = 90.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` nodes spread evenly over the sphere (a Fibonacci lattice), those beyond ``lat_limit`` dropped."""
    k = np.arange(n) + 0.5
    lat = np.degrees(np.arcsin(1.0 - 2.0 * k / n))
    lon = (np.degrees(np.pi * (1.0 + 5.0**0.5) * k) + 180.0) % 360.0 - 180.0
    keep = np.abs(lat) <= lat_limit
    return lon[keep], lat[keep]


def widest_gap(lon: np.ndarray) -> float:
    u = np.sort(np.unique((lon + 180.0) % 360.0 - 180.0))
    return float(np.max(np.diff(np.append(u, u[0] + 360.0))))


def test_global_node_only_mesh_is_global_and_regional_ones_keep_their_box(tmp_path):
    # A global mesh of 2,562 nodes (an icosahedral mesh's count at level 4): points alone would leave the widest
    # gap between its longitudes out of its box; its nodes leave no gap near NODE_GAP_DEGREES.
    lon, lat = fibonacci_nodes(2562)
    assert widest_gap(lon) < NODE_GAP_DEGREES and lat.max() > 90.0 - NODE_GAP_DEGREES
    write_node_mesh(tmp_path / "global.nc", lon, lat)
    # The same nodes in 0..360 (how many ocean models write them) and a tropical channel (+-30, all longitudes).
    write_node_mesh(tmp_path / "global360.nc", lon % 360.0, lat)
    band_lon, band_lat = fibonacci_nodes(2562, lat_limit=30.0)
    write_node_mesh(tmp_path / "band.nc", band_lon, band_lat)
    # A regional mesh across the antimeridian (160E..160W): its box is its nodes' extremes.
    rng = np.random.default_rng(7)
    reg_lon = (rng.uniform(160.0, 200.0, 800) + 180.0) % 360.0 - 180.0
    reg_lat = rng.uniform(-50.0, -30.0, 800)
    write_node_mesh(tmp_path / "regional.nc", reg_lon, reg_lat)

    recs = {p: extract(tmp_path / p) for p in ("global.nc", "global360.nc", "band.nc", "regional.nc")}
    assert recs["global.nc"].bbox == GLOBAL and recs["global360.nc"].bbox == GLOBAL
    assert recs["band.nc"].bbox == [-180.0, float(band_lat.min()), 180.0, float(band_lat.max())]
    east_of_160 = reg_lon[reg_lon > 0]
    assert recs["regional.nc"].bbox == pytest.approx(
        [float(east_of_160.min()), float(reg_lat.min()), float(reg_lon[reg_lon < 0].max()), float(reg_lat.max())]
    )
    # A search in the widest gap the points left, and one at the pole, find the global meshes.
    u = np.sort((lon + 180.0) % 360.0 - 180.0)
    i = int(np.argmax(np.diff(u)))
    middle = float((u[i] + u[i + 1]) / 2)
    found = search(tmp_path, list(recs.values()), bbox=[middle, 10.0, middle, 10.0])
    assert found == sorted([recs["global.nc"].path, recs["global360.nc"].path, recs["band.nc"].path])
    found = search(tmp_path, list(recs.values()), bbox=[0.0, 89.99, 1.0, 90.0])
    assert found == sorted([recs["global.nc"].path, recs["global360.nc"].path])
