"""HTTP connections for object reads, one keep-alive connection per reading thread and host.

Reads go straight through the standard library's ``http.client`` when no proxy applies to the host: urllib3's
pool costs CPU per request on top (URL parsing, a liveness poll and two timeout system calls per request, each a
GIL hand-over among the reading threads), a sizeable share of what a MiB-sized object costs in all. Where the
environment names a proxy for the host (as botocore, which lists the bucket, would use it), reads go through
urllib3's ``ProxyManager`` instead, which speaks to HTTP proxies and tunnels TLS through them.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import urllib3

#: Seconds to wait for a connection or for the next bytes of a response.
TIMEOUT = 120


class Response(Protocol):
    """What a read needs of a response, from either transport."""

    status: int
    headers: Mapping[str, str]

    def read(self, amt: int, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int: ...


def proxy_for(endpoint: str) -> str | None:
    """The proxy the environment names for ``endpoint`` (``HTTP_PROXY``/``HTTPS_PROXY``), unless ``NO_PROXY``
    exempts its host."""
    where = urlsplit(endpoint)
    if urllib.request.proxy_bypass(where.hostname or ""):
        return None
    return urllib.request.getproxies().get(where.scheme)


def ca_file(verify: Any) -> str | None:
    """The CA bundle to trust, as botocore reads it: client_kwargs ``verify=<path>``, else ``AWS_CA_BUNDLE``;
    None for the system's."""
    return verify if isinstance(verify, str) else os.environ.get("AWS_CA_BUNDLE") or None


def tls_context(verify: Any) -> ssl.SSLContext:
    """The store's TLS settings as botocore reads them: ``verify=False``, a CA bundle path, or ``AWS_CA_BUNDLE``."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file(verify))


class Connections:
    """GETs from the calling thread: a keep-alive connection per thread and host, or urllib3 where the environment
    names a proxy for the host. Each request goes to its own URL's host: with virtual-hosted addressing (AWS's
    default) that is ``<bucket>.s3.<region>.amazonaws.com``, not the endpoint the client was configured with,
    and the signature covers it."""

    def __init__(self, verify: Any, size: int) -> None:
        self._verify = verify
        self._size = size
        self._context: ssl.SSLContext | None = None
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._proxied: dict[str, urllib3.ProxyManager | None] = {}  # by origin (scheme://host:port)
        self._lock = threading.Lock()

    def proxied(self, origin: str) -> urllib3.ProxyManager | None:
        """urllib3's ProxyManager for ``origin`` when the environment names a proxy for it, else None."""
        if origin in self._proxied:  # decided already (no lock on the path every request takes)
            return self._proxied[origin]
        with self._lock:
            if origin not in self._proxied:
                proxy = proxy_for(origin)
                manager = None
                if proxy:
                    tls: dict[str, Any] = {}
                    if self._verify is False:
                        tls["cert_reqs"] = "CERT_NONE"
                    elif ca_file(self._verify):
                        tls["ca_certs"] = ca_file(self._verify)
                    timeout = urllib3.Timeout(connect=30, read=TIMEOUT)
                    # no retries of urllib3's own: ours are per request, with jitter
                    manager = urllib3.ProxyManager(
                        proxy, num_pools=4, maxsize=self._size, timeout=timeout, retries=False, **tls
                    )
                self._proxied[origin] = manager
            return self._proxied[origin]

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to ``netloc``, and whether it has served a request before."""
        mine: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        conn = mine.get((scheme, netloc))
        if conn is not None:
            return conn, True
        if scheme == "https":
            if self._context is None:
                self._context = tls_context(self._verify)
            conn = http.client.HTTPSConnection(netloc, timeout=TIMEOUT, context=self._context)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=TIMEOUT)
        mine[(scheme, netloc)] = conn
        with self._lock:
            self._open.add(conn)
        return conn, False

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._local.__dict__.get("conns", {}).pop((scheme, netloc), None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._open.discard(conn)

    def get(self, url: str, headers: dict[str, str]) -> Response:
        """Send a GET and return once its status and headers are in; the body is read from the response. Call
        :meth:`done` after it, with whether the body was read to its end."""
        where = urlsplit(url)
        manager = self.proxied(f"{where.scheme}://{where.netloc}")
        if manager is not None:
            return manager.urlopen(  # type: ignore[return-value]
                "GET", url, headers=headers, preload_content=False, decode_content=False, redirect=False
            )
        target = where.path + (f"?{where.query}" if where.query else "")
        for attempt in (1, 2):
            conn, reused = self._connection(where.scheme, where.netloc)
            try:
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop(where.scheme, where.netloc)
                if not reused or attempt == 2:
                    raise
                # The server closed a kept-alive connection while it sat idle: nothing was read, so ask again now.
                continue
            except BaseException:  # a timeout, a refused connection, ...: the connection's state is unknown
                self._drop(where.scheme, where.netloc)
                raise
            response.origin = (where.scheme, where.netloc)  # type: ignore[attr-defined]
            return response
        raise AssertionError("unreachable")

    def done(self, response: Response, complete: bool) -> None:
        """Keep the connection for the next request after a body read to its end; close it otherwise."""
        if isinstance(response, urllib3.BaseHTTPResponse):
            response.release_conn() if complete else response.close()
        elif not complete:
            self._drop(*response.origin)  # type: ignore[attr-defined]

    def close(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
            managers = [m for m in self._proxied.values() if m is not None]
            self._proxied.clear()
        for conn in conns:
            conn.close()
        for manager in managers:
            manager.clear()
