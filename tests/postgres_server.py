"""Debian's PostgreSQL on loopback for tests: a fresh cluster in a temporary folder, a role and a database, the
server process owned by the test and stopped by PID.

PostgreSQL refuses to run as root, so as root (CI) ``initdb`` and ``postgres`` run as the ``postgres`` user
(``runuser``); the folder is made outside pytest's root-only temporary tree so that user can reach it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proximate import processes
from proximate.testing.local_s3 import free_port

#: Where Debian installs each major version's server binaries.
POSTGRESQL_LIB = Path("/usr/lib/postgresql")
STARTUP_TIMEOUT = 120.0
#: SIGINT is PostgreSQL's fast shutdown (SIGTERM's smart shutdown waits for every client to leave).
STOP_SIGNALS = [(signal.SIGINT, 30.0)]


def postgresql_bin() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` and ``postgres``."""
    found = [p / "bin" for p in POSTGRESQL_LIB.glob("*") if (p / "bin" / "initdb").exists()]
    found = [b for b in found if (b / "postgres").exists()]
    return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0, default=None)


def require_postgresql() -> Path:
    """The server binaries' folder; a skip without them (a failure under CI, whose .ci/run installs them)."""
    found = postgresql_bin()
    if found is None:
        message = (
            f"PostgreSQL is not installed (no {POSTGRESQL_LIB}/<version>/bin/initdb): apt-get install -y postgresql"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class PostgreSQL:
    """A running test server and the role and database made for its user."""

    process: processes.Supervised
    port: int
    user: str
    password: str
    database: str

    def url(self, driver: str = "postgresql+asyncpg") -> str:
        """Its SQLAlchemy URL (what ``PREFECT_API_DATABASE_CONNECTION_URL`` takes), password included."""
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def query(self, sql: str) -> list[tuple]:
        """The rows ``sql`` returns, asked over TCP as the test role (asyncpg, Prefect's own driver)."""
        import asyncio

        import asyncpg

        async def fetch() -> list[tuple]:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user=self.user, password=self.password, database=self.database
            )
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

        return asyncio.run(fetch())


def _as_owner() -> list[str]:
    """The prefix that runs a command as the cluster's owner: ``postgres`` when this is root, else this user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(cmd: list[str], stdin: str | None = None) -> None:
    """Run ``cmd`` to the end; fail with its own error output (initdb's, psql's) if it fails."""
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with code {done.returncode}:\n{done.stdout}{done.stderr}")


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def postgresql_server(user: str = "prefect", database: str = "prefect") -> Iterator[PostgreSQL]:
    """A fresh PostgreSQL cluster listening on a free port of 127.0.0.1 only, with a login role ``user`` (a random
    password, scram-sha-256 over TCP) owning ``database``; stopped by PID and its folder removed at the end.

    Examples:
        >>> with postgresql_server() as pg:  # doctest: +SKIP
        ...     pg.query("select 1")
        [(1,)]
    """
    bin_dir = require_postgresql()
    owner = _as_owner()
    root = Path(tempfile.mkdtemp(prefix="proximate-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if owner:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    password = secrets.token_urlsafe(18)
    process = None
    try:
        # Local (socket) connections trust the OS user; TCP needs the password.
        _run([*owner, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
              "--auth-host=scram-sha-256", "-E", "UTF8"])  # fmt: skip
        port = free_port()
        cmd = [*owner, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
               "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]  # fmt: skip
        process = processes.start(cmd, name="postgresql", log=root / "postgresql.log")
        process.wait_ready(lambda: _accepts(port), what="postgresql", timeout=STARTUP_TIMEOUT)
        # Accepting TCP comes before recovery ends: pg_isready says when connections are really served.
        isready = [*owner, str(bin_dir / "pg_isready"), "-h", str(sockets), "-p", str(port), "-U", "postgres"]
        process.wait_ready(
            lambda: subprocess.run(isready, capture_output=True).returncode == 0, what="postgresql", timeout=60
        )
        psql = [*owner, str(bin_dir / "psql"), "-h", str(sockets), "-p", str(port), "-U", "postgres"]
        # On standard input, not -c: the password stays off the command line (ps).
        _run([*psql, "-v", "ON_ERROR_STOP=1"], f"CREATE ROLE {user} LOGIN PASSWORD '{password}';\n"
             f"CREATE DATABASE {database} OWNER {user};\n")  # fmt: skip
        yield PostgreSQL(process, port, user, password, database)
    finally:
        if process is not None:
            process.stop(STOP_SIGNALS)
        shutil.rmtree(root, ignore_errors=True)
