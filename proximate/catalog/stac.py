"""The catalog as a static STAC catalog (pystac): one Collection per region, one Item per record.

EO tools that speak STAC (stackstac, odc-stac, STAC browsers) can then find what proximate indexed: an Item's
geometry and bbox are the record's footprint (split in two at the antimeridian), its time the record's span, its
one asset the file as ``<region>:<path>`` (what :func:`proximate.open_dataset` takes), with the status and,
for an unsupported or unreadable file, the reason, so nothing indexed is hidden from a STAC client either.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proximate.catalog.base import Catalog
from proximate.catalog.geo import lon_intervals, union_bboxes
from proximate.catalog.query import MAX_WINDOW, CatalogQuery
from proximate.catalog.records import DatasetRecord

#: Media types of the formats proximate reads (STAC best practices; GRIB and NetCDF have no registered one).
MEDIA_TYPES = {
    "netcdf": "application/netcdf",
    "zarr": "application/vnd+zarr",
    "grib": "application/wmo-GRIB2",
    "geotiff": "image/tiff; application=geotiff",
}
_PAGE = 1000


def records_by_region(catalog: Catalog) -> Iterator[tuple[str, list[DatasetRecord]]]:
    """Every record, region by region, in path order."""
    regions = catalog.facets(fields=["region"], size=10_000).get("region", {})
    for region, count in sorted(regions.items()):
        if count > MAX_WINDOW:
            raise ValueError(f"region {region!r} holds {count} records, more than one search returns ({MAX_WINDOW})")
        records: list[DatasetRecord] = []
        for page in range(1, count // _PAGE + 2):
            found = catalog.search(CatalogQuery(region=region, sort="path", page=page, page_size=_PAGE)).records
            records += found
            if len(found) < _PAGE:
                break
        yield region, records


def _parse(value: str | None) -> _dt.datetime | None:
    return None if value is None else _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=_dt.UTC)


def item_geometry(bbox: list[float] | None) -> dict[str, Any] | None:
    """GeoJSON of a record's box: a Polygon, or a MultiPolygon of the two halves of a box across 180°."""
    if bbox is None:
        return None
    west, south, east, north = bbox
    rings = [[[w, south], [e, south], [e, north], [w, north], [w, south]] for w, e in lon_intervals(west, east)]
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": rings}
    return {"type": "MultiPolygon", "coordinates": [[r] for r in rings]}


def record_item(record: DatasetRecord) -> Any:
    """A record as a STAC Item (datetime: the record's span; without one, the file's modification time)."""
    import pystac

    start, end = _parse(record.time_start), _parse(record.time_end)
    when = None if start and end else (record.mtime or _parse(record.indexed_at))
    properties: dict[str, Any] = {
        "title": record.title or record.path,
        "proximate:region": record.region,
        "proximate:path": record.path,
        "proximate:status": record.status,
        "proximate:format": record.format,
        "proximate:variables": record.variable_names,
    }
    if record.error:
        properties["proximate:error"] = record.error
    if start and end:
        properties.update(start_datetime=start.isoformat(), end_datetime=end.isoformat())
    item = pystac.Item(
        id=record.id,
        geometry=item_geometry(record.bbox),
        bbox=record.bbox,
        datetime=when if when else start,
        properties=properties,
    )
    item.add_asset(
        "data",
        pystac.Asset(
            href=f"{record.region}:{record.path}",
            media_type=MEDIA_TYPES.get(record.format or ""),
            roles=["data"],
            extra_fields={"file:size": record.size} if record.size is not None else None,
        ),
    )
    return item


def _extent(items: list[Any]) -> Any:
    import pystac

    boxes = [i.bbox for i in items if i.bbox]
    spatial = pystac.SpatialExtent([union_bboxes(boxes) if boxes else [-180.0, -90.0, 180.0, 90.0]])
    starts = [i.common_metadata.start_datetime or i.datetime for i in items]
    ends = [i.common_metadata.end_datetime or i.datetime for i in items]
    span = [min(s for s in starts if s), max(e for e in ends if e)] if items else [None, None]
    return pystac.Extent(spatial, pystac.TemporalExtent([span]))


def export_stac(catalog: Catalog, directory: str | os.PathLike[str], *, title: str = "proximate catalog") -> Path:
    """Write the catalog to ``directory`` as a self-contained static STAC catalog; returns its ``catalog.json``."""
    import pystac

    root = pystac.Catalog(id="proximate", description=f"{title}: every indexed file, one collection per region")
    for region, records in records_by_region(catalog):
        items = [record_item(r) for r in records]
        collection = pystac.Collection(
            id=region, description=f"Datasets held in region {region}", extent=_extent(items), license="other"
        )
        collection.add_items(items)
        root.add_child(collection)
    out = Path(directory)
    root.normalize_hrefs(str(out))
    root.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return out / "catalog.json"
