"""Metadata extraction on real files (read in region a, by a worker of that region) and on generated NetCDF and
Zarr stores. Every expected bbox and time span is computed here with netCDF4/cftime/numpy directly."""

from __future__ import annotations

import shutil

import cftime
import netCDF4
import numpy as np
import pytest
import xarray as xr
from conftest import REAL_DATA

from proximate.catalog.extract import extract, extract_in_region
from proximate.catalog.geo import bbox_intersects, lon_extent
from proximate.catalog.records import DatasetRecord, merge_with_previous, record_id
from proximate.regions import pool_resource

REAL_FILES = sorted(p.name for p in REAL_DATA.glob("*.nc"))

#: Which variables hold latitude/longitude in each real file (read off the headers), and whether the file's
#: longitudes are a regular axis meant to circle the globe. None: the file has no spatial grid.
GRID = {
    "21_triangle_example.nc": ("mesh_node_lat mesh_face_lat mesh_edge_lat mesh_boundary_lat",
                               "mesh_node_lon mesh_face_lon mesh_edge_lon mesh_boundary_lon"),
    "A1B-99999a-river-sep-2070-2099.nc": None,
    "SMALL_total_column_co2.nc": ("latitude", "longitude"),
    "basin_mask.nc": ("Y", "X"),
    "cell_methods.nc": ("lat", "lon"),
    "eraint_uvz.nc": ("latitude", "longitude"),
    "small_rotPole_precipitation.nc": ("lat", "lon"),
    "test_lcc.nc": ("lat", "lon"),
    "tmean_1910_1910.nc": ("lat", "lon"),
    "units.nc": None,
}  # fmt: skip
#: The time coordinate of each file and its bounds variable; None: no decodable CF time.
TIME = {
    "21_triangle_example.nc": None,
    "A1B-99999a-river-sep-2070-2099.nc": ("time", "climatology_bounds"),
    "SMALL_total_column_co2.nc": ("time", None),
    "basin_mask.nc": None,
    "cell_methods.nc": ("time", None),
    "eraint_uvz.nc": None,  # a 'month' dimension without units
    "small_rotPole_precipitation.nc": ("time", "time_bnds"),
    "test_lcc.nc": ("time", "time_bnds"),
    "tmean_1910_1910.nc": ("time", "climatology_bounds"),
    "units.nc": None,  # units 'wibble'
}


def expected_bbox(name: str) -> list[float] | None:
    grid = GRID[name]
    if grid is None:
        return None
    with netCDF4.Dataset(REAL_DATA / name) as ds:
        lat = np.concatenate([np.ma.filled(ds[v][:].astype(float), np.nan).ravel() for v in grid[0].split()])
        lon = np.concatenate([np.ma.filled(ds[v][:].astype(float), np.nan).ravel() for v in grid[1].split()])
        lon = lon[np.isfinite(lon)]
        lon = np.where(lon >= 180, lon - 360, lon)
        axis = ds[grid[1].split()[0]]
        step = np.diff(np.sort(lon))
        is_global = axis.ndim == 1 and np.allclose(step, step[0]) and np.isclose(step[0] * lon.size, 360.0)
    west, east = (-180.0, 180.0) if is_global else (float(lon.min()), float(lon.max()))
    return [west, float(np.nanmin(lat)), east, float(np.nanmax(lat))]


def expected_span(name: str) -> tuple[str, str] | None:
    spec = TIME[name]
    if spec is None:
        return None
    coord, bounds = spec
    with netCDF4.Dataset(REAL_DATA / name) as ds:
        var = ds[coord]
        values = [np.asarray(var[:], dtype=float).ravel()]
        if bounds:
            values.append(np.asarray(ds[bounds][:], dtype=float).ravel())
        values = np.concatenate(values)
        dates = cftime.num2date([values.min(), values.max()], var.units, getattr(var, "calendar", "standard"))
    return tuple(d.strftime("%Y-%m-%dT%H:%M:%S") for d in dates)


@pytest.fixture(scope="module")
def real_in_region_a(cluster, region_roots):
    """The real files copied under region a's root."""
    folder = region_roots["a"] / "real-metadata"
    folder.mkdir(exist_ok=True)
    for name in REAL_FILES:
        shutil.copy(REAL_DATA / name, folder / name)
    return "real-metadata"


@pytest.fixture(scope="module")
def real_records(cluster, real_in_region_a) -> dict[str, DatasetRecord]:
    """Every real file extracted by workers of region a, through the worker-side entry point."""
    with cluster.client() as client:
        paths = [f"{real_in_region_a}/{n}" for n in REAL_FILES]
        futures = client.map(extract_in_region, ["a"] * len(paths), paths, resources={pool_resource("a"): 0},
                             pure=False)  # fmt: skip
        return {rec.path.split("/")[-1]: rec for rec in client.gather(futures)}


def test_every_real_file_is_covered():
    assert set(REAL_FILES) == set(GRID) == set(TIME)


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_bbox_and_time_span(real_records, name):
    rec = real_records[name]
    assert rec.status == "ok", rec.error
    assert rec.region == "a" and rec.path == f"real-metadata/{name}" and rec.format == "netcdf"
    assert rec.id == record_id("a", f"real-metadata/{name}")
    assert rec.size == (REAL_DATA / name).stat().st_size
    bbox = expected_bbox(name)
    if bbox is None:
        assert rec.bbox is None
    else:
        assert rec.bbox == pytest.approx(bbox, abs=1e-9)
    span = expected_span(name)
    if span is None:
        assert rec.time_start is None and rec.time_end is None
    else:
        assert (rec.time_start, rec.time_end) == span


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_variables_and_attributes(real_records, name):
    rec = real_records[name]
    with netCDF4.Dataset(REAL_DATA / name) as ds:
        assert rec.dimensions == {k: len(d) for k, d in ds.dimensions.items()}
        assert [v.name for v in rec.variables] == list(ds.variables)
        for info in rec.variables:
            var = ds[info.name]
            assert info.dims == list(var.dimensions) and info.shape == list(var.shape)
            assert info.standard_name == getattr(var, "standard_name", None)
            assert info.units == getattr(var, "units", None)
        for key in ("title", "institution", "source"):
            assert getattr(rec, key) == (ds.getncattr(key) if key in ds.ncattrs() else None)


def test_real_file_details_that_matter(real_records):
    # The projection and the climate file carry what a catalog user filters on.
    assert real_records["test_lcc.nc"].variable_names == ["tas"]
    assert real_records["test_lcc.nc"].standard_names == ["air_temperature"]
    assert real_records["A1B-99999a-river-sep-2070-2099.nc"].calendar == "360_day"
    assert real_records["A1B-99999a-river-sep-2070-2099.nc"].time_start[:4] == "2070"
    assert real_records["A1B-99999a-river-sep-2070-2099.nc"].time_end[:4] == "2099"
    assert any("wibble" in w for w in real_records["units.nc"].warnings)
    # Coordinates and UGRID topology are not data variables.
    assert "mesh_node_lat" not in real_records["21_triangle_example.nc"].variable_names
    assert "depth" in real_records["21_triangle_example.nc"].variable_names
    history = real_records["SMALL_total_column_co2.nc"].history
    assert history is not None and len(history) < 1100


def test_extract_in_region_turns_a_corrupt_file_into_an_error_record(client, region_roots, tmp_path):
    folder = region_roots["a"] / f"corrupt-{tmp_path.name}"
    folder.mkdir()
    good = (REAL_DATA / "test_lcc.nc").read_bytes()
    (folder / "truncated.nc").write_bytes(good[: len(good) // 3])
    (folder / "not-netcdf.nc").write_text("this is not a dataset")
    hdf5 = (REAL_DATA / "tmean_1910_1910.nc").read_bytes()
    (folder / "truncated-hdf5.nc").write_bytes(hdf5[: len(hdf5) // 2])
    paths = [f"{folder.name}/{n}" for n in ("truncated.nc", "not-netcdf.nc", "truncated-hdf5.nc")]
    futures = client.map(extract_in_region, ["a"] * 3, paths, resources={pool_resource("a"): 0}, pure=False)
    # Content decides: a text file named .nc is not a NetCDF file that broke but a format nobody reads.
    statuses = {"truncated.nc": "error", "not-netcdf.nc": "unsupported", "truncated-hdf5.nc": "error"}
    for rec, path in zip(client.gather(futures), paths, strict=True):
        assert rec.status == statuses[path.split("/")[-1]] and rec.path == path and rec.region == "a"
        assert path in rec.error
        assert rec.size == (region_roots["a"] / path).stat().st_size
    # Outside its region the entry point refuses instead of reading a same-named file elsewhere.
    with pytest.raises(FileNotFoundError, match="region 'a'"):
        client.submit(extract_in_region, "a", paths[0], resources={pool_resource("b"): 0}, pure=False).result()


def test_a_huge_variable_is_never_read(tmp_path):
    """A 40 GB variable that was never written: extraction touches only its header."""
    path = tmp_path / "huge.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("y", 100_000)
        ds.createDimension("x", 100_000)
        lat = ds.createVariable("y", "f8", ("y",))
        lat.units = "degrees_north"
        lat[:] = np.linspace(-60, 60, 100_000)
        lon = ds.createVariable("x", "f8", ("x",))
        lon.units = "degrees_east"
        lon[:] = np.linspace(100, 120, 100_000)
        big = ds.createVariable("big", "f4", ("y", "x"), chunksizes=(1000, 1000))
        big.standard_name = "air_temperature"
    assert path.stat().st_size < 10_000_000
    rec = extract(path)
    var = next(v for v in rec.variables if v.name == "big")
    assert var.shape == [100_000, 100_000] and var.chunks == [1000, 1000] and var.dtype == "float32"
    assert rec.bbox == [100.0, -60.0, 120.0, 60.0]


def _grid_dataset(lon: np.ndarray, lat: np.ndarray, times, calendar: str | None) -> xr.Dataset:
    data = np.zeros((len(times), lat.size, lon.size), dtype="f4")
    ds = xr.Dataset(
        {"tos": (("time", "lat", "lon"), data, {"standard_name": "sea_surface_temperature", "units": "K"})},
        coords={
            "time": ("time", times),
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={"title": "Pacific test", "Conventions": "CF-1.8"},
    )
    if calendar:
        ds["time"].encoding.update(units="days since 2000-01-01", calendar=calendar)
    return ds


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_store_across_the_antimeridian_with_a_noleap_calendar(tmp_path, zarr_format):
    lon = np.arange(150.0, 211.0, 2.0)  # 0..360 convention, crossing 180
    lat = np.arange(-30.0, 31.0, 5.0)
    times = xr.date_range("2001-02-27", periods=4, freq="D", calendar="noleap", use_cftime=True)
    ds = _grid_dataset(lon, lat, times, "noleap")
    store = tmp_path / "pacific.zarr"
    ds.to_zarr(store, zarr_format=zarr_format, consolidated=False)
    rec = extract(store)
    assert rec.format == "zarr"
    norm = np.where(lon >= 180, lon - 360, lon)
    assert rec.bbox == [float(norm[norm > 0].min()), -30.0, float(norm[norm < 0].max()), 30.0]
    assert rec.bbox[0] > rec.bbox[2]  # crosses the antimeridian
    assert (rec.time_start, rec.time_end) == (times[0].isoformat(), times[-1].isoformat())
    assert rec.calendar == "noleap"
    assert rec.variable_names == ["tos"] and rec.standard_names == ["sea_surface_temperature"]
    assert next(v for v in rec.variables if v.name == "tos").dims == ["time", "lat", "lon"]
    assert rec.title == "Pacific test"
    assert bbox_intersects(rec.bbox, [179, 0, 179.5, 1]) and not bbox_intersects(rec.bbox, [0, 0, 10, 10])


def test_netcdf_with_360_day_calendar_and_2d_rotated_coordinates(tmp_path):
    rlat, rlon = np.linspace(-10, 10, 21), np.linspace(-15, 15, 31)
    lat2d = 50 + rlat[:, None] + 0.1 * rlon[None, :]
    lon2d = -5 + rlon[None, :] + 0.05 * rlat[:, None]
    times = xr.date_range("2070-02-29", periods=3, freq="D", calendar="360_day", use_cftime=True)
    ds = xr.Dataset(
        {"pr": (("time", "rlat", "rlon"), np.zeros((3, 21, 31), "f4"), {"standard_name": "precipitation_flux"})},
        coords={
            "time": ("time", times),
            "rlat": ("rlat", rlat, {"standard_name": "grid_latitude", "units": "degrees"}),
            "rlon": ("rlon", rlon, {"standard_name": "grid_longitude", "units": "degrees"}),
            "lat": (("rlat", "rlon"), lat2d, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": (("rlat", "rlon"), lon2d, {"standard_name": "longitude", "units": "degrees_east"}),
        },
    )
    ds.to_netcdf(tmp_path / "rot.nc")
    rec = extract(tmp_path / "rot.nc")
    assert rec.bbox == pytest.approx([lon2d.min(), lat2d.min(), lon2d.max(), lat2d.max()])
    # 360_day dates: 29 and 30 February clamp into the real month so every backend can store them.
    assert rec.time_start == "2070-02-28T00:00:00" and rec.time_end == "2070-03-01T00:00:00"
    assert rec.calendar == "360_day"


def test_no_grid_and_no_time_give_none(tmp_path):
    ds = xr.Dataset({"count": ("station", np.arange(5))}, attrs={"history": "x" * 5000})
    ds.to_netcdf(tmp_path / "plain.nc")
    rec = extract(tmp_path / "plain.nc")
    assert rec.bbox is None and rec.time_start is None and rec.time_end is None
    assert rec.history.startswith("x" * 100) and len(rec.history) < 1100


@pytest.mark.parametrize(
    ("lons", "expected"),
    [
        ([10, 20, 30], (10, 30)),
        ([170, 175, -175, -170], (170, -170)),  # crosses the antimeridian
        (np.arange(0, 360, 2.5), (-180, 180)),  # global in 0..360
        (np.arange(-180, 180, 1.0), (-180, 180)),
        ([190, 200], (-170, -160)),
        ([170, 180], (170, 180)),  # ends on the antimeridian without crossing it
        ([5], (5, 5)),
    ],
)
def test_lon_extent(lons, expected):
    assert lon_extent(np.asarray(lons, dtype=float)) == expected


def test_error_record_keeps_previous_good_metadata():
    good = DatasetRecord(
        id="x",
        region="a",
        path="p.nc",
        bbox=[0, 0, 1, 1],
        time_start="2000-01-01T00:00:00",
        time_end="2000-01-02T00:00:00",
        size=10,
        mtime_ns=1,
        last_good_at="2026-01-01T00:00:00Z",
    )
    bad = DatasetRecord(id="x", region="a", path="p.nc", status="error", error="boom", size=3, mtime_ns=2)
    merged = merge_with_previous(bad, good)
    assert merged.status == "error" and merged.error == "boom"
    assert merged.bbox == good.bbox and merged.time_start == good.time_start
    assert merged.size == 3 and merged.mtime_ns == 2 and merged.last_good_at == good.last_good_at
    assert merge_with_previous(bad, None) == bad
    assert merge_with_previous(good, merged) == good


def test_record_id_is_deterministic():
    assert record_id("a", "x/y.nc") == record_id("a", "x/y.nc")
    assert record_id("a", "x/y.nc") != record_id("b", "x/y.nc")
