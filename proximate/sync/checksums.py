"""The checksums a store keeps for an object, and incremental hashers that check bytes as they stream in.

S3 offers the MD5 ETag (single-part uploads without SSE-KMS), the multipart ETag (the MD5 of the parts' MD5s,
``-N``) and, for objects uploaded with one (boto3's default since 2025, and S3's own CRC64NVME for every object
uploaded without another since then), an additional checksum: CRC64NVME, CRC32, CRC32C, SHA-1 or SHA-256 over the
whole object (FULL_OBJECT, also for a multipart upload), or COMPOSITE (the checksum of the parts' checksums,
``-N``). A CRC costs a fraction of MD5's CPU (CRC32C in hardware, CRC32 through ISA-L's SIMD code, CRC64NVME
through anycrc's), and hashing is most of a sync's CPU after the copies themselves, so the cheapest checksum the
store offers is the one checked.

An object encrypted with SSE-KMS (``aws:kms``, ``aws:kms:dsse``) or SSE-C has an ETag that looks like an MD5 and
is not one: the response headers say so (``x-amz-server-side-encryption``, ``x-amz-server-side-encryption-customer-
algorithm``) and such an ETag is never checked. An object with nothing to check is checked by its size alone.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from proximate.errors import ProximateError


class ChecksumError(ProximateError, OSError):
    """Bytes received do not match what the source says it holds (size or checksum)."""


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A CRC as a hashlib-like object; the digest is big-endian, as S3 encodes it (``size`` bytes)."""

    def __init__(self, func: Callable[[bytes | bytearray | memoryview, int], int], size: int = 4) -> None:
        self._func = func
        self._value = 0
        self._size = size

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self._value = self._func(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")


try:  # ISA-L's CRC32 (SIMD, releases the GIL); zlib's gives the same values, more slowly
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - no isal wheel for this platform
    _crc32 = zlib.crc32


def _crc32c(data: bytes | bytearray | memoryview, value: int) -> int:
    import google_crc32c  # zarr's dependency; hardware CRC32C. Imported here: most objects carry no CRC32C

    # it takes only immutable bytes: a bytearray, or a view of a reused receive buffer, is copied first
    return google_crc32c.extend(value, data if isinstance(data, bytes) else bytes(data))


_CRC64NVME: Any = None


def _crc64nvme(data: bytes | bytearray | memoryview, value: int) -> int:
    """CRC-64/NVME (S3's CRC64NVME) through anycrc's table-driven code, gigabytes a second; imported on first use
    (botocore's own, awscrt, would load with botocore itself, in every process, and switch its signers to CRT)."""
    global _CRC64NVME
    if _CRC64NVME is None:
        import anycrc

        _CRC64NVME = anycrc.Model("CRC64-NVME")
    return _CRC64NVME.calc(data, value)


#: What can be checked, cheapest first (each releases the GIL on large buffers but anycrc, whose CRC64NVME runs at
#: several GB/s: it holds the GIL about 0.1 ms per MiB).
HASHERS: dict[str, Callable[[], Hasher]] = {
    "crc32c": lambda: _Crc(_crc32c),
    "crc32": lambda: _Crc(_crc32),
    "crc64nvme": lambda: _Crc(_crc64nvme, 8),
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


#: ``x-amz-server-side-encryption`` values whose objects' ETags are not the MD5 of their bytes.
OPAQUE_ETAG_ENCRYPTION = frozenset({"aws:kms", "aws:kms:dsse"})


def etag_is_md5(headers: Mapping[str, str]) -> bool:
    """Whether an object's ETag may be taken for its MD5 (or multipart MD5), by the response headers of a GET or
    HEAD of it: not for SSE-KMS (``aws:kms``, ``aws:kms:dsse``) nor SSE-C, whose ETags are opaque."""
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("x-amz-server-side-encryption-customer-algorithm"):
        return False
    return lower.get("x-amz-server-side-encryption", "").strip().lower() not in OPAQUE_ETAG_ENCRYPTION


def choose(headers: Mapping[str, str], etag: str | None, *, multipart: bool) -> Expected | None:
    """What to check a read against: the cheapest additional checksum, else the MD5 ETag where it is one, else
    nothing (the size alone is checked).

    For a multipart object read part by part (``multipart``) a part-wise check (a COMPOSITE checksum, ``-N``, or
    the multipart ETag) comes first, since its parts stream in parallel; a FULL_OBJECT checksum (no ``-N``) serves
    when there is none (an encrypted object's ETag), and the caller then streams the object whole, in order.
    """
    extra = from_headers(headers)
    md5 = from_etag(etag) if etag_is_md5(headers) else None
    if extra is not None and (not multipart or extra.parts):
        return extra
    return md5 or extra
