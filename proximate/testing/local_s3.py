"""An S3 server on loopback (moto), for the offline demo and the tests: started as its own process, stopped by
PID (its whole process group), never bound beyond 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from proximate import processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_s3_server(startup_timeout: float = 60.0) -> Iterator[str]:
    """Run ``moto_server`` on 127.0.0.1 for the length of the block; yields its endpoint URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = processes.start(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        name="S3 server (moto)",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(
            lambda: urllib.request.urlopen(f"{url}/moto-api/", timeout=2).read() is not None,
            what=f"the S3 server at {url}",
            timeout=startup_timeout,
            interval=0.1,
        )
        yield url
    finally:
        proc.stop()
