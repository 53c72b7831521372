"""The connections object reads travel over (proximate.sync.transport), against real local HTTP and HTTPS servers:
a kept-alive connection the server dropped while idle, and the store's TLS settings (CA bundle, verify=False,
AWS_CA_BUNDLE, and a refusal of a certificate nobody vouches for)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from proximate.sync.transport import Connections

BODY = b"0123456789" * 1000


class Server:
    """An HTTP/1.1 server on loopback that serves BODY at any path and counts the connections it accepted;
    with ``drop_idle`` it closes each connection after one response without announcing it (as a store does
    with a connection that sat idle past its keep-alive timeout)."""

    def __init__(self, drop_idle: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.requests = 0
        self.hosts: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                server.connections += 1
                super().setup()

            def do_GET(self) -> None:
                server.requests += 1
                server.hosts.append(self.headers.get("Host"))
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)
                if drop_idle:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Server:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def read(conns: Connections, url: str) -> bytes:
    resp = conns.get(url, {})
    assert resp.status == 200
    body = b""
    while data := resp.read(4096):
        body += data
    conns.done(resp, complete=True)
    return body


def test_a_connection_the_server_dropped_while_idle_is_replaced_at_once(monkeypatch):
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    with Server() as keep, Server(drop_idle=True) as drop:
        conns = Connections(None, 4)
        assert conns.proxied(keep.url) is None
        assert [read(conns, f"{keep.url}/b/k{i}") for i in range(3)] == [BODY] * 3
        assert keep.connections == 1, "a kept-alive connection was not reused"
        conns.close()

        conns = Connections(None, 4)
        # The second and third reads find the connection closed by the server and must not fail for it.
        assert [read(conns, f"{drop.url}/b/k{i}") for i in range(3)] == [BODY] * 3
        assert drop.requests == 3 and drop.connections == 3
        conns.close()


def test_each_read_goes_to_its_own_urls_host(monkeypatch):
    """Virtual-hosted addressing puts the bucket in the host name (``<bucket>.s3.<region>.amazonaws.com``), and
    the signature covers that host: a read must connect to, and name, the host of its URL."""
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    with Server() as server:
        port = server.httpd.server_address[1]
        conns = Connections(None, 4)
        assert read(conns, f"http://127.0.0.1:{port}/b/k") == BODY
        assert read(conns, f"http://localhost:{port}/k") == BODY
        conns.close()
    assert server.hosts == [f"127.0.0.1:{port}", f"localhost:{port}"]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Iterator[tuple[Path, Path, Path]]:
    """A CA, and a certificate it signed for 127.0.0.1: (CA file, server certificate file, server key file)."""
    from proximate.testing.testbed.tls import make_tls_files

    files = make_tls_files(tmp_path_factory.mktemp("tls"), hosts=["127.0.0.1"], days=1)
    yield Path(files.ca_file), Path(files.cert), Path(files.key)


def test_https_reads_trust_the_stores_ca_and_refuse_an_unknown_certificate(certificates, monkeypatch):
    ca_file, cert_file, key_file = certificates
    for name in ("HTTPS_PROXY", "https_proxy", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    with Server(tls=tls) as server:
        url = f"{server.url}/bucket/key"
        assert read(Connections(str(ca_file), 4), url) == BODY  # client_kwargs verify=<CA bundle>
        assert read(Connections(False, 4), url) == BODY  # verify=False
        with pytest.raises(ssl.SSLCertVerificationError):
            Connections(None, 4).get(url, {})  # nobody vouches for it: refused
        monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
        assert read(Connections(None, 4), url) == BODY
