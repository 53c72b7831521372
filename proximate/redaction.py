"""Secrets never shown: URLs without their credentials, and log records of the S3 and HTTP libraries scrubbed.

Every place that shows a URL (``describe()``, artifacts, error messages) passes it through :func:`redact_url`.
botocore at DEBUG logs each request's parameters and headers, the SSE-C key among them (``SSECustomerKey``,
``x-amz-server-side-encryption-customer-key``); :func:`install_log_redaction`, called where an S3 client is built,
scrubs those and any registered secret from the records of those libraries before any handler sees them.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

#: Loggers whose records are scrubbed: the AWS SDKs, s3fs/fsspec and the HTTP stacks under them.
SCRUBBED_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer", "s3fs", "fsspec", "urllib3", "aiohttp",
                    "opensearch", "opensearchpy", "requests")  # fmt: skip

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")
#: A header or parameter that carries a secret, as botocore prints it (dict reprs, ``name: value`` lines).
_SECRET_FIELD = re.compile(
    r"(?P<name>x-amz-(?:copy-source-)?server-side-encryption-customer-key(?!-md5)|x-amz-security-token"
    r"|(?:CopySource)?SSECustomerKey(?!MD5)|aws_secret_access_key|aws_session_token|SecretAccessKey|SessionToken"
    r"|password|passwd)"
    r"(?P<sep>['\"]?\s*[:=]\s*)"
    r"(?P<value>b?'(?:[^'\\]|\\.)*'|b?\"(?:[^\"\\]|\\.)*\"|[^\s,}&]+)",
    re.IGNORECASE,
)
_SIGNATURE = re.compile(r"(?P<name>Signature=|X-Amz-Signature=)(?P<value>[0-9a-fA-F]+)")

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def redact_url(url: str | None) -> str | None:
    """``url`` with its user name and password replaced by ``***`` (and nothing else changed).

    Examples:
        >>> redact_url("https://admin:hunter2@search.example:9200/x")
        'https://***@search.example:9200/x'
        >>> redact_url("https://search.example:9200")
        'https://search.example:9200'
    """
    if not url:
        return url
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", url)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its userinfo, and the user name and password it held (percent-decoded), if any.

    Examples:
        >>> split_credentials("https://admin:p%40ss@search.example:9200")
        ('https://search.example:9200', 'admin', 'p@ss')
    """
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return (
        bare,
        urllib.parse.unquote(user) or None,
        urllib.parse.unquote(password) if has_password else None,
    )


def _forms(secret: str | bytes) -> set[str]:
    """The ways a secret may appear in a log line: itself, its ``repr``, base64 and hex (for bytes)."""
    if isinstance(secret, str):
        raw = secret.encode()
        forms = {secret, repr(secret)[1:-1]}
    else:
        raw = bytes(secret)
        forms = {repr(raw), repr(raw)[2:-1], raw.hex()}
        with contextlib.suppress(UnicodeDecodeError):
            forms.add(raw.decode())
    forms.add(base64.b64encode(raw).decode())
    return {f for f in forms if len(f) >= 6}  # a short "secret" would blank out ordinary words


def register_secrets(secrets: Iterable[str | bytes | None]) -> None:
    """Scrub these values (and their repr, base64 and hex forms) from the scrubbed loggers' records."""
    with _lock:
        for secret in secrets:
            if secret:
                _secrets.update(_forms(secret))


def redact_text(text: str) -> str:
    """``text`` with registered secrets, secret-bearing fields, request signatures and URL credentials masked.

    Examples:
        >>> redact_text("{'x-amz-server-side-encryption-customer-key': 'c2VjcmV0'}")
        "{'x-amz-server-side-encryption-customer-key': ***}"
    """
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _SECRET_FIELD.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    text = _SIGNATURE.sub(lambda m: f"{m.group('name')}{MASK}", text)
    return redact_url(text) or text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with :func:`redact_text` (the record is kept, its secrets masked)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub(record)
        return True


def scrub(record: logging.LogRecord) -> logging.LogRecord:
    """Format ``record``'s message once and mask its secrets (exception text included)."""
    try:
        message = record.getMessage()
    except Exception:  # a record whose arguments do not format: leave it to the handler to report
        return record
    record.msg, record.args = redact_text(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
    return record


def install_log_redaction(secrets: Iterable[str | bytes | None] = ()) -> None:
    """Scrub every record of :data:`SCRUBBED_LOGGERS` (and their children, present or future) as it is made,
    before any handler or level sees it; register ``secrets`` to be masked too. Idempotent.

    A filter on the ``botocore`` logger would miss ``botocore.endpoint``'s records (a logger's filters apply only
    to records made by that logger), hence the record factory, restricted to these libraries' loggers.

    Examples:
        >>> install_log_redaction([b"0123456789abcdef0123456789abcdef"])
    """
    global _installed
    register_secrets(secrets)
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()
    prefixes = tuple(f"{name}." for name in SCRUBBED_LOGGERS)

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name in SCRUBBED_LOGGERS or record.name.startswith(prefixes):
            scrub(record)
        return record

    logging.setLogRecordFactory(factory)


def storage_secrets(options: Mapping[str, Any]) -> list[Any]:
    """The secrets s3fs-style storage ``options`` hold: the secret key, session token and SSE-C key."""
    client_kwargs = options.get("client_kwargs") or {}
    extra = options.get("s3_additional_kwargs") or {}
    return [
        options.get("secret"),
        options.get("password"),  # s3fs's other name for the secret key
        options.get("token"),
        client_kwargs.get("aws_secret_access_key"),
        client_kwargs.get("aws_session_token"),
        extra.get("SSECustomerKey"),
        extra.get("CopySourceSSECustomerKey"),
    ]
