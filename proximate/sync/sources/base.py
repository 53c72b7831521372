"""What a source is to the sync: the :class:`Source` protocol, the objects it lists, and the machinery every
backend shares (the reading threads, retries, the short-read check)."""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from proximate.errors import ProximateError
from proximate.sync.checksums import ChecksumError, from_etag
from proximate.sync.retry import describe, with_retries, with_retries_blocking

T = TypeVar("T")
SinkT = TypeVar("SinkT", bound="Sink")
#: Bytes a sink is handed at most per ``feed``.
READ_CHUNK = 2**20


class SourceError(ProximateError, RuntimeError):
    """The source cannot be listed (down server, missing bucket, no access): nothing is written."""


class ColdObjectError(ProximateError, OSError):
    """The object is archived (GLACIER, DEEP_ARCHIVE, an Intelligent-Tiering archive tier) and not restored: it
    cannot be read until someone restores it. Not a failure of the sync: the object is skipped and reported."""


@dataclass(frozen=True)
class RemoteObject:
    """One object to mirror: where to read it, where it goes (relative to the root), what it should be.

    ``storage_class`` is what the listing says (None where the store has no such notion); ``cold`` that the
    listing shows it archived and not restored (GLACIER or DEEP_ARCHIVE without a finished restore): a GET would
    answer 403 InvalidObjectState.
    """

    path: str
    rel: str
    size: int
    fingerprint: str
    etag: str | None = None
    storage_class: str | None = None
    cold: bool = False

    @property
    def parts(self) -> int | None:
        """Number of parts of a multipart upload, from its ``<md5>-<N>`` ETag."""
        expected = from_etag(self.etag)
        return expected.parts if expected else None


@dataclass(frozen=True)
class ObjectAddress:
    """Where GETs of one object go: its URL, and the credentials each request's headers are signed with (SigV4,
    in the reading thread, so a retry or a range signs its own headers and a slow queue never outlives a
    signature); without credentials the URL is used as it is (presigned by botocore, or anonymous)."""

    url: str
    credentials: ReadOnlyCredentials | None = None
    region: str = ""

    def sign(self, headers: dict[str, str]) -> dict[str, str]:
        if self.credentials is None:
            return headers
        request = AWSRequest(method="GET", url=self.url, headers=headers)
        S3SigV4Auth(self.credentials, "s3", self.region).add_auth(request)
        return dict(request.headers.items())


class Sink(Protocol):
    """Where :meth:`Source.fetch` puts a range's bytes as they arrive (called in a reading thread).

    A sink may also lend its own memory: with ``buffer(limit)`` (a writable view of at most ``limit`` bytes) and
    ``filled(n)`` (its first ``n`` bytes arrived), an S3 body is received straight into it, with no bytes
    object per chunk; :mod:`proximate.sync.durable` uses that for aligned, direct writes."""

    received: int

    def feed(self, data: bytes) -> None: ...


class Source(Protocol):
    """A source tree opened for one run: create it, then use it inside ``async with``, in one event loop.

    A backend implements:

    - ``url``: the source's URL, as the manifest records it.
    - ``threads``: while open, the executor :meth:`fetch` is called in (one thread per request slot).
    - ``async with``: opens and closes the backend's clients, connections and threads.
    - :meth:`list`: every object below the source, once.
    - :meth:`address`: where GETs of an object go and how they are signed (None where that means nothing).
    - :meth:`fetch`: blocking, in :attr:`threads`: a range's bytes into a sink, retried on transient faults.
    - :meth:`checksum_headers` and :meth:`part_size`: what a HEAD says of an object's stored checksum and parts
      ({} and None where the store keeps none).
    """

    url: str
    threads: concurrent.futures.ThreadPoolExecutor | None

    async def __aenter__(self) -> Source: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def list(self) -> list[RemoteObject]:
        """Every object below the source (folder markers included: the plan skips them).

        Raises:
            SourceError: The source cannot be listed.
        """
        ...

    async def address(self, obj: RemoteObject) -> ObjectAddress | None: ...

    def fetch(
        self,
        obj: RemoteObject,
        start: int,
        end: int,
        begin: Callable[[], SinkT],
        *,
        address: ObjectAddress | None = None,
        chunk: int = READ_CHUNK,
    ) -> tuple[SinkT, Mapping[str, str]]: ...

    async def checksum_headers(self, obj: RemoteObject) -> Mapping[str, str]: ...

    async def part_size(self, obj: RemoteObject, parts: int | None) -> int | None: ...


class ThreadedSource:
    """What every backend shares: the reading threads, retries, and :meth:`fetch` around a backend's
    :meth:`_read` and :meth:`_list`. The HEAD-based answers default to "the store keeps nothing".

    A backend implements :meth:`_configure` (take its storage options), :meth:`_list` and :meth:`_read`, and
    overrides what its store says more about (see :class:`Source`).

    Args:
        url: The source's URL.
        storage_options: The backend's options (see its :meth:`_configure`).
        concurrency: Request slots: reading threads (and, for S3, connections).
        retries: Retries of a transient fault, per request.
        backoff: Seconds of the first retry's backoff (doubled each time, with jitter).
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        *,
        concurrency: int = 16,
        retries: int = 4,
        backoff: float = 0.25,
    ) -> None:
        self.url = url
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        #: Threads that read object bytes (one per request slot): receiving, hashing and writing release the GIL.
        self.threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._configure(dict(storage_options or {}))

    def _configure(self, options: dict[str, Any]) -> None:
        """Take the backend's storage options (a copy, free to change)."""
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        self.threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, self.concurrency), thread_name_prefix="proximate-fetch"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.threads is not None:
            self.threads.shutdown(wait=True)
            self.threads = None

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(call, retries=self.retries, backoff=self.backoff)

    async def list(self) -> list[RemoteObject]:
        """Every object below the source; raises :class:`SourceError` when it cannot be listed."""
        try:
            return await self._list()
        except Exception as exc:
            raise SourceError(f"cannot list source {self.url!r}: {describe(exc)}") from exc

    async def _list(self) -> list[RemoteObject]:
        raise NotImplementedError

    async def address(self, obj: RemoteObject) -> ObjectAddress | None:
        return None

    def fetch(
        self,
        obj: RemoteObject,
        start: int,
        end: int,
        begin: Callable[[], SinkT],
        *,
        address: ObjectAddress | None = None,
        chunk: int = READ_CHUNK,
    ) -> tuple[SinkT, Mapping[str, str]]:
        """Feed bytes ``[start, end)`` of ``obj`` to a fresh ``begin()`` sink as they arrive (blocking: call it in
        :attr:`threads`); a transient fault restarts the range with a new sink. Returns the sink and the response
        headers (where S3 puts the object's stored checksum). ``address`` is what :meth:`address` answered."""
        once = functools.partial(self._fetch_once, obj, start, end, begin, address, chunk)
        return with_retries_blocking(once, retries=self.retries, backoff=self.backoff)

    def _fetch_once(
        self,
        obj: RemoteObject,
        start: int,
        end: int,
        begin: Callable[[], SinkT],
        address: ObjectAddress | None,
        chunk: int,
    ) -> tuple[SinkT, Mapping[str, str]]:
        sink = begin()
        headers = self._read(obj, start, end, address, sink, chunk)
        if sink.received != end - start:
            raise ChecksumError(f"short read of {obj.path!r}: got {sink.received} of {end - start} bytes at {start}")
        return sink, headers

    def _read(
        self, obj: RemoteObject, start: int, end: int, address: ObjectAddress | None, sink: Sink, chunk: int
    ) -> Mapping[str, str]:
        """One read of bytes ``[start, end)`` into ``sink`` (blocking); returns the response headers."""
        raise NotImplementedError

    async def checksum_headers(self, obj: RemoteObject) -> Mapping[str, str]:
        return {}

    async def part_size(self, obj: RemoteObject, parts: int | None) -> int | None:
        return None
