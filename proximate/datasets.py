"""One way to name a dataset.

A scientist names a dataset by where it lives, ``region:path`` (``ecmwf:forecast/t.nc``), or by its catalog id.
The text is parsed once, where it enters (a flow parameter, the command line, a Python call), into a
:class:`RegionPath` or a :class:`CatalogId`; from there on the object is carried as it is: the catalog turns an id
into a ``RegionPath`` (:func:`locate`, in the process that holds the catalog), a region's worker opens the
``RegionPath``, the opened dataset remembers it (:func:`location_of`) and results and reports name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from proximate.errors import ProximateInputError
from proximate.regions import check_relative_path, validate_region_name

#: Where an opened dataset keeps its location, in ``Dataset.encoding`` (which xarray never writes out).
LOCATION_KEY = "proximate_location"


class DatasetRefError(ProximateInputError):
    """A dataset reference cannot be parsed or resolved; the message names it."""


@dataclass(frozen=True)
class RegionPath:
    """Where a dataset lives: the region holding it and its path under that region's root (validated)."""

    region: str
    path: str

    def __post_init__(self) -> None:
        validate_region_name(self.region)
        object.__setattr__(self, "path", str(check_relative_path(self.path)))

    def __str__(self) -> str:
        return f"{self.region}:{self.path}"


@dataclass(frozen=True)
class CatalogId:
    """A dataset named by its catalog record id; :func:`locate` finds where it lives."""

    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise DatasetRefError("empty dataset reference")

    def __str__(self) -> str:
        return self.id


DatasetRef = RegionPath | CatalogId


def parse_reference(ref: str | RegionPath | CatalogId) -> DatasetRef:
    """The one parser of dataset references.

    Args:
        ref: ``region:path`` (a region name, a colon, a path under the region's root), a catalog record id, or an
            already parsed reference (returned unchanged).

    Returns:
        A validated :class:`RegionPath` for ``region:path``, else a :class:`CatalogId`.

    Raises:
        RegionError, RegionPathError: ``region:path`` with an invalid region name or an escaping path.
        DatasetRefError: an empty reference.
    """
    if isinstance(ref, RegionPath | CatalogId):
        return ref
    region, sep, path = ref.partition(":")
    if sep and "/" not in region and path:
        return RegionPath(region, path)
    return CatalogId(ref)


class RecordLookup(Protocol):
    """What :func:`locate` needs of a catalog (every ``proximate.catalog.Catalog`` has it)."""

    def get(self, record_id: str) -> Any: ...


def locate(ref: DatasetRef, catalog: RecordLookup | None) -> RegionPath:
    """Where a reference's dataset lives: a ``RegionPath`` as it is, a catalog id looked up in ``catalog``.

    Call it in the process that holds the catalog (the flow's), never on a worker.

    Raises:
        DatasetRefError: the id is not in the catalog, no catalog was given, or the record has no region.
    """
    if isinstance(ref, RegionPath):
        return ref
    if catalog is None:
        raise DatasetRefError(f"dataset {ref.id!r} is a catalog id, but no catalog was given to look it up in")
    record = catalog.get(ref.id)
    if record is None:
        raise DatasetRefError(f"no dataset with id {ref.id!r} in catalog {catalog!r}")
    return record.location


def location_of(ds: Any) -> RegionPath | None:
    """Where an opened dataset was read from, or ``None`` for data not opened by ``proximate.open_dataset``."""
    return getattr(ds, "encoding", {}).get(LOCATION_KEY)
