"""The catalog on projected, grouped, forecast, GRIB and GeoTIFF data, and every file of a region in the catalog.

Every expected box is computed here from the grid and its CRS with pyproj directly: the grid's outline (cell
edges) sampled densely and transformed point by point (``Transformer.transform``), never through the code under
test, and compared within half a grid cell.
"""

from __future__ import annotations

import json
import shutil
import sqlite3  # noqa: F401  before eccodes (and pyproj below), see proximate.catalog.formats.grib.import_cfgrib
from pathlib import Path

import netCDF4
import numpy as np
import pyproj
import pytest
import xarray as xr
from conftest import REAL_DATA

from proximate.catalog import CatalogQuery, open_catalog
from proximate.catalog.extract import extract, extract_in_region
from proximate.catalog.geo import bbox_intersects
from proximate.catalog.indexing import index_region
from proximate.regions import pool_resource

# -- the oracle --------------------------------------------------------------------------------------------------


def outline(x_edges: tuple[float, float], y_edges: tuple[float, float], n: int = 4000) -> tuple[np.ndarray, ...]:
    """A closed rectangle in grid coordinates, ``n`` points per side, in order around it."""
    (x0, x1), (y0, y1) = x_edges, y_edges
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(n, x1), x1 - (x1 - x0) * t, np.full(n, x0)])
    ys = np.concatenate([np.full(n, y0), y0 + (y1 - y0) * t, np.full(n, y1), y1 - (y1 - y0) * t])
    return xs, ys


def expected_box(crs: pyproj.CRS, x_edges, y_edges, *, pole_inside: bool = False) -> list[float]:
    """The lon/lat box of a grid's outline: transform each outline point, unwrap the longitudes along the loop
    (so a crossing of 180 is a continuous run), take extremes; a pole inside means every longitude."""
    base = crs.geodetic_crs
    while base.is_derived:
        base = base.source_crs
    lon, lat = pyproj.Transformer.from_crs(crs, base, always_xy=True).transform(*outline(x_edges, y_edges))
    lon, lat = np.asarray(lon), np.asarray(lat)
    if pole_inside:
        return [-180.0, float(lat.min()), 180.0, 90.0] if lat.max() > 0 else [-180.0, -90.0, 180.0, float(lat.max())]
    un = np.degrees(np.unwrap(np.radians(lon)))
    west, east = float(un.min()), float(un.max())
    wrap = lambda v: (v + 180.0) % 360.0 - 180.0  # noqa: E731
    return [wrap(west), float(lat.min()), wrap(east), float(lat.max())]


def half_cell_degrees(cell_metres: float, box: list[float]) -> tuple[float, float]:
    """Half a grid cell as (longitude, latitude) degrees at the box's most poleward latitude."""
    lat_deg = 0.5 * cell_metres / 111_000.0
    far = min(max(abs(box[1]), abs(box[3])), 89.0)
    return lat_deg / np.cos(np.radians(far)), lat_deg


def assert_box_close(found, expected, tol: tuple[float, float]) -> None:
    assert found is not None, "no bbox"
    dlon = [
        (f - e + 180.0) % 360.0 - 180.0 for f, e in zip((found[0], found[2]), (expected[0], expected[2]), strict=True)
    ]
    assert abs(dlon[0]) <= tol[0] and abs(dlon[1]) <= tol[0], (found, expected, tol)
    assert abs(found[1] - expected[1]) <= tol[1] and abs(found[3] - expected[3]) <= tol[1], (found, expected, tol)


# -- projected CF grids written here -----------------------------------------------------------------------------

#: (name, CF grid-mapping attributes, x centres, y centres, axis units, pole inside). Grids spread over Europe,
#: the Arctic, the antimeridian and a geostationary view.
PROJECTED = [
    ("laea-europe", {"grid_mapping_name": "lambert_azimuthal_equal_area", "latitude_of_projection_origin": 52.0,
                     "longitude_of_projection_origin": 10.0, "false_easting": 4321000.0,
                     "false_northing": 3210000.0}, np.arange(2.5e6, 6.5e6, 50e3), np.arange(1.4e6, 5.4e6, 50e3), "m",
     False),
    ("mercator-fe", {"grid_mapping_name": "mercator", "longitude_of_projection_origin": 0.0,
                     "standard_parallel": 0.0, "false_easting": 1.0e6, "false_northing": 0.0},
     np.arange(0.0, 2.0e6, 25e3), np.arange(4.0e6, 6.0e6, 25e3), "m", False),
    ("polar-arctic", {"grid_mapping_name": "polar_stereographic", "straight_vertical_longitude_from_pole": -45.0,
                      "latitude_of_projection_origin": 90.0, "standard_parallel": 70.0, "false_easting": 0.0,
                      "false_northing": 0.0}, np.arange(-3000.0, 3000.0, 25.0), np.arange(-3000.0, 3000.0, 25.0),
     "km", True),
    ("tm-antimeridian", {"grid_mapping_name": "transverse_mercator", "longitude_of_central_meridian": 177.0,
                         "latitude_of_projection_origin": 0.0, "scale_factor_at_central_meridian": 0.9996,
                         "false_easting": 500000.0, "false_northing": 0.0},
     np.arange(400e3, 1.0e6, 10e3), np.arange(-5.0e6, -4.4e6, 10e3), "m", False),
    ("rotated-pole", {"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": 39.25,
                      "grid_north_pole_longitude": 198.0}, np.arange(-28.0, 18.0, 0.44),
     np.arange(-23.0, 21.0, 0.44), "degrees", False),
    ("geostationary", {"grid_mapping_name": "geostationary", "perspective_point_height": 35786023.0,
                       "semi_major_axis": 6378137.0, "semi_minor_axis": 6356752.31414,
                       "longitude_of_projection_origin": -75.0, "sweep_angle_axis": "x"},
     np.arange(-0.1, 0.1, 0.001), np.arange(0.03, 0.09, 0.001), "rad", False),
]  # fmt: skip

_AXIS_NAMES = {"rotated-pole": ("grid_longitude", "grid_latitude"),
               "geostationary": ("projection_x_angular_coordinate", "projection_y_angular_coordinate")}  # fmt: skip


def write_projected(path: Path, mapping: dict, x: np.ndarray, y: np.ndarray, units: str, name: str) -> None:
    xs, ys = _AXIS_NAMES.get(name, ("projection_x_coordinate", "projection_y_coordinate"))
    ds = xr.Dataset(
        {"tas": (("y", "x"), np.zeros((y.size, x.size), "f4"), {"grid_mapping": "crs", "units": "K"})},
        coords={"x": ("x", x, {"standard_name": xs, "units": units}),
                "y": ("y", y, {"standard_name": ys, "units": units}),
                "crs": ((), 0, mapping)},
    )  # fmt: skip
    ds.to_netcdf(path)


def grid_metres(name: str, x: np.ndarray, units: str, mapping: dict) -> float:
    step = float(np.diff(x)[0])
    return {
        "km": step * 1e3,
        "degrees": step * 111_000.0,
        "rad": step * mapping.get("perspective_point_height", 1),
    }.get(units, step)


def cf_extent(values: np.ndarray, scale: float = 1.0) -> tuple[float, float]:
    half = float(np.diff(values)[0]) / 2
    return (float(values.min()) - half) * scale, (float(values.max()) + half) * scale


@pytest.mark.parametrize(("name", "mapping", "x", "y", "units", "pole"), PROJECTED, ids=[p[0] for p in PROJECTED])
def test_projected_grid_bbox_from_grid_mapping(tmp_path, name, mapping, x, y, units, pole):
    path = tmp_path / f"{name}.nc"
    write_projected(path, mapping, x, y, units, name)
    rec = extract(path)
    crs = pyproj.CRS.from_cf(mapping)
    scale = {"km": 1000.0, "rad": mapping.get("perspective_point_height", 1.0)}.get(units, 1.0)
    expected = expected_box(crs, cf_extent(x, scale), cf_extent(y, scale), pole_inside=pole)
    assert_box_close(rec.bbox, expected, half_cell_degrees(grid_metres(name, x, units, mapping), expected))
    assert rec.variable_names == ["tas"]


def test_polar_and_antimeridian_boxes_are_searchable_where_they_are(tmp_path):
    boxes = {}
    for name, mapping, x, y, units, _pole in PROJECTED:
        write_projected(tmp_path / f"{name}.nc", mapping, x, y, units, name)
        boxes[name] = extract(tmp_path / f"{name}.nc").bbox
    assert boxes["tm-antimeridian"][0] > boxes["tm-antimeridian"][2]  # it crosses 180
    assert boxes["polar-arctic"][3] == 90.0 and boxes["polar-arctic"][0] == -180.0
    hits = lambda q: {n for n, b in boxes.items() if bbox_intersects(b, q)}  # noqa: E731
    assert hits([170.0, -50.0, -170.0, -35.0]) == {"tm-antimeridian"}
    assert hits([100.0, 85.0, 110.0, 89.0]) == {"polar-arctic"}


# -- projected grids of real files (lat/lon removed: only the CRS tells) ------------------------------------------

#: small_rotPole_precipitation.nc is left out: its 2-D lat/lon follow a pole at (39.25, -162) but its
#: rotated_pole variable says (18, -140.75), so the file disagrees with itself (checked with pyproj by hand).
REAL_PROJECTED = {"test_lcc.nc": ("x", "y"), "tmean_1910_1910.nc": ("x", "y")}


@pytest.mark.parametrize("name", sorted(REAL_PROJECTED))
def test_real_projected_file_without_lat_lon_gets_its_box_from_the_crs(tmp_path, name):
    """The file's own 2-D lat/lon (cell centres) are the oracle: the CRS box of the cell edges lies within half
    a cell of theirs."""
    with netCDF4.Dataset(REAL_DATA / name) as src:
        lat, lon = (np.ma.filled(src[v][:].astype(float), np.nan) for v in ("lat", "lon"))
        xname, _yname = REAL_PROJECTED[name]
        step = abs(float(np.diff(src[xname][:])[0]))
        metres = step * 111_000.0 if src[xname].units == "degrees" else step
    ds = xr.open_dataset(REAL_DATA / name, decode_times=False).drop_vars(["lat", "lon"])
    for var in ds.variables.values():
        var.attrs.pop("coordinates", None)
        var.encoding.pop("coordinates", None)
    ds.to_netcdf(tmp_path / name)
    rec = extract(tmp_path / name)
    expected = [float(np.nanmin(lon)), float(np.nanmin(lat)), float(np.nanmax(lon)), float(np.nanmax(lat))]
    # A corner cell's centre lies half a cell diagonal (sqrt 2 half-cells) inside the outline's corner; the
    # writers' float32 lat/lon and own ellipsoid add a little (test_lcc.nc: 1.5 half-cells): one cell.
    lon_tol, lat_tol = half_cell_degrees(metres, expected)
    assert_box_close(rec.bbox, expected, (2 * lon_tol, 2 * lat_tol))


# -- coordinates that must not be trusted as they are ------------------------------------------------------------


def test_radians_garbage_bounds_and_scalar_points(tmp_path):
    lat = np.radians(np.arange(40.0, 50.5, 0.5))
    lon = np.radians(np.arange(-10.0, 5.5, 0.5))
    ds = xr.Dataset(
        {"sst": (("lat", "lon"), np.zeros((lat.size, lon.size), "f4"))},
        coords={
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "radians", "bounds": "lat_bnds"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "rad"}),
            "lat_bnds": (("lat", "nv"), np.tile([0.0, 6.9e-310], (lat.size, 1))),  # garbage a writer left
            "sub_lat": ((), 0.0, {"standard_name": "latitude", "units": "degrees_north"}),  # a satellite's nadir
            "sub_lon": ((), -137.0, {"standard_name": "longitude", "units": "degrees_east"}),
        },
    )
    ds.to_netcdf(tmp_path / "rad.nc")
    rec = extract(tmp_path / "rad.nc")
    assert rec.bbox == pytest.approx([-10.0, 40.0, 5.0, 50.0])
    assert any("lat_bnds" in w and "bracket" in w for w in rec.warnings)


def test_geostationary_full_disk_with_a_scalar_nadir(tmp_path):
    """A GOES-like full disk: corners look at space; the scalar sub-satellite point is not the footprint."""
    h = 35786023.0
    mapping = {"grid_mapping_name": "geostationary", "perspective_point_height": h, "semi_major_axis": 6378137.0,
               "semi_minor_axis": 6356752.31414, "longitude_of_projection_origin": -75.0,
               "sweep_angle_axis": "x"}  # fmt: skip
    x = np.arange(-0.151844, 0.151844, 0.0028)
    ds = xr.Dataset(
        {"cmi": (("y", "x"), np.zeros((x.size, x.size), "f4"), {"grid_mapping": "goes_imager_projection"})},
        coords={"x": ("x", x, {"standard_name": "projection_x_angular_coordinate", "units": "rad"}),
                "y": ("y", x[::-1], {"standard_name": "projection_y_angular_coordinate", "units": "rad"}),
                "goes_imager_projection": ((), 0, mapping),
                "nominal_satellite_subpoint_lat": ((), 0.0, {"standard_name": "latitude", "units": "degrees_north"}),
                "nominal_satellite_subpoint_lon": ((), -75.0, {"standard_name": "longitude", "units": "degrees_east"})},
    )  # fmt: skip
    ds.to_netcdf(tmp_path / "goes.nc")
    rec = extract(tmp_path / "goes.nc")
    crs = pyproj.CRS.from_cf(mapping)
    edges = np.linspace(x.min() - 0.0014, x.max() + 0.0014, 1500) * h  # the cells' outer edges, densely
    xx, yy = np.meshgrid(edges, edges)
    lon, lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(xx, yy)
    ok = np.isfinite(lon) & np.isfinite(lat)
    expected = [float(lon[ok].min()), float(lat[ok].min()), float(lon[ok].max()), float(lat[ok].max())]
    assert_box_close(rec.bbox, expected, (2.0, 1.0))  # the disk's edge, a cell of 10 km at nadir widened there


# -- groups and forecasts ----------------------------------------------------------------------------------------


def test_netcdf4_groups_are_read_with_their_paths(tmp_path):
    path = tmp_path / "grouped.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.title = "grouped"
        g = ds.createGroup("science").createGroup("grids")
        g.createDimension("lat", 5)
        g.createDimension("lon", 4)
        g.createDimension("time", 2)
        for name, values, units in (("lat", np.linspace(-60, -40, 5), "degrees_north"),
                                    ("lon", np.linspace(20, 50, 4), "degrees_east")):  # fmt: skip
            v = g.createVariable(name, "f8", (name,))
            v.units = units
            v[:] = values
        t = g.createVariable("time", "f8", ("time",))
        t.units, t.standard_name = "days since 2020-01-01", "time"
        t[:] = [0, 31]
        sic = g.createVariable("sic", "f4", ("time", "lat", "lon"))
        sic.standard_name = "sea_ice_area_fraction"
    rec = extract(path)
    assert rec.variable_names == ["science/grids/sic"] and rec.standard_names == ["sea_ice_area_fraction"]
    assert rec.bbox == [20.0, -60.0, 50.0, -40.0]
    assert (rec.time_start, rec.time_end) == ("2020-01-01T00:00:00", "2020-02-01T00:00:00")
    sic = next(v for v in rec.variables if v.name == "science/grids/sic")
    assert sic.dims == ["science/grids/time", "science/grids/lat", "science/grids/lon"]
    assert rec.title == "grouped"


def test_zarr_groups_are_read_with_their_paths(tmp_path):
    store = tmp_path / "nested"  # a store not named *.zarr
    xr.Dataset(attrs={"title": "root"}).to_zarr(store, mode="w", consolidated=False)
    ds = xr.Dataset(
        {"t2m": (("lat", "lon"), np.zeros((3, 3), "f4"), {"units": "K"})},
        coords={"lat": ("lat", [60.0, 65.0, 70.0], {"units": "degrees_north"}),
                "lon": ("lon", [5.0, 10.0, 15.0], {"units": "degrees_east"})},
    )  # fmt: skip
    ds.to_zarr(store, group="member/0", mode="a", consolidated=False)
    rec = extract(store)
    assert rec.format == "zarr" and rec.variable_names == ["member/0/t2m"]
    assert rec.bbox == [5.0, 60.0, 15.0, 70.0] and rec.title == "root"


def test_forecast_reference_time_plus_forecast_period(tmp_path):
    ds = xr.Dataset(
        {"tas": (("forecast_period",), np.zeros(3, "f4"))},
        coords={
            "forecast_period": ("forecast_period", [6.0, 12.0, 48.0],
                                {"standard_name": "forecast_period", "units": "hours"}),
            "forecast_reference_time": ((), 24.0, {"standard_name": "forecast_reference_time",
                                                   "units": "hours since 2024-03-01 00:00"}),
        },
    )  # fmt: skip
    ds.to_netcdf(tmp_path / "fc.nc")
    rec = extract(tmp_path / "fc.nc")
    # 2024-03-02T00 plus 6 h and plus 48 h, computed by hand
    assert (rec.time_start, rec.time_end) == ("2024-03-02T06:00:00", "2024-03-04T00:00:00")


# -- GRIB and GeoTIFF --------------------------------------------------------------------------------------------


def write_grib(path: Path, sample: str, **keys) -> dict:
    """One GRIB message from an ecCodes sample template, with ``keys`` set; returns the keys it holds."""
    import eccodes

    h = eccodes.codes_grib_new_from_samples(sample)
    try:
        for k, v in keys.items():
            eccodes.codes_set(h, k, v)
        n = eccodes.codes_get(h, "numberOfValues")
        eccodes.codes_set_values(h, np.linspace(250.0, 300.0, n))
        with open(path, "ab") as fh:
            eccodes.codes_write(h, fh)
        names = ("gridType", "Ni", "Nj", "shortName", "dataDate", "dataTime", "step")
        return {k: eccodes.codes_get(h, k) for k in names} | {
            "lats": eccodes.codes_get_array(h, "latitudes"),
            "lons": eccodes.codes_get_array(h, "longitudes")}  # fmt: skip
    finally:
        eccodes.codes_release(h)


def test_grib_regular_and_polar_stereographic(tmp_path):
    path = tmp_path / "fields.bin"  # no suffix: content decides
    info = write_grib(path, "regular_ll_sfc_grib2", stepRange="6", dataDate=20240301, dataTime=0)
    rec = extract(path)
    assert rec.format == "grib" and rec.variable_names == ["t"] and rec.standard_names == ["air_temperature"]
    lons = np.where(info["lons"] >= 180, info["lons"] - 360, info["lons"])
    assert rec.bbox == pytest.approx([lons.min(), info["lats"].min(), lons.max(), info["lats"].max()])
    assert rec.time_start == rec.time_end == "2024-03-01T06:00:00"  # valid time: date plus step 6 h
    assert not list(tmp_path.glob("*.idx"))  # cfgrib wrote no index beside the file

    polar = tmp_path / "polar.grib2"
    info = write_grib(polar, "polar_stereographic_sfc_grib2")
    rec = extract(polar)
    lons = np.where(info["lons"] >= 180, info["lons"] - 360, info["lons"])
    box = rec.bbox
    assert box[1] == pytest.approx(info["lats"].min()) and box[3] == pytest.approx(info["lats"].max())
    assert all(bbox_intersects(box, [lo, la, lo, la]) for lo, la in zip(lons, info["lats"], strict=True))


def write_geotiff(path: Path, epsg: int, west: float, north: float, cell: float, width: int, height: int) -> None:
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": width, "height": height, "count": 2, "dtype": "uint16",
               "crs": f"EPSG:{epsg}", "transform": from_origin(west, north, cell, cell), "tiled": True,
               "blockxsize": 16, "blockysize": 16}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.arange(2 * width * height, dtype="uint16").reshape(2, height, width))
        dst.set_band_description(1, "red")
        dst.set_band_description(2, "nir")


def test_geotiff_bands_and_box_from_its_crs(tmp_path):
    path = tmp_path / "scene.tif"
    write_geotiff(path, 3577, 1_000_000.0, -3_000_000.0, 30.0 * 100, 64, 48)  # EPSG:3577, the EASI Landsat CRS
    rec = extract(path)
    assert rec.format == "geotiff"
    assert rec.variable_names == ["band_1", "band_2"]
    assert [v.long_name for v in rec.data_variables] == ["red", "nir"]
    crs = pyproj.CRS.from_epsg(3577)
    expected = expected_box(crs, (1_000_000.0, 1_000_000.0 + 64 * 3000.0), (-3_000_000.0 - 48 * 3000.0, -3_000_000.0))
    assert_box_close(rec.bbox, expected, half_cell_degrees(3000.0, expected))


# -- a whole region: every file gets a record --------------------------------------------------------------------


@pytest.fixture
def mixed_region(region_roots, tmp_path):
    folder = f"mixed-{tmp_path.name}"
    root = region_roots["a"] / folder
    root.mkdir()
    write_grib(root / "era.grib", "regular_ll_sfc_grib2", stepRange="6")
    write_geotiff(root / "landsat.tif", 3577, 1_000_000.0, -3_000_000.0, 3000.0, 64, 48)
    (root / "modis.hdf").write_bytes(b"\x0e\x03\x13\x01" + bytes(2044))  # HDF4's signature: recognised, not read
    good = (REAL_DATA / "test_lcc.nc").read_bytes()
    (root / "cut.nc").write_bytes(good[: len(good) // 3])  # truncated
    (root / "noise.dat").write_bytes(bytes(range(256)) * 4)  # nothing anyone reads
    # HDF5 behind a 512-byte user block (netCDF-C reads it; the magic is not at byte 0)
    import h5py

    with h5py.File(root / "userblock.h5", "w", userblock_size=512) as f:
        f.create_dataset("x", data=np.arange(4.0))
    # Zarr stores: one not named *.zarr, one with broken JSON
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_zarr(root / "plainstore", consolidated=False)
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_zarr(root / "broken.zarr", consolidated=False, zarr_format=2)
    (root / "broken.zarr" / "v" / ".zarray").write_text('{"zarr_format": 2, "shape": [3')
    for name, mapping, x, y, units, _pole in PROJECTED:
        write_projected(root / f"{name}.nc", mapping, x, y, units, name)
    return folder


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_every_file_of_a_region_gets_a_record(client, tmp_path, mixed_region, region_roots):
    with open_catalog("sqlite", sqlite_path=tmp_path / "c.sqlite") as cat:
        report = index_region(client, cat, "a")
        found = {r.path.split("/", 1)[1]: r for r in cat.search(CatalogQuery(region="a", page_size=500)).records
                 if r.path.startswith(mixed_region + "/")}  # fmt: skip
        on_disk = {p.name for p in (region_roots["a"] / mixed_region).iterdir()}
        assert set(found) == on_disk
        status = {n: (r.status, r.format) for n, r in found.items()}
        assert status["era.grib"] == ("ok", "grib") and status["landsat.tif"] == ("ok", "geotiff")
        assert status["userblock.h5"] == ("ok", "netcdf")
        assert status["plainstore"] == ("ok", "zarr")
        assert status["modis.hdf"] == ("unsupported", "hdf4") and "HDF4" in found["modis.hdf"].error
        assert status["noise.dat"][0] == "unsupported" and "not recognised" in found["noise.dat"].error
        assert status["cut.nc"][0] == "error" and "truncated" in found["cut.nc"].error
        assert status["broken.zarr"][0] == "error" and "v/.zarray" in found["broken.zarr"].error
        mine = {p for p, _ in report.unsupported if p.startswith(mixed_region + "/")}  # region a is shared
        assert mine == {f"{mixed_region}/modis.hdf", f"{mixed_region}/noise.dat"}
        # the reasons are searchable
        assert f"{mixed_region}/modis.hdf" in {r.path for r in cat.search(CatalogQuery(text="HDF4")).records}
        # bbox searches: Europe, the Arctic, across the antimeridian
        regions = {"europe": [0.0, 45.0, 20.0, 60.0], "arctic": [-30.0, 80.0, 30.0, 89.0],
                   "antimeridian": [175.0, -45.0, -175.0, -40.0]}  # fmt: skip
        for _where, box in regions.items():
            hits = {r.path.split("/", 1)[1] for r in cat.search(CatalogQuery(bbox=box, page_size=500)).records
                    if r.path.startswith(mixed_region + "/")}  # fmt: skip
            expected = {n for n, r in found.items() if r.bbox is not None and bbox_intersects(r.bbox, box)}
            assert hits == expected
        europe = {
            r.path.split("/", 1)[1] for r in cat.search(CatalogQuery(bbox=regions["europe"], page_size=500)).records
        }
        assert {"laea-europe.nc", "era.grib"} <= europe and "tm-antimeridian.nc" not in europe
        arctic = {
            r.path.split("/", 1)[1] for r in cat.search(CatalogQuery(bbox=regions["arctic"], page_size=500)).records
        }
        assert "polar-arctic.nc" in arctic and "landsat.tif" not in arctic
        anti = {
            r.path.split("/", 1)[1]
            for r in cat.search(CatalogQuery(bbox=regions["antimeridian"], page_size=500)).records
        }
        assert anti & set(found) == {"tm-antimeridian.nc"}


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_grib_and_geotiff_open_in_their_region(client, mixed_region):
    import proximate

    grib = proximate.open_dataset("a", f"{mixed_region}/era.grib")
    tif = proximate.open_dataset("a", f"{mixed_region}/landsat.tif")
    with proximate.locality() as report:
        t_mean = float(grib["t"].mean().compute())
        band = int(tif["band_2"].sum().compute())
    assert t_mean == pytest.approx(275.0, abs=0.01)  # linspace(250, 300) written above
    assert band == int(np.arange(2 * 64 * 48)[64 * 48 :].sum())
    assert set(report.tasks_by_region) == {"a"}


def test_extract_in_region_names_a_broken_zarr_json(client, region_roots, tmp_path):
    folder = region_roots["a"] / f"zjson-{tmp_path.name}"
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_zarr(folder / "s.zarr", consolidated=False)
    meta = folder / "s.zarr" / "v" / "zarr.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()))[:-5])
    rec = client.submit(extract_in_region, "a", f"{folder.name}/s.zarr", resources={pool_resource("a"): 0},
                        pure=False).result()  # fmt: skip
    assert rec.status == "error" and "v/zarr.json" in rec.error and "JSONDecodeError" not in rec.error.split(":")[0]
    shutil.rmtree(folder)


# -- STAC ------------------------------------------------------------------------------------------------------


def test_export_stac_reads_back_with_pystac(tmp_path):
    import subprocess
    import sys

    import pystac

    from proximate.catalog.records import DatasetRecord

    recs = [
        DatasetRecord(id="r1", region="eu", path="laea.nc", format="netcdf", bbox=[-20.0, 30.0, 40.0, 70.0],
                      time_start="2020-01-01T00:00:00", time_end="2020-12-31T00:00:00", size=10, mtime_ns=1),
        DatasetRecord(id="r2", region="pacific", path="tm.nc", format="netcdf", bbox=[175.0, -45.0, -175.0, -40.0],
                      size=5, mtime_ns=1_700_000_000_000_000_000),
        DatasetRecord(id="r3", region="eu", path="modis.hdf", format="hdf4", status="unsupported",
                      error="format not supported: modis.hdf is HDF4", size=3, mtime_ns=1),
    ]  # fmt: skip
    db = tmp_path / "c.sqlite"
    with open_catalog("sqlite", sqlite_path=db) as cat:
        cat.upsert(recs)
    out = tmp_path / "stac"
    done = subprocess.run([sys.executable, "-m", "proximate.cli", "catalog", "export-stac", str(out), "--catalog",
                           str(db)], capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == str(out / "catalog.json")
    root = pystac.Catalog.from_file(str(out / "catalog.json"))
    collections = {c.id: c for c in root.get_collections()}
    assert set(collections) == {"eu", "pacific"}
    items = {i.id: i for c in collections.values() for i in c.get_items()}
    assert set(items) == {"r1", "r2", "r3"}
    assert items["r1"].bbox == [-20.0, 30.0, 40.0, 70.0] and items["r1"].geometry["type"] == "Polygon"
    assert items["r2"].geometry["type"] == "MultiPolygon"  # split at 180
    assert items["r1"].common_metadata.start_datetime.year == 2020
    assert (
        items["r3"].properties["proximate:status"] == "unsupported"
        and "HDF4" in items["r3"].properties["proximate:error"]
    )
    assert items["r1"].assets["data"].href.endswith("eu:laea.nc")
