"""The catalog interface every backend implements, and the errors it raises."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from proximate.catalog.errors import CatalogError
from proximate.catalog.query import FACET_FIELDS, CatalogQuery, SearchResult
from proximate.catalog.records import DatasetRecord

__all__ = ["Catalog", "CatalogError", "Fingerprint", "check_facet_fields"]


class RecordsRejected(CatalogError):
    """The catalog refused some records of a bulk write and stored the others.

    Attributes:
        rejected: Record id -> the catalog's reason, for every refused record.
    """

    def __init__(self, message: str, rejected: dict[str, str]) -> None:
        super().__init__(message)
        self.rejected = rejected


class Fingerprint(NamedTuple):
    """What the incremental indexer compares with a file's current state."""

    size: int | None
    mtime_ns: int | None
    etag: str | None
    status: str


class Catalog(abc.ABC):
    """Dataset records: upsert in bulk, delete stale ones, get by id, search, count by facet."""

    #: Records per bulk write.
    batch_size = 500

    @abc.abstractmethod
    def upsert(self, records: Iterable[DatasetRecord]) -> int:
        """Insert or replace records (by id); returns how many were written."""

    @abc.abstractmethod
    def delete(self, ids: Iterable[str]) -> int:
        """Remove records by id; returns how many existed."""

    @abc.abstractmethod
    def get_many(self, ids: Sequence[str]) -> dict[str, DatasetRecord]:
        """The records that exist among ``ids``."""

    @abc.abstractmethod
    def search(self, query: CatalogQuery) -> SearchResult:
        """One sorted page of the records matching ``query``, with the total count."""

    @abc.abstractmethod
    def facets(
        self, query: CatalogQuery | None = None, fields: Sequence[str] = FACET_FIELDS, size: int = 50
    ) -> dict[str, dict[str, int]]:
        """For each field, the ``size`` most frequent values among matching records and their record counts
        (count descending, then value ascending)."""

    @abc.abstractmethod
    def fingerprints(self, region: str) -> dict[str, Fingerprint]:
        """Path to fingerprint for every record of ``region``: what the incremental indexer compares."""

    @abc.abstractmethod
    def reindex(self, records: Iterable[DatasetRecord]) -> int:
        """Replace the whole catalog with ``records``, atomically for readers."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of records."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""

    def get(self, record_id: str) -> DatasetRecord | None:
        return self.get_many([record_id]).get(record_id)

    def delete_stale(self, region: str, keep_paths: Iterable[str]) -> list[str]:
        """Remove the records of ``region`` whose path is not in ``keep_paths``; returns the removed paths."""
        from proximate.catalog.records import record_id

        keep = set(keep_paths)
        stale = sorted(p for p in self.fingerprints(region) if p not in keep)
        self.delete(record_id(region, p) for p in stale)
        return stale

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_facet_fields(fields: Sequence[str]) -> list[str]:
    unknown = [f for f in fields if f not in FACET_FIELDS]
    if unknown:
        raise ValueError(f"unknown facet field(s) {unknown}; choose from {list(FACET_FIELDS)}")
    return list(fields)
