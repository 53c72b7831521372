"""The S3 client a source lists, HEADs and signs with, built from s3fs's storage options.

Storage options speak s3fs's vocabulary (``key``, ``secret``, ``token``, ``anon``, ``profile``, ``endpoint_url``,
``client_kwargs``, ``config_kwargs``, ...), which is what Region blocks and users pass. With only those, the client
is botocore's own, built the way s3fs's ``set_session`` builds its aiobotocore client (the same translation and
the same timeouts): the sync needs nothing of s3fs but that client (it lists with raw ``list_objects_v2`` pages
and reads through :mod:`proximate.sync.transport`), and importing s3fs, aiobotocore, aiohttp and httpx costs
several times the CPU of botocore's client before a one-shot sync's first byte. Any other option (an
aiobotocore ``session``, ``cache_regions``, ...) is s3fs's alone to interpret, so such a source gets s3fs's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import os
from collections.abc import Iterator, Mapping
from typing import Any

from botocore import UNSIGNED
from botocore.credentials import ReadOnlyCredentials

from proximate.errors import ProximateInputError
from proximate.redaction import install_log_redaction, storage_secrets

#: Options translated here; any other one sends the source through s3fs itself.
BOTOCORE_OPTIONS = frozenset(
    {"key", "secret", "token", "username", "password", "anon", "profile", "endpoint_url", "use_ssl"}
    | {"client_kwargs", "config_kwargs"}
    # fsspec's own caching options: meaningless for one listing, accepted and ignored as s3fs would use them
    | {"use_listings_cache", "listings_expiry_time", "max_paths", "skip_instance_cache"}
    # per-call parameters (requester pays, an SSE-C key): the source applies them to its own calls
    | {"requester_pays", "s3_additional_kwargs"}
)
#: s3fs's defaults (``S3FileSystem.connect_timeout`` / ``read_timeout``), where botocore's are 60 s each.
CONNECT_TIMEOUT, READ_TIMEOUT = 5, 15


def client_arguments(options: Mapping[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """(profile, ``create_client`` keyword arguments, ``Config`` keyword arguments) for s3fs-style ``options``,
    translated as s3fs's ``S3FileSystem.__init__`` and ``set_session`` translate them."""
    if options.get("key") and options.get("username"):
        raise ProximateInputError("storage options name both 'key' and 'username'; give one")
    if options.get("secret") and options.get("password"):
        raise ProximateInputError("storage options name both 'secret' and 'password'; give one")
    client_kwargs = dict(options.get("client_kwargs") or {})
    given = {
        "aws_access_key_id": options.get("key") or options.get("username"),
        "aws_secret_access_key": options.get("secret") or options.get("password"),
        "aws_session_token": options.get("token"),
        "endpoint_url": options.get("endpoint_url"),
    }
    init = {k: v for k, v in given.items() if v is not None and v != client_kwargs.get(k)}
    clash = sorted(set(init) & set(client_kwargs))
    if clash:
        raise ProximateInputError(
            f"storage options give {', '.join(clash)} twice, differently (top level and client_kwargs)"
        )
    if "use_ssl" not in client_kwargs:
        init["use_ssl"] = options.get("use_ssl", True)
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", CONNECT_TIMEOUT)
    config.setdefault("read_timeout", READ_TIMEOUT)
    if options.get("anon"):
        secrets = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
        init = {k: v for k, v in init.items() if k not in secrets}
        client_kwargs = {k: v for k, v in client_kwargs.items() if k not in secrets}
        config["signature_version"] = UNSIGNED
    return options.get("profile"), {**init, **client_kwargs}, config


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection while heavy modules import: the tens of thousands of objects an import creates are
    not garbage, yet each collection they trigger walks them all again, a sizeable share of the first source's
    start-up."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_PREPARED = itertools.count()


class _Prepared(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("prepared")
        self.request = request


class S3Client:
    """One client's calls, awaited alike whichever client is underneath: botocore's (blocking, so each call runs
    in a thread) or the aiobotocore one of an s3fs file system.

    Args:
        client: The botocore or aiobotocore S3 client.
        blocking: Whether ``client`` is botocore's (its calls block).
        session: The botocore or aiobotocore session ``client`` was created from.
        explicit: The credentials given to ``create_client`` itself, if any (see :func:`explicit_credentials`).
        fs: The s3fs file system that owns ``client``, if one does.
    """

    def __init__(
        self,
        client: Any,
        *,
        blocking: bool,
        session: Any,
        explicit: ReadOnlyCredentials | None = None,
        fs: Any = None,
    ) -> None:
        self._client, self.blocking, self.fs = client, blocking, fs
        self._session, self._explicit = session, explicit
        self._unsigned = client.meta.config.signature_version is UNSIGNED

    @property
    def region(self) -> str:
        return self._client.meta.region_name

    async def call(self, operation: str, **kwargs: Any) -> Any:
        method = getattr(self._client, operation)
        if self.blocking:
            return await asyncio.to_thread(method, **kwargs)
        return await method(**kwargs)

    async def prepared(self, operation: str, **kwargs: Any) -> Any:
        """The HTTP request botocore would send for ``operation(**kwargs)``, not sent: its endpoint, addressing
        style, region (the bucket's, once botocore's redirector learned it), headers and signature, all botocore's.

        The call runs as any other up to the send, where a handler takes the request and stops it."""
        name = self._client.meta.method_to_api_mapping[operation]
        event = f"before-send.s3.{name}"
        unique = f"proximate-prepared-{next(_PREPARED)}"  # one handler per call, never shared between calls

        def capture(request: Any, **_: Any) -> None:
            raise _Prepared(request)

        self._client.meta.events.register_first(event, capture, unique_id=unique)
        try:
            await self.call(operation, **kwargs)
        except _Prepared as done:
            return done.request
        finally:
            self._client.meta.events.unregister(event, unique_id=unique)
        raise AssertionError(f"{operation} was sent")

    async def credentials(self) -> ReadOnlyCredentials | None:
        """The frozen credentials requests are signed with; None when the client does not sign (anonymous).

        These are the ones botocore's ``create_client`` (and aiobotocore's) gives the client's signer: none for
        an unsigned client, else the key and secret passed to it, else its session's (refreshed as they would
        be for the client, since it holds the same credentials object)."""
        if self._unsigned:
            return None
        if self._explicit is not None:
            return self._explicit
        credentials = await _resolved(self._session.get_credentials())
        if credentials is None:
            return None
        return await _resolved(credentials.get_frozen_credentials())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.blocking:
                self._client.close()
            else:
                await self._client.__aexit__(None, None, None)


async def _resolved(value: Any) -> Any:
    """``value``, awaited if it is awaitable (aiobotocore's credential calls are coroutines, botocore's not)."""
    return await value if inspect.isawaitable(value) else value


def explicit_credentials(create_client_kwargs: Mapping[str, Any]) -> ReadOnlyCredentials | None:
    """The credentials ``create_client(**create_client_kwargs)`` signs with regardless of its session: an access
    key and a secret given together (with the session token and account id, if any), as botocore and aiobotocore
    read them; None leaves it to the session."""
    key = create_client_kwargs.get("aws_access_key_id")
    secret = create_client_kwargs.get("aws_secret_access_key")
    if key is None or secret is None:
        return None
    token, account = create_client_kwargs.get("aws_session_token"), create_client_kwargs.get("aws_account_id")
    return ReadOnlyCredentials(key, secret, token, account)


def _botocore_session(profile: str | None) -> Any:
    """A botocore session that leaves timestamps as text: parsing 10,000 LastModified values with dateutil
    would cost seconds of CPU per listing, and the sync only compares them as text."""
    import botocore.session

    session = botocore.session.Session(profile=profile)
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return session


def _aio_session() -> Any:
    """:func:`_botocore_session` for s3fs's aiobotocore client."""
    from aiobotocore.session import AioSession

    session = AioSession()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return session


async def open_client(options: Mapping[str, Any]) -> S3Client:
    """The client for s3fs-style ``options``: botocore's where every option is one :func:`client_arguments`
    translates, else s3fs's. Before either exists, the AWS libraries' log records are set to be scrubbed of the
    options' secrets (SSE-C key, secret key, token) and the environment's, which botocore prints at DEBUG."""
    install_log_redaction(
        [*storage_secrets(options), os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")]
    )
    if set(options) <= BOTOCORE_OPTIONS:
        profile, kwargs, config = client_arguments(options)
        with gc_paused():
            from botocore.config import Config

            session = _botocore_session(profile)
            client = session.create_client("s3", config=Config(**config), **kwargs)
        return S3Client(client, blocking=True, session=session, explicit=explicit_credentials(kwargs))
    options = dict(options)
    options.setdefault("use_listings_cache", False)
    if "session" not in options and "profile" not in options:
        options["session"] = _aio_session()
    with gc_paused():  # the first one imports s3fs, aiobotocore and aiohttp
        import fsspec

        fs = fsspec.filesystem("s3", asynchronous=True, skip_instance_cache=True, **options)
        client = await fs.set_session()
    # s3fs creates its client from fs.session, with its key, secret and token overridden by its client_kwargs
    given = {"aws_access_key_id": fs.key, "aws_secret_access_key": fs.secret, "aws_session_token": fs.token}
    explicit = explicit_credentials({**given, **fs.client_kwargs})
    return S3Client(client, blocking=False, session=fs.session, explicit=explicit, fs=fs)


#: GetBucketLocation's LocationConstraint of the buckets created before regions had names in it.
_LEGACY_LOCATIONS = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}
#: The key of the GET that lets botocore's redirector find a bucket's region when nothing else could say it.
PROBE_KEY = "proximate-region-probe"


def _error_region(exc: Exception) -> str | None:
    """The bucket region an S3 error response names (its ``x-amz-bucket-region`` header, or the ``Region`` of
    its body, which S3 puts in a 400 AuthorizationHeaderMalformed), as botocore's redirector reads them."""
    response = getattr(exc, "response", None) or {}
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    return headers.get("x-amz-bucket-region") or response.get("Error", {}).get("Region") or None


def _error_text(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    if not status:
        return f"{type(exc).__name__}: {exc}"
    return f"HTTP {status}" if code in (None, "", str(status)) else f"HTTP {status} {code}"


async def find_bucket_region(client: S3Client, bucket: str, object_params: Mapping[str, Any]) -> tuple[str | None, str]:
    """Where ``bucket`` is, asked the ways botocore and S3 tell it, for reads that botocore does not send itself.

    1. HeadBucket: when it succeeds botocore's redirector has followed S3's redirect (if any) and knows the
       region, so there is nothing to add (``None``). Refused (403 without s3:ListBucket), S3 still names the
       region in the answer's ``x-amz-bucket-region``, which botocore's redirector would read too.
    2. GetBucketLocation (s3:GetBucketLocation, often granted where ListBucket is not), answered from any region.
    3. A GET of a key that need not exist, through botocore: if the client's region is wrong S3 refuses it with
       the region in the answer, which the redirector follows and remembers (then ``None``: botocore knows).

    Args:
        client: The source's client.
        bucket: The bucket.
        object_params: The source's per-object parameters (SSE-C key, requester-pays) for the probe GET.

    Returns:
        (the bucket's region when one of the answers named it and botocore has not learned it itself, else
        ``None``; what each step answered, for an error message should reads still be refused).
    """
    tried = []
    try:
        await client.call("head_bucket", Bucket=bucket)
        return None, "HeadBucket succeeded"
    except Exception as exc:
        region = _error_region(exc)
        if region:
            return region, f"HeadBucket answered {_error_text(exc)} naming region {region!r}"
        tried.append(f"HeadBucket answered {_error_text(exc)}")
    try:
        location = await client.call("get_bucket_location", Bucket=bucket)
        constraint = location.get("LocationConstraint")
        region = _LEGACY_LOCATIONS.get(constraint, constraint)
        return region, "; ".join([*tried, f"GetBucketLocation answered {region!r}"])
    except Exception as exc:
        region = _error_region(exc)
        if region:
            return region, "; ".join([*tried, f"GetBucketLocation answered {_error_text(exc)} naming {region!r}"])
        tried.append(f"GetBucketLocation answered {_error_text(exc)}")
    try:
        await client.call("get_object", Bucket=bucket, Key=PROBE_KEY, Range="bytes=0-0", **object_params)
        tried.append("a probe GET succeeded")
    except Exception as exc:
        region = _error_region(exc)
        tried.append(f"a probe GET answered {_error_text(exc)}")
        if region:
            return region, "; ".join(tried)
    return None, "; ".join(tried)


def in_region(options: Mapping[str, Any], region: str) -> dict[str, Any]:
    """s3fs-style ``options`` for a client in ``region`` (``client_kwargs["region_name"]``), all else the same."""
    out = dict(options)
    out["client_kwargs"] = {**(options.get("client_kwargs") or {}), "region_name": region}
    return out
