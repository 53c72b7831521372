"""``python -m deployments.prefect_server [prefect server start options]``: Prefect's own server, with SQLite
write transactions that wait their turn instead of failing.

Why: Prefect 3.8's SQLite configuration opens its write transactions ``BEGIN DEFERRED``. In WAL mode a deferred
transaction that has read and then tries to write, while another connection committed meanwhile, gets
``SQLITE_BUSY_SNAPSHOT`` at once: SQLite cannot wait its way out of a stale snapshot, so ``busy_timeout`` never
applies. The server answers those requests 503. Twelve flow runs created at once on a fresh server: 11 refused
(the UI's "Something went wrong" on Submit). Opening every write transaction ``BEGIN IMMEDIATE`` takes the write
lock before the first read, so concurrent writers queue on ``busy_timeout`` (60 s in Prefect) and none is refused;
reads outside transactions are unaffected. Measured: 12 of 12 accepted, and every run through its states.

PostgreSQL (``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://...``) needs none of this and is left as is.
The patch is on a class of the pinned Prefect (3.8.8); ``tests/test_prefect_server.py`` proves it on a real server.
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager


def immediate_sqlite_writes() -> None:
    """Make Prefect's SQLite configuration open every write transaction ``BEGIN IMMEDIATE``."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    deferred = AioSqliteConfiguration.begin_transaction
    if getattr(deferred, "__proximate_immediate__", False):
        return

    @asynccontextmanager
    async def begin_transaction(self, session, with_for_update: bool = False):
        # with_for_update=True is Prefect's own switch to BEGIN IMMEDIATE (used where it locks rows).
        async with deferred(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction.__proximate_immediate__ = True
    AioSqliteConfiguration.begin_transaction = begin_transaction


def command(*args: str) -> list[str]:
    """The command line that runs this module's server with ``args`` (``--host``, ``--port``, ...)."""
    return [sys.executable, "-m", "deployments.prefect_server", *args]


def main(argv: list[str] | None = None) -> int:
    """Run ``prefect server start`` in this process (``--workers 1``, Prefect's default, keeps it here) with the
    patch applied."""
    immediate_sqlite_writes()
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *(sys.argv[1:] if argv is None else argv)]
    return app()


if __name__ == "__main__":
    sys.exit(main())
