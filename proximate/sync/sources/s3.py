"""An S3 prefix as a source: raw ``list_objects_v2`` pages, HEADs for stored checksums and part sizes, and
ranged GETs with SigV4-signed headers over plain keep-alive connections.

The client (:mod:`proximate.sync.s3client`, built from s3fs-style storage options) lists with raw
``list_objects_v2`` pages so every key is seen exactly as stored, hostile ones included. Object bytes are read
by :meth:`S3Source.fetch` in worker threads, blocking, over one keep-alive connection per thread
(:mod:`proximate.sync.transport`): receiving, hashing and writing all release the GIL, so the reads of several
objects use every core, where one event loop receiving every byte would run on one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from botocore.utils import percent_encode

from proximate.errors import ProximateError, ProximateInputError
from proximate.sync.s3client import S3Client, find_bucket_region, in_region, open_client
from proximate.sync.sources.base import (
    ColdObjectError,
    ObjectAddress,
    RemoteObject,
    Sink,
    SourceError,
    ThreadedSource,
)
from proximate.sync.transport import Connections

#: Bytes of an error response read to find its S3 error code.
ERROR_BODY_LIMIT = 64 * 1024
#: Seconds a presigned URL (anonymous reads, or botocore signing other than SigV4) stays valid.
PRESIGN_EXPIRES = 3600
#: Keys per listing page (S3's maximum).
LIST_PAGE = 1000
#: Connections botocore and the reading transport keep at least.
MIN_POOL = 10

#: Storage classes whose objects must be restored before a GET (GLACIER is Glacier Flexible Retrieval; Glacier
#: Instant Retrieval, GLACIER_IR, reads like STANDARD).
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
#: The ``s3_additional_kwargs`` (s3fs's per-call parameters) the sync applies to its own calls.
ADDITIONAL_KWARGS = frozenset({"SSECustomerAlgorithm", "SSECustomerKey", "RequestPayer"})

_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


def is_cold(item: Mapping[str, Any]) -> bool:
    """Whether a listing entry is archived and not restored: an archive class without a finished restore (the
    listing's ``RestoreStatus``, asked for with ``OptionalObjectAttributes``)."""
    if item.get("StorageClass") not in ARCHIVE_CLASSES:
        return False
    restore = item.get("RestoreStatus") or {}
    return not (restore.get("RestoreExpiryDate") and not restore.get("IsRestoreInProgress"))


_SIGNED_REGION = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/s3/aws4_request")


class S3ReadError(ProximateError, OSError):
    """A GET answered with an error status; shaped like botocore's errors so retry rules apply alike.
    ``detail`` says what the answer means and what to do, where the code alone would not."""

    def __init__(self, key: str, status: int, code: str | None, detail: str = "") -> None:
        answer = f"GET of {key!r} answered HTTP {status} {code or ''}".rstrip()
        super().__init__(f"{answer}: {detail}" if detail else answer)
        self.response = {"ResponseMetadata": {"HTTPStatusCode": status}, "Error": {"Code": code or str(status)}}


def is_s3_url(url: str) -> bool:
    """Whether ``url`` names an S3 bucket (``s3://`` or ``s3a://``)."""
    protocol, sep, _ = url.partition("://")
    return bool(sep) and protocol in ("s3", "s3a")


class S3Source(ThreadedSource):
    """An S3 prefix opened for one run (see :class:`~proximate.sync.sources.base.Source`): ``s3://bucket/prefix``
    (or ``s3a://``), the prefix read as a folder, with s3fs-style storage options (see
    :mod:`proximate.sync.s3client`); arguments as :class:`~proximate.sync.sources.base.ThreadedSource` takes them.

    Raises:
        SourceError: The URL names no bucket.
    """

    def _configure(self, options: dict[str, Any]) -> None:
        _, _, path = self.url.partition("://")
        self._additional(options)
        client_kwargs = options.get("client_kwargs") or {}
        self._verify: Any = client_kwargs.get("verify")
        config = dict(options.pop("config_kwargs", None) or {})
        config.setdefault("max_pool_connections", max(MIN_POOL, self.concurrency))
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
            raise SourceError(f"source {self.url!r} names no bucket")
        self.bucket = bucket
        self.prefix = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
        self._client: S3Client | None = None
        self._url_base: str | None = None
        self._signing_region: str | None = None
        self._region_answers = ""  # what the bucket-region look-up was told (see _learn_url_base)
        self._replaced: list[S3Client] = []  # clients replaced by one in the bucket's region, closed at exit
        self._learning = asyncio.Lock()
        self._http: Connections | None = None

    def _additional(self, options: dict[str, Any]) -> None:
        """Take s3fs's ``requester_pays`` and ``s3_additional_kwargs`` (SSE-C key, RequestPayer) for the sync's own
        calls: every listing and HEAD gets them as botocore parameters, every GET the headers botocore itself
        puts on such a ``get_object`` (see :meth:`_learn_url_base`)."""
        extra = dict(options.get("s3_additional_kwargs") or {})
        unknown = sorted(set(extra) - ADDITIONAL_KWARGS)
        if unknown:
            raise ProximateInputError(
                f"s3_additional_kwargs {unknown} mean nothing to a sync (it reads: {sorted(ADDITIONAL_KWARGS)})"
            )
        payer = bool(options.get("requester_pays")) or extra.get("RequestPayer") == "requester"
        self._list_params: dict[str, Any] = {"RequestPayer": "requester"} if payer else {}
        self._object_params: dict[str, Any] = dict(self._list_params)
        self._get_headers: dict[str, str] = {}
        key = extra.get("SSECustomerKey")
        if key is not None:
            algorithm = extra.get("SSECustomerAlgorithm") or "AES256"
            self._object_params.update(SSECustomerAlgorithm=algorithm, SSECustomerKey=key)

    async def __aenter__(self) -> S3Source:
        await super().__aenter__()
        self._client = await open_client(self._options)
        # Object bytes travel over plain HTTP connections with signed headers: botocore's per-response work
        # (hooks, header and date parsing) costs more CPU than the transfer itself for MiB-sized objects.
        self._http = Connections(self._verify, max(MIN_POOL, self.concurrency))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        for old in self._replaced:
            await old.close()
        self._replaced.clear()

    @property
    def client(self) -> S3Client:
        assert self._client is not None, "source is not open"
        return self._client

    # -- listing -----------------------------------------------------------------------------------------------

    async def _list(self) -> list[RemoteObject]:
        out: list[RemoteObject] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": self.prefix,
                "MaxKeys": LIST_PAGE,
                "OptionalObjectAttributes": ["RestoreStatus"],  # whether an archived object was restored
                **self._list_params,
            }
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._retry(lambda kw=kwargs: self.client.call("list_objects_v2", **kw))
            for item in page.get("Contents", []):
                key = item["Key"]
                etag = (item.get("ETag") or "").strip('"') or None
                fingerprint = f"etag:{etag}" if etag else f"mtime:{item.get('LastModified')}"
                storage = item.get("StorageClass")
                rel = key[len(self.prefix) :]
                out.append(RemoteObject(key, rel, int(item["Size"]), fingerprint, etag, storage, is_cold(item)))
            if not page.get("IsTruncated"):
                return out
            token = page.get("NextContinuationToken")
            if not token:
                # A listing is complete only when S3 says so: ending here would take every later key for deleted.
                raise SourceError(
                    f"listing of {self.url!r} stopped after {len(out)} keys: a page says it is truncated but gives "
                    "no continuation token; refusing to take an incomplete listing for the source"
                )

    # -- reading -----------------------------------------------------------------------------------------------

    async def address(self, obj: RemoteObject) -> ObjectAddress:
        """Where GETs of ``obj`` go and how they are signed.

        botocore resolves the endpoint and runs its event hooks on every call, which costs more CPU than receiving
        a MiB-sized object; so the object URL's shape, its signing region and its SSE-C / requester-pays headers
        are learned once from the request botocore prepares for a ``get_object`` (:meth:`_learn_url_base`), and
        each GET's headers are then signed with botocore's SigV4 signer in the reading thread. Header signing
        also keeps URLs short and free of credentials (urllib3, on the proxy path, re-encodes a URL character by
        character). Anonymous reads get botocore's presigned (unsigned) URL each."""
        if self._url_base is None:
            async with self._learning:  # once per source, however many reads ask at first
                if self._url_base is None:
                    self._url_base = await self._learn_url_base()
        credentials = await self.client.credentials() if self._url_base else None
        if credentials is None:  # anonymous, or another signature version: botocore's own URL, as it signs it
            return ObjectAddress(await self._presign(obj.path))
        region = self._signing_region or self.client.region
        return ObjectAddress(self._url_base + percent_encode(obj.path, safe="/~"), credentials, region)

    async def _presign(self, key: str) -> str:
        return await self.client.call(
            "generate_presigned_url",
            ClientMethod="get_object",
            Params={"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"},
            ExpiresIn=PRESIGN_EXPIRES,
        )

    async def _learn_url_base(self) -> str:
        """The URL an object key is appended to, as botocore builds it (endpoint, path or virtual-host style) for
        the bucket's own region, and that region (:attr:`_signing_region`); "" when botocore does not sign with
        SigV4 here, so every URL is left to it.

        First the bucket's region (:func:`~proximate.sync.s3client.find_bucket_region`): a HeadBucket lets
        botocore's redirector follow S3's answer (a 301, or a 400 with ``x-amz-bucket-region``) and remember the
        region, so the request it then prepares goes to the bucket's regional endpoint, signed for its region.
        When the HeadBucket is refused (403: credentials without s3:ListBucket), the region S3 names in that
        answer, or GetBucketLocation's, or the redirect of a probe GET through botocore; a region so found that
        is not the client's gets a client of its own for the rest of the run (botocore's redirector has no
        public way to be told). tests/test_sync_real_s3.py proves the reads land there in each case."""
        region, self._region_answers = await find_bucket_region(self.client, self.bucket, self._object_params)
        if region and region != self.client.region:
            self._replaced.append(self.client)
            self._client = await open_client(in_region(self._options, region))
        probe = "proximate-probe"
        # Not a presigned URL: botocore signs those for the client's region whatever the bucket's.
        request = await self.client.prepared("get_object", Bucket=self.bucket, Key=probe, **self._object_params)
        base, _, query = request.url.partition("?")
        auth = request.headers.get("Authorization") or ""
        signed = _SIGNED_REGION.search(auth.decode() if isinstance(auth, bytes) else auth)
        if signed is None or query or not base.endswith("/" + probe):
            return ""
        self._signing_region = signed.group(1)
        # The headers botocore puts on such a read for the source's SSE-C key and requester-pays, as it puts them.
        for name, value in request.headers.items():
            if name.lower().startswith(("x-amz-server-side-encryption-customer-", "x-amz-request-payer")):
                self._get_headers[name] = value.decode() if isinstance(value, bytes) else value
        return base[: -len(probe)]

    def _read(
        self, obj: RemoteObject, start: int, end: int, address: ObjectAddress | None, sink: Sink, chunk: int
    ) -> Mapping[str, str]:
        """One GET of bytes ``[start, end)`` into ``sink``; returns the response headers (blocking)."""
        assert address is not None, "S3 reads need the object's address"
        assert self._http is not None, "source is not open"
        headers = {"x-amz-checksum-mode": "ENABLED", **self._get_headers}  # S3 answers with its x-amz-checksum-*
        if obj.etag:
            headers["If-Match"] = f'"{obj.etag}"'  # the object changed since listing: fail, not mix
        if end - start != obj.size:
            headers["Range"] = f"bytes={start}-{end - 1}"
        resp = self._http.get(address.url, address.sign(headers))
        received = 0
        try:
            if resp.status not in (200, 206):
                found = _ERROR_CODE.search(resp.read(ERROR_BODY_LIMIT))
                code = found.group(1).decode() if found else None
                if code in ("AuthorizationHeaderMalformed", "PermanentRedirect") or resp.status == 301:
                    raise S3ReadError(obj.path, resp.status, code, self._wrong_region())
                if resp.status == 403 and code == "InvalidObjectState":
                    raise ColdObjectError(
                        f"{obj.path!r} is archived ({obj.storage_class or 'an archive tier'}), not restored"
                    )
                raise S3ReadError(obj.path, resp.status, code)
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

    def _wrong_region(self) -> str:
        """What a GET refused for its signing region or endpoint means, and what to configure."""
        signed = self._signing_region or self.client.region
        return (
            f"bucket {self.bucket!r} is not in region {signed!r}, which reads are signed for, and its region could "
            f"not be found ({self._region_answers or 'not asked'}); set it in the storage options as "
            "client_kwargs={'region_name': '<its region>'} (a Region block: aws_credentials.region_name), "
            "or allow s3:ListBucket or s3:GetBucketLocation on the bucket"
        )

    async def checksum_headers(self, obj: RemoteObject) -> Mapping[str, str]:
        """The headers a HEAD returns for the whole object: its ``x-amz-checksum-*`` and its encryption, which says
        whether its ETag is an MD5. A HEAD that fails (after retries) fails the object: without it an SSE-KMS
        object's opaque ETag would be taken for an MD5 and the object for corrupt."""
        head = await self._retry(
            lambda: self.client.call(
                "head_object", Bucket=self.bucket, Key=obj.path, ChecksumMode="ENABLED", **self._object_params
            )
        )
        return head.get("ResponseMetadata", {}).get("HTTPHeaders", {})

    async def part_size(self, obj: RemoteObject, parts: int | None) -> int | None:
        """Size of part 1 of an object uploaded in ``parts`` parts (the count a part-wise checksum states, its
        ETag's or a COMPOSITE one's), to recompute that checksum; None where the store cannot say."""
        if not parts:
            return None
        try:
            head = await self._retry(
                lambda: self.client.call(
                    "head_object", Bucket=self.bucket, Key=obj.path, PartNumber=1, **self._object_params
                )
            )
        except Exception:
            return None
        size = int(head.get("ContentLength") or 0)
        return size if 0 < size < obj.size or parts == 1 else None
