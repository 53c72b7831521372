"""A read-only HTTP file server with byte ranges: how the centralised baseline reads a region's files remotely.

Why not the region's S3 server: moto answers a ranged GET by reading the whole object and slicing it
(``moto/s3/responses.py``, ``_handle_range_header`` on ``key.value``), so each range read of a 1 GB file
would cost the server a full 1 GB copy and the baseline would measure moto, not the link. Plain HTTP range
reads (what fsspec's ``HTTPFileSystem`` does, and what NFS or S3 do for a remote reader) cost the server
only the bytes asked for.

    python -m proximate.testing.testbed.fileserver --root DIR --host ADDR --port PORT [--ranges-log FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _handler(root: Path, ranges_log: Path | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many range reads

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _target(self) -> Path | None:
            rel = self.path.split("?", 1)[0].lstrip("/")
            full = (root / rel).resolve()
            if root not in full.parents or not full.is_file():
                self.send_error(HTTPStatus.NOT_FOUND)
                return None
            return full

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            full = self._target()
            if full is None:
                return
            size = full.stat().st_size
            start, end, status = 0, size - 1, HTTPStatus.OK
            match = _RANGE.match(self.headers.get("Range", ""))
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                else:  # suffix range: the last N bytes
                    start = max(0, size - int(match.group(2)))
                if start > end or start >= size:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = HTTPStatus.PARTIAL_CONTENT
            length = end - start + 1
            self.send_response(status)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            if ranges_log is not None:
                # One short line per read, appended whole (O_APPEND): what a reader asked for, so that a bench can
                # tell bytes read once from bytes fetched again.
                with open(ranges_log, "a") as log:
                    log.write(f"{full.relative_to(root)} {start} {length}\n")
            with open(full, "rb") as fh:
                # sendfile: the bytes go from the page cache to the socket without passing through Python
                sent = 0
                while sent < length:
                    n = os.sendfile(self.connection.fileno(), fh.fileno(), start + sent, length - sent)
                    if n == 0:
                        break
                    sent += n

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ranges-log", help="append 'path start length' for every GET served to this file")
    args = parser.parse_args(argv)
    log = Path(args.ranges_log) if args.ranges_log else None
    server = ThreadingHTTPServer((args.host, args.port), _handler(Path(args.root).resolve(), log))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
