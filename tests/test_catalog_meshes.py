"""Boxes of global and regional meshes: UGRID cubed spheres (LFRic's C12 and C24 layout), a tripolar ocean grid
with cell bounds, and the real UGRID file of tests/data/real; searches across the antimeridian find them.

The meshes are generated here with numpy (an equiangular gnomonic cubed sphere; Murray's bipolar Arctic cap).
The oracles do not use the code under test: that a mesh is global is checked with pyproj's geodesic areas (its
faces sum to the sphere's area, or to the area north of its southern edge), and a regional mesh's box is the
extremes of its vertices computed with numpy, within half a cell (its edges are great circles between them).
"""

from __future__ import annotations

import netCDF4
import numpy as np
import pyproj
import pytest
import xarray as xr
from conftest import REAL_DATA

from proximate.catalog import CatalogQuery, open_catalog
from proximate.catalog import bbox as bbox_module
from proximate.catalog.extract import extract

GLOBAL = [-180.0, -90.0, 180.0, 90.0]
SPHERE = pyproj.Geod(a=1.0, b=1.0)


def cubed_sphere(n: int, rotate: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An equiangular cubed sphere with ``n`` cells along each panel edge: node lon/lat in degrees (panels
    centred on the equator at 0, 90, 180, -90 plus the poles, turned east by ``rotate``) and each face's four
    nodes anticlockwise."""
    tan = np.tan(np.linspace(-np.pi / 4, np.pi / 4, n + 1))
    a, b = np.meshgrid(tan, tan, indexing="ij")
    one = np.ones_like(a)
    panels = [(one, a, b), (-a, one, b), (-one, -a, b), (a, -one, b), (-b, a, one), (b, a, -one)]
    points, faces = [], []
    for k, (x, y, z) in enumerate(panels):
        p = np.stack([x, y, z], -1).reshape(-1, 3)
        points.append(p / np.linalg.norm(p, axis=1)[:, None])
        idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1) + k * (n + 1) ** 2
        faces.append(np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4))
    unique, inverse = np.unique(np.round(np.concatenate(points), 9), axis=0, return_inverse=True)
    faces = inverse.ravel()[np.concatenate(faces)]
    lon = (np.degrees(np.arctan2(unique[:, 1], unique[:, 0])) + rotate + 180.0) % 360.0 - 180.0
    lat = np.degrees(np.arcsin(np.clip(unique[:, 2], -1.0, 1.0)))
    return lon, lat, faces


def write_ugrid(path, lon, lat, faces, *, fill_faces: bool = False) -> None:
    """A UGRID 1.0 file as LFRic writes it: a mesh variable, 1-based face_node_connectivity, node and face
    coordinates, one field on the faces. ``fill_faces`` makes the connectivity five wide with a fill value
    (a mixed mesh's layout)."""
    conn = faces.astype("i4") + 1
    attrs = {"cf_role": "face_node_connectivity", "start_index": 1}
    if fill_faces:
        conn = np.concatenate([conn, np.full((len(conn), 1), -999, "i4")], axis=1)
    centre_lon = np.degrees(np.angle(np.exp(1j * np.radians(lon[faces])).mean(axis=1)))
    ds = xr.Dataset(
        {
            "Mesh2d": ((), 0, {"cf_role": "mesh_topology", "topology_dimension": 2,
                               "node_coordinates": "Mesh2d_node_x Mesh2d_node_y",
                               "face_coordinates": "Mesh2d_face_x Mesh2d_face_y",
                               "face_node_connectivity": "Mesh2d_face_nodes", "face_dimension": "nMesh2d_face"}),
            "Mesh2d_face_nodes": (("nMesh2d_face", "nMesh2d_vertex"), conn, attrs),
            "Mesh2d_node_x": ("nMesh2d_node", lon, {"standard_name": "longitude", "units": "degrees_east"}),
            "Mesh2d_node_y": ("nMesh2d_node", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "Mesh2d_face_x": ("nMesh2d_face", centre_lon, {"standard_name": "longitude", "units": "degrees_east"}),
            "Mesh2d_face_y": ("nMesh2d_face", lat[faces].mean(axis=1),
                              {"standard_name": "latitude", "units": "degrees_north"}),
            "rain": ("nMesh2d_face", np.zeros(len(faces), "f4"), {"mesh": "Mesh2d", "location": "face"}),
        }
    )  # fmt: skip
    if fill_faces:
        ds["Mesh2d_face_nodes"].encoding["_FillValue"] = np.int32(-999)
    ds.to_netcdf(path)


def tripolar(nx: int = 72, cap_rows: int = 8, joint: float = 60.0, pole_lon: float = 80.0):
    """A tripolar grid's cell corners, shape (rows + 1, nx + 1): regular in longitude from the Antarctic coast
    (-78) to ``joint`` degrees north, above it Murray's (1996) bipolar cap with its two poles on the joint
    latitude at ``pole_lon`` and ``pole_lon - 180``. Longitudes run from -280 to 80 as MOM writes them."""
    lon_edges = np.linspace(-280.0, 80.0, nx + 1)
    lat_edges = np.linspace(-78.0, joint, 35)
    lon_c, lat_c = np.meshgrid(lon_edges, lat_edges)
    # The cap in the stereographic plane of the North Pole, turned so the two poles sit at (+-a, 0): the rows
    # are the circles through both poles (sigma from pi/2 on the joint circle to pi on the fold between them),
    # the columns meet the joint circle where the regular meridians do.
    a = np.tan(np.radians(90.0 - joint) / 2)
    phi = np.radians((lon_edges - pole_lon + 180.0) % 360.0 - 180.0)
    tau = np.arctanh(np.clip(np.cos(phi), -1 + 1e-15, 1 - 1e-15))
    sign = np.where(phi >= 0, 1.0, -1.0)
    sigma = sign[None, :] * np.linspace(np.pi / 2, np.pi, cap_rows + 1)[1:, None]
    denom = np.cosh(tau)[None, :] - np.cos(sigma)
    x, y = a * np.sinh(tau)[None, :] / denom, a * np.sin(sigma) / denom
    r, angle = np.hypot(x, y), np.degrees(np.arctan2(y, x)) + pole_lon
    cap_lat = 90.0 - np.degrees(2 * np.arctan(r))
    cap_lon = np.where(r < 1e-12, lon_edges[None, :], angle)
    # Keep each column's longitudes continuous with its regular part (MOM's -280..80 convention).
    cap_lon = lon_edges[None, :] + (cap_lon - lon_edges[None, :] + 180.0) % 360.0 - 180.0
    return np.concatenate([lon_c, cap_lon]), np.concatenate([lat_c, cap_lat])


def corners_to_bounds(corner: np.ndarray) -> np.ndarray:
    return np.stack([corner[:-1, :-1], corner[:-1, 1:], corner[1:, 1:], corner[1:, :-1]], axis=-1)


def write_tripolar(path, lon_corner, lat_corner) -> tuple[np.ndarray, np.ndarray]:
    lon_b, lat_b = corners_to_bounds(lon_corner), corners_to_bounds(lat_corner)
    # Centres as the mean of the corners on the unit sphere (inside each cell, whatever its shape).
    xyz = np.stack(
        [
            np.cos(np.radians(lat_b)) * np.cos(np.radians(lon_b)),
            np.cos(np.radians(lat_b)) * np.sin(np.radians(lon_b)),
            np.sin(np.radians(lat_b)),
        ]
    ).mean(axis=-1)
    lon = lon_b[..., 0] + (np.degrees(np.arctan2(xyz[1], xyz[0])) - lon_b[..., 0] + 180.0) % 360.0 - 180.0
    lat = np.degrees(np.arctan2(xyz[2], np.hypot(xyz[0], xyz[1])))
    xr.Dataset(
        {"thetao": (("j", "i"), np.zeros(lon.shape, "f4"), {"coordinates": "geolon geolat"})},
        coords={"geolon": (("j", "i"), lon, {"standard_name": "longitude", "units": "degrees_east",
                                             "bounds": "geolon_b"}),
                "geolat": (("j", "i"), lat, {"standard_name": "latitude", "units": "degrees_north",
                                             "bounds": "geolat_b"}),
                "geolon_b": (("j", "i", "v"), lon_b), "geolat_b": (("j", "i", "v"), lat_b)},
    ).to_netcdf(path)  # fmt: skip
    return lon_b, lat_b


def area(lon: np.ndarray, lat: np.ndarray) -> float:
    """Total geodesic area of polygons on the unit sphere (pyproj), each a row of vertices."""
    return sum(abs(SPHERE.polygon_area_perimeter(lo, la)[0]) for lo, la in zip(lon, lat, strict=True))


def regional_box(lon: np.ndarray, lat: np.ndarray, centre: float) -> list[float]:
    """Box of vertices that lie within 180 degrees of ``centre`` (no pole inside), by plain numpy."""
    rel = (lon - centre + 180.0) % 360.0 - 180.0
    wrap = lambda v: (v + centre + 180.0) % 360.0 - 180.0  # noqa: E731
    return [wrap(rel.min()), float(lat.min()), wrap(rel.max()), float(lat.max())]


def assert_close(found, expected, tol_deg):
    assert found is not None, "no bbox"
    for f, e in zip(found, expected, strict=True):
        assert abs((f - e + 180.0) % 360.0 - 180.0) <= tol_deg, (found, expected)


# -- global meshes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "rotate"), [(12, 0.0), (24, 0.0), (12, 10.0), (24, 45.0), (13, 3.0)])
def test_cubed_sphere_is_global(tmp_path, n, rotate):
    lon, lat, faces = cubed_sphere(n, rotate)
    assert area(lon[faces], lat[faces]) == pytest.approx(4 * np.pi, rel=1e-9)  # the faces tile the sphere
    path = tmp_path / f"C{n}.nc"
    write_ugrid(path, lon, lat, faces, fill_faces=n == 13)
    assert extract(path).bbox == GLOBAL


def test_tripolar_grid_is_global(tmp_path):
    lon_c, lat_c = tripolar()
    lon_b, lat_b = write_tripolar(tmp_path / "tripolar.nc", lon_c, lat_c)
    # The cells tile the sphere north of the grid's southern edge (the North Pole included): the sphere less
    # the cap inside that edge, whose polygon has the same geodesic sides as the cells'.
    ring = abs(SPHERE.polygon_area_perimeter(lon_c[0, :-1], lat_c[0, :-1])[0])
    south_cap = min(ring, 4 * np.pi - ring)
    assert area(lon_b.reshape(-1, 4), lat_b.reshape(-1, 4)) == pytest.approx(4 * np.pi - south_cap, rel=1e-9)
    rec = extract(tmp_path / "tripolar.nc")
    assert rec.bbox[0] == -180.0 and rec.bbox[2] == 180.0 and rec.bbox[3] == 90.0
    assert rec.bbox[1] == pytest.approx(float(lat_b.min()))


def test_cells_read_in_blocks_and_from_zarr(tmp_path, monkeypatch):
    """Big meshes are traced a block of cells at a time (here 100), from NetCDF and Zarr alike."""
    monkeypatch.setattr(bbox_module, "CELLS_PER_BLOCK", 100)  # read where the cells are traced
    write_ugrid(tmp_path / "C24.nc", *cubed_sphere(24, 10.0))
    write_tripolar(tmp_path / "tripolar.nc", *tripolar())
    lon, lat, faces = pacific_patch()
    write_ugrid(tmp_path / "pacific.nc", lon, lat, faces)
    for name in ("C24", "tripolar", "pacific"):
        with xr.open_dataset(tmp_path / f"{name}.nc", decode_cf=False) as ds:
            ds.to_zarr(tmp_path / f"{name}.zarr")
    expected_pacific = regional_box(lon, lat, 180.0)
    for suffix in (".nc", ".zarr"):
        assert extract(tmp_path / f"C24{suffix}").bbox == GLOBAL
        assert extract(tmp_path / f"tripolar{suffix}").bbox[::2] == [-180.0, 180.0]
        assert_close(extract(tmp_path / f"pacific{suffix}").bbox, expected_pacific, tol_deg=90.0 / 24 / 2)


# -- regional meshes keep their tight boxes --------------------------------------------------------------------------


def pacific_patch(n: int = 24):
    """Faces of a cubed sphere whose nodes all lie in 150E..150W, 30S..30N: a regional mesh across 180."""
    lon, lat, faces = cubed_sphere(n)
    rel = (lon[faces] - 180.0 + 180.0) % 360.0 - 180.0
    keep = (np.abs(rel) <= 30.0).all(axis=1) & (np.abs(lat[faces]) <= 30.0).all(axis=1)
    used, faces = np.unique(faces[keep], return_inverse=True)
    return lon[used], lat[used], faces.reshape(-1, 4)


def test_regional_meshes_keep_their_tight_boxes(tmp_path):
    lon, lat, faces = pacific_patch()
    write_ugrid(tmp_path / "pacific.nc", lon, lat, faces)
    box = extract(tmp_path / "pacific.nc").bbox
    assert box[0] > box[2]  # it crosses 180 and is not global
    assert_close(box, regional_box(lon, lat, 180.0), tol_deg=90.0 / 24 / 2)

    # The real UGRID file (21 triangles): its box is that of its nodes, read here with netCDF4.
    with netCDF4.Dataset(REAL_DATA / "21_triangle_example.nc") as ds:
        nodes_lon, nodes_lat = ds["mesh_node_lon"][:], ds["mesh_node_lat"][:]
    expected = [float(nodes_lon.min()), float(nodes_lat.min()), float(nodes_lon.max()), float(nodes_lat.max())]
    assert extract(REAL_DATA / "21_triangle_example.nc").bbox == expected

    # A regional curvilinear grid with cell bounds: the tripolar grid's rows of the North Atlantic.
    lon_c, lat_c = tripolar()
    lon_c, lat_c = lon_c[20:30, 40:56], lat_c[20:30, 40:56]
    write_tripolar(tmp_path / "atlantic.nc", lon_c, lat_c)
    assert_close(extract(tmp_path / "atlantic.nc").bbox, regional_box(lon_c, lat_c, -40.0), tol_deg=1e-9)


# -- searches in both backends --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "opensearch"])
def test_bbox_searches_across_the_antimeridian_find_global_meshes(tmp_path, backend, request):
    files = {}
    for name, (n, rotate) in {"C12": (12, 2.25), "C24": (24, 10.0)}.items():
        write_ugrid(tmp_path / f"{name}.nc", *cubed_sphere(n, rotate))
        files[name] = tmp_path / f"{name}.nc"
    write_tripolar(tmp_path / "tripolar.nc", *tripolar())
    write_ugrid(tmp_path / "pacific.nc", *pacific_patch())
    files |= {"tripolar": tmp_path / "tripolar.nc", "pacific": tmp_path / "pacific.nc"}
    records = [extract(p, region="a", rel_path=f"{name}.nc") for name, p in files.items()]
    if backend == "sqlite":
        cat = open_catalog("sqlite", sqlite_path=tmp_path / "c.sqlite")
    else:
        cat = open_catalog("opensearch", opensearch_url=request.getfixturevalue("opensearch_url"), index="meshes")
    try:
        cat.upsert(records)
        found = lambda bbox: {r.path[:-3] for r in cat.search(CatalogQuery(bbox=bbox, page_size=50)).records}  # noqa: E731
        everything = {"C12", "C24", "tripolar", "pacific"}
        # Boxes from nodes and face centres alone had gaps here: C12's across 180 (178.5..-177.75), C24's at
        # -126.9..-125 and the tripolar grid's at -12.5..-10, so these searches missed them.
        assert found([179.0, -5.0, -179.0, 5.0]) == everything  # across 180 on the equator
        assert found([-126.5, 40.0, -125.5, 45.0]) == {"C12", "C24", "tripolar"}
        assert found([-12.0, -5.0, -10.5, 5.0]) == {"C12", "C24", "tripolar"}
        assert found([-168.0, -40.0, -160.0, -35.0]) == {"C12", "C24", "tripolar"}  # south of the patch
        assert found([175.0, 86.0, -175.0, 89.5]) == {"C12", "C24", "tripolar"}  # across 180 near the pole
        assert found([0.0, 40.0, 10.0, 55.0]) == {"C12", "C24", "tripolar"}  # Europe
        assert found([160.0, -89.0, 170.0, -80.0]) == {"C12", "C24"}  # the Antarctic, south of the ocean grid
    finally:
        cat.close()
