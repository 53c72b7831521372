"""Reading a source tree through fsspec: one listing call, ranged reads, retries with backoff.

S3 (through the client :mod:`proximate.sync.s3client` builds from s3fs-style storage options) is listed with raw
``list_objects_v2`` pages so every key is seen exactly as stored, hostile ones included; any other fsspec file
system (``file://`` staging, ...) is listed with ``find(detail=True)``. Object bytes are read by
:meth:`Source.fetch` in worker threads, blocking, over one keep-alive connection per thread
(:mod:`proximate.sync.transport`) with SigV4-signed headers: receiving, hashing and writing all release the GIL,
so the reads of several objects use every core, where one event loop receiving every byte ran on one (measured:
2,000 x 1 MiB at 300 MiB/s through aiohttp, 480 MiB/s through threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.utils import percent_encode

from proximate.sync.checksums import ChecksumError, from_etag
from proximate.sync.s3client import S3Client, open_client
from proximate.sync.transport import Connections

T = TypeVar("T")
SinkT = TypeVar("SinkT", bound="Sink")

#: HTTP statuses and S3 error codes worth retrying: throttling and server-side faults.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError"}
)


class SourceError(RuntimeError):
    """The source cannot be listed (down server, missing bucket, no access): nothing is written."""


class S3ReadError(OSError):
    """A GET answered with an error status; shaped like botocore's errors so retry rules apply alike."""

    def __init__(self, key: str, status: int, code: str | None) -> None:
        super().__init__(f"GET of {key!r} answered HTTP {status} {code or ''}".rstrip())
        self.response = {"ResponseMetadata": {"HTTPStatusCode": status}, "Error": {"Code": code or str(status)}}


_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


class Sink(Protocol):
    """Where :meth:`Source.fetch` puts a range's bytes as they arrive (called in a worker thread).

    A sink may also lend its own memory: with ``buffer(limit)`` (a writable view of at most ``limit`` bytes) and
    ``filled(n)`` (its first ``n`` bytes arrived), an S3 body is received straight into it, with no bytes
    object per chunk; :class:`~proximate.sync.engine` uses that for aligned, direct writes."""

    received: int

    def feed(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class RemoteObject:
    """One object to mirror: where to read it, where it goes (relative to the root), what it should be."""

    path: str
    rel: str
    size: int
    fingerprint: str
    etag: str | None = None

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


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx and dropped connections are transient; 403/404 and bad input are not."""
    if isinstance(exc, ChecksumError | asyncio.TimeoutError | ConnectionError):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        return status in RETRY_STATUSES or code in RETRY_CODES or str(code) in {str(s) for s in RETRY_STATUSES}
    name = type(exc).__name__
    # botocore / aiohttp connection-level failures, without importing their exception trees here.
    return name in {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ClientOSError",
        "ClientConnectorError",
        "ServerTimeoutError",
        "ProtocolError",  # urllib3: connection broken mid-body (IncompleteRead) or reset
        "NewConnectionError",
        "IncompleteRead",
        "FlexibleChecksumError",  # botocore checked the body against the CRC stored with the object
    }


def _delay(exc: Exception, attempt: int, retries: int, backoff: float) -> float | None:
    """Seconds to wait before retry ``attempt`` after ``exc`` (``backoff * 2**i``, full jitter, capped at 20 s),
    or None when it is not worth retrying."""
    if attempt >= retries or not is_retryable(exc):
        return None
    return random.uniform(0, min(20.0, backoff * 2**attempt))


async def with_retries(call: Callable[[], Awaitable[T]], *, retries: int, backoff: float) -> T:
    """Run ``call``; on a transient error wait (see :func:`_delay`) and try again."""
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            delay = _delay(exc, attempt, retries, backoff)
            if delay is None:
                raise
            await asyncio.sleep(delay)
            attempt += 1


def with_retries_blocking(call: Callable[[], T], *, retries: int, backoff: float) -> T:
    """:func:`with_retries` for a worker thread."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            delay = _delay(exc, attempt, retries, backoff)
            if delay is None:
                raise
            time.sleep(delay)
            attempt += 1


_SIGNED_QUERY = re.compile(r"(X-Amz-[A-Za-z-]+|AWSAccessKeyId|Signature|x-amz-security-token)=[^&\s'\"]*", re.I)


def describe(exc: BaseException) -> str:
    """A one-line error for reports: the type and message, with any presigned-URL query (key id, signature,
    session token) blanked, so nothing that authenticates reaches results, logs or artifacts."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = _SIGNED_QUERY.sub(r"\1=...", text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Source:
    """An fsspec source tree opened for one run (create and use inside one event loop)."""

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
        self.retries = retries
        self.backoff = backoff
        options = dict(storage_options or {})
        self.protocol, sep, path = url.partition("://")
        self.is_s3 = bool(sep) and self.protocol in ("s3", "s3a")
        self._verify: Any = None
        self._options: dict[str, Any] = {}
        if self.is_s3:
            client_kwargs = options.get("client_kwargs") or {}
            self._verify = client_kwargs.get("verify")
            config = dict(options.pop("config_kwargs", None) or {})
            config.setdefault("max_pool_connections", max(10, concurrency))
            # Retries are ours (bounded, with jitter, per request); botocore's would multiply them.
            config.setdefault("retries", {"max_attempts": 1, "mode": "standard"})
            # Bodies are checked here (size, MD5 ETag or multipart ETag); a second CRC pass only costs CPU.
            config.setdefault("response_checksum_validation", "when_required")
            # SigV4: a GET signs x-amz-checksum-mode, so S3 answers with the object's stored checksum.
            config.setdefault("signature_version", "s3v4")
            options["config_kwargs"] = config
            self._options = options
            bucket, _, prefix = path.partition("/")
            if not bucket:
                raise SourceError(f"source {url!r} names no bucket")
            self.bucket = bucket
            self.prefix = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
        else:
            import fsspec  # here only: an S3 source never needs it

            self.protocol = fsspec.core.split_protocol(url)[0] or "file"
            self.fs = fsspec.filesystem(self.protocol, skip_instance_cache=True, **options)
            self.root = self.fs._strip_protocol(url).rstrip("/")
        self.concurrency = concurrency
        self._client: S3Client | None = None
        self._url_base: str | None = None
        self._http: Connections | None = None
        #: Threads that read object bytes (one per request slot): see the module docstring.
        self.threads: concurrent.futures.ThreadPoolExecutor | None = None

    async def __aenter__(self) -> Source:
        self.threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, self.concurrency), thread_name_prefix="proximate-fetch"
        )
        if self.is_s3:
            self._client = await open_client(self._options)
            # Object bytes travel over plain HTTP connections with signed headers: botocore's per-response work
            # (hooks, header and date parsing) costs more CPU than the transfer itself for MiB-sized objects.
            self._http = Connections(self._verify, max(10, self.concurrency))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.threads is not None:
            self.threads.shutdown(wait=True)
            self.threads = None
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> S3Client:
        assert self._client is not None, "source is not open"
        return self._client

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(call, retries=self.retries, backoff=self.backoff)

    # -- listing -----------------------------------------------------------------------------------------------

    async def list(self) -> list[tuple[str, str, int, str, str | None]]:
        """Every object below the source: (read path, key relative to the source, size, fingerprint, etag)."""
        try:
            if self.is_s3:
                return await self._list_s3()
            return await asyncio.to_thread(self._list_fs)
        except Exception as exc:
            raise SourceError(f"cannot list source {self.url!r}: {describe(exc)}") from exc

    async def _list_s3(self) -> list[tuple[str, str, int, str, str | None]]:
        out: list[tuple[str, str, int, str, str | None]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._retry(lambda kw=kwargs: self.client.call("list_objects_v2", **kw))
            for item in page.get("Contents", []):
                key = item["Key"]
                etag = (item.get("ETag") or "").strip('"') or None
                fingerprint = f"etag:{etag}" if etag else f"mtime:{item.get('LastModified')}"
                out.append((key, key[len(self.prefix) :], int(item["Size"]), fingerprint, etag))
            if not page.get("IsTruncated"):
                return out
            token = page.get("NextContinuationToken")
            if not token:
                return out

    def _list_fs(self) -> list[tuple[str, str, int, str, str | None]]:
        if not self.fs.exists(self.root):
            raise FileNotFoundError(f"{self.root} does not exist")
        found = self.fs.find(self.root, detail=True)
        out = []
        base = self.root + "/"
        for name, info in found.items():
            if info.get("type") != "file" or not name.startswith(base):
                continue
            etag = info.get("ETag") or info.get("etag")
            etag = etag.strip('"') if isinstance(etag, str) else None
            if etag:
                fingerprint = f"etag:{etag}"
            elif info.get("version_id"):
                fingerprint = f"version:{info['version_id']}"
            else:
                fingerprint = f"mtime:{info.get('mtime') or info.get('LastModified') or info.get('last_modified')}"
            out.append((name, name[len(base) :], int(info["size"]), fingerprint, etag))
        return out

    # -- reading -----------------------------------------------------------------------------------------------

    async def address(self, obj: RemoteObject) -> ObjectAddress | None:
        """Where GETs of ``obj`` go and how they are signed (None for non-S3 sources).

        botocore's ``generate_presigned_url`` resolves the endpoint and runs its event hooks on every call (about
        0.9 ms of CPU, more than receiving a 1 MiB object); so the object URL's shape is learned from it once, and
        each GET's headers are then signed with botocore's SigV4 signer in the reading thread. Header signing
        also keeps URLs short and free of credentials (urllib3, on the proxy path, re-encodes a URL character by
        character: a presigned query cost 0.3 ms per request)."""
        if not self.is_s3:
            return None
        if self._url_base is None:
            self._url_base = await self._learn_url_base()
        credentials = await self.client.credentials() if self._url_base else None
        if credentials is None:  # anonymous, or another signature version: botocore's own URL, as it signs it
            return ObjectAddress(await self._presign(obj.path))
        return ObjectAddress(self._url_base + percent_encode(obj.path, safe="/~"), credentials, self.client.region)

    async def _presign(self, key: str) -> str:
        return await self.client.call(
            "generate_presigned_url",
            ClientMethod="get_object",
            Params={"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"},
            ExpiresIn=3600,
        )

    async def _learn_url_base(self) -> str:
        """The URL an object key is appended to, as botocore builds it (path or virtual-host style); "" when
        botocore does not sign with SigV4 here, so every URL is left to it."""
        probe = "proximate-probe"
        url = await self._presign(probe)
        base, _, query = url.partition("?")
        if "X-Amz-Algorithm=AWS4-HMAC-SHA256" in query and base.endswith("/" + probe):
            return base[: -len(probe)]
        return ""

    def _read_s3(
        self, obj: RemoteObject, start: int, end: int, address: ObjectAddress, sink: Sink, chunk: int
    ) -> Mapping[str, str]:
        """One GET of bytes ``[start, end)`` into ``sink``; returns the response headers (blocking)."""
        assert self._http is not None, "source is not open"
        headers = {"x-amz-checksum-mode": "ENABLED"}  # S3 answers with the object's x-amz-checksum-*
        if obj.etag:
            headers["If-Match"] = f'"{obj.etag}"'  # the object changed since listing: fail, not mix
        if end - start != obj.size:
            headers["Range"] = f"bytes={start}-{end - 1}"
        resp = self._http.get(address.url, address.sign(headers))
        received = 0
        try:
            if resp.status not in (200, 206):
                found = _ERROR_CODE.search(resp.read(64 * 1024))
                raise S3ReadError(obj.path, resp.status, found.group(1).decode() if found else None)
            lend = getattr(sink, "buffer", None)
            if lend is not None:
                while True:  # at least one read, even of an empty body: http.client frees the connection on it
                    view = lend(end - start - received)
                    n = resp.readinto(view)
                    if n:
                        sink.filled(n)  # type: ignore[attr-defined]
                        received += n
                    # a buffered socket read stops short only at the end of the stream
                    if n < len(view) or received >= end - start:
                        break
            else:
                while data := resp.read(chunk):
                    sink.feed(data)
                    received += len(data)
            return resp.headers
        finally:
            # cut short (or an error): this connection cannot carry another request
            self._http.done(resp, complete=received == end - start)

    def fetch(
        self,
        obj: RemoteObject,
        start: int,
        end: int,
        begin: Callable[[], SinkT],
        *,
        address: ObjectAddress | None = None,
        chunk: int = 2**20,
    ) -> tuple[SinkT, Mapping[str, str]]:
        """Feed bytes ``[start, end)`` of ``obj`` to a fresh ``begin()`` sink as they arrive (blocking: call it in
        :attr:`threads`); a transient fault restarts the range with a new sink. Returns the sink and the response
        headers (where S3 puts the object's stored checksum). ``address`` is required for S3 (see :meth:`address`)."""

        def once() -> tuple[SinkT, Mapping[str, str]]:
            sink = begin()
            headers: Mapping[str, str] = {}
            if self.is_s3:
                assert address is not None, "S3 reads need the object's address"
                headers = self._read_s3(obj, start, end, address, sink, chunk)
            else:
                step = 4 * chunk  # each read opens the file: fewer, larger reads for local and mounted sources
                for off in range(start, end, step):
                    sink.feed(self.fs.cat_file(obj.path, off, min(end, off + step)))
            if sink.received != end - start:
                raise ChecksumError(
                    f"short read of {obj.path!r}: got {sink.received} of {end - start} bytes at {start}"
                )
            return sink, headers

        return with_retries_blocking(once, retries=self.retries, backoff=self.backoff)

    async def checksum_headers(self, obj: RemoteObject) -> Mapping[str, str]:
        """The ``x-amz-checksum-*`` headers a HEAD returns for the whole object ({} where there are none)."""
        if not self.is_s3:
            return {}
        try:
            head = await self._retry(
                lambda: self.client.call("head_object", Bucket=self.bucket, Key=obj.path, ChecksumMode="ENABLED")
            )
        except Exception:
            return {}
        return head.get("ResponseMetadata", {}).get("HTTPHeaders", {})

    async def part_size(self, obj: RemoteObject, parts: int | None) -> int | None:
        """Size of part 1 of an S3 object uploaded in ``parts`` parts (the count a part-wise checksum states, its
        ETag's or a COMPOSITE one's), to recompute that checksum; None where the store cannot say."""
        if not self.is_s3 or not parts:
            return None
        try:
            head = await self._retry(
                lambda: self.client.call("head_object", Bucket=self.bucket, Key=obj.path, PartNumber=1)
            )
        except Exception:
            return None
        size = int(head.get("ContentLength") or 0)
        return size if 0 < size < obj.size or parts == 1 else None
