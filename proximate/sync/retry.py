"""Which failures are transient, retrying them with backoff, and error text safe to report."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proximate.sync.checksums import ChecksumError

T = TypeVar("T")

#: HTTP statuses and S3 error codes worth retrying: throttling and server-side faults.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError"}
)
#: Seconds at most between two attempts.
MAX_DELAY = 20.0


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
    """Seconds to wait before retry ``attempt`` after ``exc`` (``backoff * 2**i``, full jitter, capped at
    MAX_DELAY), or None when it is not worth retrying."""
    if attempt >= retries or not is_retryable(exc):
        return None
    return random.uniform(0, min(MAX_DELAY, backoff * 2**attempt))


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
