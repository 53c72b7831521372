"""Format handlers: one per readable format, each turning a file into the extractor's :class:`Header`."""

from __future__ import annotations

from proximate.catalog.formats.base import FormatHandler, Header, Var
from proximate.catalog.formats.geotiff import GeoTiffHandler
from proximate.catalog.formats.grib import GribHandler
from proximate.catalog.formats.netcdf import NetCDFHandler
from proximate.catalog.formats.table import CSVHandler, ParquetHandler
from proximate.catalog.formats.zarr import ZarrHandler

#: The handler of each format :func:`proximate.formats.dataset_format` can return.
HANDLERS: dict[str, FormatHandler] = {
    h.name: h for h in (NetCDFHandler(), ZarrHandler(), GribHandler(), GeoTiffHandler(), ParquetHandler(), CSVHandler())
}

__all__ = ["HANDLERS", "FormatHandler", "Header", "Var"]
