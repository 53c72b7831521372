"""The dataset catalog: records of every dataset in every region, searchable by name, text, time and place.

``open_catalog()`` gives a backend (embedded SQLite by default, or OpenSearch); ``open_from_catalog()`` opens
a found dataset where it lives, so the scientist never names a region.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from proximate.catalog.base import Catalog, CatalogError, Fingerprint
from proximate.catalog.query import CatalogQuery, SearchResult
from proximate.catalog.records import DatasetRecord

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "Catalog",
    "CatalogError",
    "CatalogQuery",
    "DatasetRecord",
    "Fingerprint",
    "SearchResult",
    "default_catalog",
    "open_catalog",
    "open_from_catalog",
]

#: Where the default catalog lives, relative to the working directory (PROXIMATE_HOME for deployments).
DEFAULT_SQLITE_PATH = "catalog/proximate.sqlite"
#: Environment variable naming the catalog: a SQLite file path or an http(s):// OpenSearch URL.
CATALOG_ENV = "PROXIMATE_CATALOG"


def open_catalog(
    backend: str = "sqlite",
    *,
    sqlite_path: str | os.PathLike[str] = DEFAULT_SQLITE_PATH,
    opensearch_url: str | None = None,
    index: str = "proximate-datasets",
    username: str | None = None,
    password: str | None = None,
    aws_sigv4_region: str | None = None,
    verify_certs: bool = True,
    ca_certs: str | None = None,
) -> Catalog:
    """A catalog backend from plain settings (the ``CatalogConfig`` block calls this with its fields)."""
    if backend == "sqlite":
        from proximate.catalog.sqlite import SQLiteCatalog

        return SQLiteCatalog(Path(sqlite_path))
    if backend == "opensearch":
        if not opensearch_url:
            raise CatalogError("the opensearch catalog backend needs opensearch_url")
        from proximate.catalog.opensearch import OpenSearchCatalog

        return OpenSearchCatalog.connect(
            opensearch_url,
            index,
            username=username,
            password=password,
            aws_sigv4_region=aws_sigv4_region,
            verify_certs=verify_certs,
            ca_certs=ca_certs,
        )
    raise CatalogError(f"unknown catalog backend {backend!r}: use 'sqlite' or 'opensearch'")


def default_catalog() -> Catalog:
    """The catalog named by ``PROXIMATE_CATALOG`` (file path or OpenSearch URL), else the default SQLite file."""
    where = os.environ.get(CATALOG_ENV, DEFAULT_SQLITE_PATH)
    if where.startswith(("http://", "https://")):
        return open_catalog("opensearch", opensearch_url=where)
    return open_catalog("sqlite", sqlite_path=where)


def open_from_catalog(record_or_id: DatasetRecord | str, *, catalog: Catalog | None = None, **xarray_kwargs: Any):
    """Open a catalogued dataset lazily, pinned to the region that holds it (a worker of that region opens it).

    Takes a record from a search or a record id; ``catalog`` defaults to :func:`default_catalog`.
    """
    from proximate.io import open_dataset

    record = record_or_id
    if isinstance(record_or_id, str):
        own = catalog is None
        cat = default_catalog() if own else catalog
        try:
            record = cat.get(record_or_id)
        finally:
            if own:
                cat.close()
        if record is None:
            raise KeyError(f"no dataset with id {record_or_id!r} in catalog {cat!r}")
    if not isinstance(record, DatasetRecord):
        raise TypeError(f"open_from_catalog takes a DatasetRecord or an id, not {type(record_or_id).__name__}")
    if not record.region:
        raise ValueError(f"record {record.id} ({record.path}) has no region: it was not indexed from a region")
    return open_dataset(record.region, record.path, **xarray_kwargs)
