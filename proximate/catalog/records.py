"""The catalog's record model: what it holds for one dataset in one region, and its deterministic id."""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, Field

from proximate.datasets import DatasetRefError, RegionPath

#: ``ok``: read; ``unsupported``: a format proximate does not read; ``error``: truncated, corrupt, unreadable.
Status = Literal["ok", "unsupported", "error"]


class VariableInfo(BaseModel):
    """One variable as a catalog user sees it: names, units, layout; never its values."""

    name: str
    standard_name: str | None = None
    long_name: str | None = None
    units: str | None = None
    cell_methods: str | None = None
    dims: list[str] = Field(default_factory=list)
    shape: list[int] = Field(default_factory=list)
    dtype: str = ""
    chunks: list[int] | None = None
    coordinate: bool = False


class DatasetRecord(BaseModel):
    """What the catalog holds for one file or store in one region: every file under a region's root has one.

    ``format`` is what its content says it is (``netcdf``, ``zarr``, ``grib``, ``geotiff``; ``hdf4`` or
    ``um-pp`` for formats recognised but not read; ``None`` if unrecognised). ``status == "unsupported"`` says
    proximate does not read the format, ``status == "error"`` that the file is truncated, corrupt or
    unreadable; ``error`` says why, in words a user can search. If the dataset had been indexed before, an
    error record keeps its last good metadata (``last_good_at`` says when it was read) so one bad sync never hides a
    dataset from search.
    """

    id: str
    region: str | None = None
    path: str
    format: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    etag: str | None = None
    status: Status = "ok"
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    title: str | None = None
    institution: str | None = None
    source: str | None = None
    conventions: str | None = None
    history: str | None = None
    attrs: dict[str, Any] = Field(default_factory=dict)
    dimensions: dict[str, int] = Field(default_factory=dict)
    variables: list[VariableInfo] = Field(default_factory=list)
    time_start: str | None = None
    time_end: str | None = None
    calendar: str | None = None
    bbox: list[float] | None = None
    indexed_at: str | None = None
    last_good_at: str | None = None

    @property
    def data_variables(self) -> list[VariableInfo]:
        return [v for v in self.variables if not v.coordinate]

    @property
    def variable_names(self) -> list[str]:
        """Data-variable names, as search and facets use them (coordinates are not what people look for)."""
        return sorted({v.name for v in self.data_variables})

    @property
    def standard_names(self) -> list[str]:
        return sorted({v.standard_name for v in self.data_variables if v.standard_name})

    @property
    def location(self) -> RegionPath:
        """Where the dataset lives, to open it there."""
        if not self.region:
            raise DatasetRefError(f"record {self.id} ({self.path}) has no region: it was not indexed from a region")
        return RegionPath(self.region, self.path)

    @property
    def mtime(self) -> _dt.datetime | None:
        if self.mtime_ns is None:
            return None
        return _dt.datetime.fromtimestamp(self.mtime_ns / 1e9, tz=_dt.UTC)


def record_id(region: str | None, path: str) -> str:
    """Deterministic id from (region, path): re-indexing a file overwrites its record instead of adding one."""
    return hashlib.sha256(f"{region or ''}\x00{path}".encode()).hexdigest()[:40]


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_with_previous(new: DatasetRecord, previous: DatasetRecord | None) -> DatasetRecord:
    """An error or unsupported record keeps the previous good metadata (variables, bbox, time span...), flagged with the
    error, so a bad sync never silently drops a dataset from search; an ok record replaces everything."""
    if new.status == "ok" or previous is None or previous.last_good_at is None:
        return new
    keep = previous.model_dump()
    keep.update(
        status=new.status,
        error=new.error,
        size=new.size,
        mtime_ns=new.mtime_ns,
        etag=new.etag,
        indexed_at=new.indexed_at,
    )
    return DatasetRecord.model_validate(keep)
