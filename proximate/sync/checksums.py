"""The checksums a store keeps for an object, and incremental hashers that check bytes as they stream in.

S3 offers the MD5 ETag (single-part uploads without SSE-KMS), the multipart ETag (the MD5 of the parts' MD5s,
``-N``) and, for objects uploaded with one (boto3's default since 2025), an additional checksum: CRC32, CRC32C,
SHA-1 or SHA-256 over the whole object, or COMPOSITE (the checksum of the parts' checksums, ``-N``). A CRC costs a
fraction of MD5's CPU (CRC32C in hardware, CRC32 through ISA-L's SIMD code, or zlib's), and hashing is most of a
sync's CPU after the copies themselves, so the cheapest checksum the store offers is the one checked.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol


class ChecksumError(OSError):
    """Bytes received do not match what the source says it holds (size or checksum)."""


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A CRC as a hashlib-like object; the digest is big-endian, as S3 encodes it."""

    def __init__(self, func: Callable[[bytes | bytearray | memoryview, int], int]) -> None:
        self._func = func
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self._value = self._func(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


try:  # ISA-L's CRC32 (SIMD, releases the GIL); zlib's gives the same values, more slowly
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - no isal wheel for this platform
    _crc32 = zlib.crc32


def _crc32c(data: bytes | bytearray | memoryview, value: int) -> int:
    import google_crc32c  # zarr's dependency; hardware CRC32C. Imported here: most objects carry no CRC32C

    # it takes only immutable bytes: a bytearray, or a view of a reused receive buffer, is copied first
    return google_crc32c.extend(value, data if isinstance(data, bytes) else bytes(data))


#: What can be checked, cheapest first (each releases the GIL on large buffers).
HASHERS: dict[str, Callable[[], Hasher]] = {
    "crc32c": lambda: _Crc(_crc32c),
    "crc32": lambda: _Crc(_crc32),
    "sha256": hashlib.sha256,
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
}
_SIMPLE_ETAG = re.compile(r"^([0-9a-f]{32})(?:-(\d+))?$")
_CHECKSUM = re.compile(r"^([A-Za-z0-9+/=]+)(?:-(\d+))?$")


@dataclass(frozen=True)
class Expected:
    """A digest the store vouches for: over the whole object, or over its ``parts`` part digests."""

    algorithm: str
    digest: bytes
    parts: int | None
    source: str  # where it came from, for messages: "ETag" or "x-amz-checksum-crc32"

    @property
    def name(self) -> str:
        return "multipart checksum" if self.parts else self.algorithm.upper()

    def new(self) -> Hasher:
        return HASHERS[self.algorithm]()

    def verify(self, key: str, digests: list[bytes]) -> None:
        """Raise ``ChecksumError`` unless ``digests`` (one per part, or one for the whole) give the expected one."""
        if self.parts:
            if len(digests) != self.parts:
                raise ChecksumError(f"{key!r} came in {len(digests)} parts, its {self.source} says {self.parts}")
            h = self.new()
            h.update(b"".join(digests))
            got = h.digest()
        else:
            got = digests[0]
        if got != self.digest:
            suffix = f"-{self.parts}" if self.parts else ""
            raise ChecksumError(
                f"{self.name} ({self.algorithm}) of {key!r} is {_show(self, got)}{suffix}, "
                f"its {self.source} says {_show(self, self.digest)}{suffix}"
            )


def _show(expected: Expected, digest: bytes) -> str:
    return digest.hex() if expected.source == "ETag" else base64.b64encode(digest).decode()


def from_etag(etag: str | None) -> Expected | None:
    """The MD5 an ETag encodes, when it is one (SSE-KMS and some stores use opaque ETags)."""
    m = _SIMPLE_ETAG.match(etag or "")
    if not m:
        return None
    return Expected("md5", bytes.fromhex(m.group(1)), int(m.group(2)) if m.group(2) else None, "ETag")


def from_headers(headers: Mapping[str, str]) -> Expected | None:
    """The cheapest additional checksum among ``x-amz-checksum-*`` response headers, if any."""
    lower = {k.lower(): v for k, v in headers.items()}
    for algorithm in HASHERS:
        if algorithm == "md5":
            continue
        value = lower.get(f"x-amz-checksum-{algorithm}")
        m = _CHECKSUM.match(value or "")
        if not m:
            continue
        try:
            digest = base64.b64decode(m.group(1), validate=True)
        except ValueError:
            continue
        return Expected(algorithm, digest, int(m.group(2)) if m.group(2) else None, f"x-amz-checksum-{algorithm}")
    return None


def choose(headers: Mapping[str, str], etag: str | None, *, multipart: bool) -> Expected | None:
    """What to check a read against: the cheapest additional checksum, else the MD5 ETag.

    For a part-wise read of a multipart object (``multipart``) only part-wise checksums (``-N``) qualify: a
    FULL_OBJECT CRC over a multipart upload is skipped for the ETag, which is part-wise.
    """
    extra = from_headers(headers)
    if extra is not None and (not multipart or extra.parts):
        return extra
    return from_etag(etag)
