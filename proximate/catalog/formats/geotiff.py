"""GeoTIFF and Cloud-Optimised GeoTIFF through rioxarray and rasterio (GDAL from rasterio's wheel).

Each band is a variable (``band_1``...; its description, if any, its ``long_name``), its CRS the
``spatial_ref`` coordinate's WKT that rioxarray writes, so the extractor finds the footprint as for any CF
grid mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proximate.catalog.formats.base import FormatHandler, Header
from proximate.catalog.formats.xarray_backed import add_dataset


class GeoTiffHandler(FormatHandler):
    name = "geotiff"

    def read_header(self, full: Path) -> tuple[Header, Callable[[], None]]:
        import rioxarray

        ds = rioxarray.open_rasterio(full, band_as_variable=True, mask_and_scale=False, decode_times=False, cache=False)
        if isinstance(ds, list):  # subdatasets: not a plain GeoTIFF
            raise ValueError(f"{full.name} holds {len(ds)} subdatasets, not one raster")
        header = Header(attrs=dict(ds.attrs), dims={})
        add_dataset(ds, "", header)
        return header, ds.close
