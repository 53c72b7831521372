"""Where a sync reads from: one backend per kind of store behind the :class:`Source` protocol.

- :class:`~proximate.sync.sources.s3.S3Source`: ``s3://`` and ``s3a://`` URLs.
- :class:`~proximate.sync.sources.fsspec.FsspecSource`: any other fsspec URL (``file://`` staging, ...).
"""

from __future__ import annotations

from typing import Any

from proximate.sync.sources.base import ColdObjectError, ObjectAddress, RemoteObject, Sink, Source, SourceError
from proximate.sync.sources.fsspec import FsspecSource
from proximate.sync.sources.s3 import S3Source, is_s3_url


def open_source(url: str, storage_options: dict[str, Any] | None = None, **settings: Any) -> Source:
    """The source for ``url``, not yet opened: use it in ``async with``.

    Args:
        url: ``s3://bucket/prefix`` for S3, any other fsspec URL for the matching file system.
        storage_options: s3fs-style options for S3, the file system's keyword arguments otherwise.
        **settings: ``concurrency``, ``retries`` and ``backoff``, as
            :class:`~proximate.sync.sources.base.ThreadedSource` takes them.

    Returns:
        An :class:`~proximate.sync.sources.s3.S3Source` or :class:`~proximate.sync.sources.fsspec.FsspecSource`.

    Raises:
        SourceError: An S3 URL names no bucket.
    """
    backend = S3Source if is_s3_url(url) else FsspecSource
    return backend(url, storage_options, **settings)


__all__ = [
    "ColdObjectError",
    "FsspecSource",
    "ObjectAddress",
    "RemoteObject",
    "S3Source",
    "Sink",
    "Source",
    "SourceError",
    "open_source",
]
