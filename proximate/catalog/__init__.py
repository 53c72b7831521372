"""The dataset catalog: records of every dataset in every region, searchable by name, text, time and place.

``open_catalog()`` gives a backend (embedded SQLite by default, or OpenSearch), :class:`CatalogSettings` says
which one a run uses; ``open_from_catalog()`` opens a found dataset where it lives, so the scientist never names
a region.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import SecretStr

from proximate.catalog.base import Catalog, CatalogError, Fingerprint, RecordsRejected
from proximate.catalog.query import CatalogQuery, SearchResult
from proximate.catalog.records import DatasetRecord
from proximate.catalog.settings import DEFAULT_INDEX, DEFAULT_SQLITE_PATH, CatalogSettings
from proximate.datasets import CatalogId, locate

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "Catalog",
    "CatalogError",
    "CatalogQuery",
    "CatalogSettings",
    "DatasetRecord",
    "Fingerprint",
    "RecordsRejected",
    "SearchResult",
    "open_catalog",
    "open_from_catalog",
]


def open_catalog(
    backend: str = "sqlite",
    *,
    sqlite_path: str | os.PathLike[str] = DEFAULT_SQLITE_PATH,
    opensearch_url: str | None = None,
    index: str = DEFAULT_INDEX,
    username: str | None = None,
    password: str | None = None,
    aws_sigv4_region: str | None = None,
    verify_certs: bool = True,
    ca_certs: str | None = None,
) -> Catalog:
    """A catalog backend from plain settings: :meth:`CatalogSettings.open` of these fields.

    Args:
        backend: ``sqlite`` or ``opensearch``.
        sqlite_path: For sqlite: the database file.
        opensearch_url: For opensearch: ``https://host:port``.
        index: For opensearch: the alias searches go through.
        username: For opensearch basic auth.
        password: For opensearch basic auth.
        aws_sigv4_region: For Amazon OpenSearch Service: sign requests with SigV4 for this region.
        verify_certs: For opensearch: verify the server certificate.
        ca_certs: For opensearch: the CA bundle to verify it against.

    Returns:
        The backend, connected; close it (or use it as a context manager) when done.

    Raises:
        CatalogError: an unknown backend, or opensearch without a URL.

    Examples:
        >>> with open_catalog("sqlite", sqlite_path="c.sqlite") as catalog:  # doctest: +SKIP
        ...     catalog.count()
    """
    return CatalogSettings(
        backend=backend,  # type: ignore[arg-type]  # checked by open()
        sqlite_path=str(sqlite_path),
        opensearch_url=opensearch_url,
        index=index,
        username=username,
        password=SecretStr(password) if password is not None else None,
        aws_sigv4_region=aws_sigv4_region,
        verify_certs=verify_certs,
        ca_certs=ca_certs,
    ).open()


def open_from_catalog(record_or_id: DatasetRecord | str, *, catalog: Catalog | None = None, **xarray_kwargs: Any):
    """Open a catalogued dataset lazily, pinned to the region that holds it (a worker of that region opens it).

    Args:
        record_or_id: A record from a search, or a record id.
        catalog: Where to look an id up; :meth:`CatalogSettings.from_env` (this process's default) if omitted.
        **xarray_kwargs: Passed to :func:`proximate.open_dataset`.

    Returns:
        The lazy Dataset, its reads pinned to the region holding it.

    Examples:
        >>> with open_catalog(sqlite_path="proximate-demo/catalog/proximate.sqlite") as catalog:
        ...     found = catalog.search(CatalogQuery(text="synthetic daily temperature", region="gcp"))
        >>> ds = proximate.open_from_catalog(found.records[0], chunks={})
    """
    from proximate.io import open_dataset

    if isinstance(record_or_id, DatasetRecord):
        return open_dataset(record_or_id.location, **xarray_kwargs)
    if not isinstance(record_or_id, str):
        raise TypeError(f"open_from_catalog takes a DatasetRecord or an id, not {type(record_or_id).__name__}")
    if catalog is not None:
        return open_dataset(locate(CatalogId(record_or_id), catalog), **xarray_kwargs)
    with CatalogSettings.from_env().open() as own:
        where = locate(CatalogId(record_or_id), own)
    return open_dataset(where, **xarray_kwargs)
