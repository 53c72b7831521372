"""A small HTTP proxy in front of the moto server that injects faults for chosen keys: the real server keeps
the data, the proxy makes some requests fail (503), arrive corrupted, arrive cut short, or arrive slowly."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
ERROR_503 = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
    b"<Message>Injected fault</Message></Error>"
)


class FaultProxy:
    """``fail``: keys ("bucket/key") whose GETs always get 503; ``flaky``: key -> number of 503s before success;
    ``corrupt``: keys whose GET bodies get one byte flipped; ``truncate``: key -> number of GETs whose connection
    drops after half the body (the full Content-Length announced); ``delay``: seconds added to every object GET."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.fail: set[str] = set()
        self.flaky: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.truncate: dict[str, int] = {}
        self.delay = 0.0
        self.gets: Counter[str] = Counter()
        self.get_sizes: dict[str, list[int]] = {}  # key -> body size of each successful GET relayed
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                target = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
                is_object_read = self.command in ("GET", "HEAD") and "/" in target.rstrip("/")
                if is_object_read:
                    with proxy._lock:
                        proxy.gets[target] += 1
                        left = proxy.flaky.get(target, 0)
                        if left:
                            proxy.flaky[target] = left - 1
                    if target in proxy.fail or left:
                        self._reply(503, {"Content-Type": "application/xml"}, ERROR_503)
                        return
                    if proxy.delay:
                        time.sleep(proxy.delay)
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}}
                finally:
                    conn.close()
                if self.command == "GET" and is_object_read and resp.status in (200, 206):
                    with proxy._lock:
                        proxy.get_sizes.setdefault(target, []).append(len(data))
                if self.command == "GET" and target in proxy.corrupt and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if self.command == "GET" and is_object_read and resp.status in (200, 206) and len(data) > 1:
                    with proxy._lock:
                        cut = proxy.truncate.get(target, 0)
                        if cut:
                            proxy.truncate[target] = cut - 1
                    if cut:
                        self._reply(resp.status, out, data, cut_at=len(data) // 2)
                        return
                if self.command == "HEAD":
                    out["Content-Length"] = resp.getheader("Content-Length") or "0"
                    self._reply(resp.status, out, b"", head=True)
                else:
                    self._reply(resp.status, out, data)

            def _reply(
                self, status: int, headers: dict[str, str], data: bytes, head: bool = False, cut_at: int | None = None
            ) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data and not head:
                    self.wfile.write(data if cut_at is None else data[:cut_at])
                if cut_at is not None:
                    self.wfile.flush()
                    self.close_connection = True  # the peer sees EOF short of the announced length

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
