"""What the sync wrote: a manifest inside the destination root.

A compacted snapshot (``manifest.json``, replaced atomically) plus an append-only journal (``journal.jsonl``,
one line per finished file). A killed run loses at most the objects in flight: everything journaled before the
kill is known to be complete and is not downloaded again. Replaying the journal over the snapshot is
idempotent, so a crash between writing a new snapshot and truncating the journal is harmless.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from proximate.errors import ProximateError
from proximate.sync.confined import open_state, read_state, state_folder
from proximate.sync.keys import STATE_DIR

SNAPSHOT = "manifest.json"
JOURNAL = "journal.jsonl"
LOCK = "lock"
FORMAT = 1


class SyncLockedError(ProximateError, RuntimeError):
    """Another sync holds this destination root."""


class ManifestWriteError(ProximateError, OSError):
    """The manifest could not be written (a full disk, a quota): the message names the file. What was recorded
    before stays valid; a file placed but not recorded is fetched again by the next run."""


@functools.lru_cache(maxsize=64)
def normalise_source(url: str) -> str:
    """The source a manifest belongs to, one spelling per tree: ``s3://bucket/prefix/`` (``s3a://`` alike, the
    prefix read as a folder, as the S3 source lists it), ``file:///abs/path`` for a local path, else the URL
    without trailing slashes. ``s3://b/data`` and ``s3://b/data/`` are one source and share one manifest."""
    protocol, sep, rest = url.partition("://")
    if sep and protocol in ("s3", "s3a"):
        bucket, _, prefix = rest.partition("/")
        return f"s3://{bucket}/{prefix if not prefix or prefix.endswith('/') else prefix + '/'}"
    if not sep or protocol == "file":
        return "file://" + os.path.normpath(os.path.abspath(rest if sep else url))
    return url.rstrip("/")


def _write_error(exc: OSError, path: Path, what: str) -> ManifestWriteError:
    reason = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
    return ManifestWriteError(exc.errno, f"{reason}: cannot {what} {path}; the manifest keeps what it had recorded")


@dataclass(frozen=True)
class Entry:
    """A file the sync wrote: the object's size and fingerprint (ETag / version / mtime), and the file's mtime."""

    size: int
    fingerprint: str
    mtime_ns: int


def write_json_durably(path: Path, payload: object) -> None:
    """Replace ``path`` by ``payload`` as JSON, atomically and durably (temporary, fsync, rename, fsync folder).

    The temporary is created afresh (``O_EXCL``, a leftover of a killed run removed first): a link planted under
    its name is removed, never written through; the rename replaces a link at ``path`` itself, not its target.

    Raises:
        ManifestWriteError: the temporary could not be written (a full disk); ``path`` keeps what it held.
    """
    tmp = path.with_name(f"{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a killed run's leftover, or a link: unlink removes the link, not its target
    try:
        with os.fdopen(open_state(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w") as f:
            json.dump(payload, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # only the temporary goes
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_error(exc, tmp, "write") from exc
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def state_dir(root: str | os.PathLike[str]) -> Path:
    """The root's state folder, created if missing; refused if it is a symbolic link (see
    :func:`~proximate.sync.confined.state_folder`)."""
    return state_folder(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Manifest:
    """Load, journal and compact the record of synced files; holds an exclusive lock on the root while open."""

    def __init__(self, root: str | os.PathLike[str], source_url: str) -> None:
        self.dir = Path(root) / STATE_DIR
        self.source_url = normalise_source(source_url)
        self.entries: dict[str, Entry] = {}
        self._journal_fd: int | None = None
        self._lock_fd: int | None = None
        self._journal_lines = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def open(self) -> Manifest:
        Path(self.dir.parent).mkdir(parents=True, exist_ok=True)
        state_folder(self.dir.parent)  # refuses a link in its place
        self._lock_fd = open_state(self.dir / LOCK, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SyncLockedError(f"another sync is writing into {self.dir.parent}; try again when it ends") from None
        self._load()
        self._journal_fd = open_state(self.dir / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return self

    def close(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Manifest:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------------------------

    def _load(self) -> None:
        snapshot = read_state(self.dir / SNAPSHOT)
        if snapshot is not None:
            data = json.loads(snapshot)
            if data.get("format") == FORMAT and normalise_source(str(data.get("source"))) == self.source_url:
                self.entries = {rel: Entry(*v) for rel, v in data["entries"].items()}
        journal = self.dir / JOURNAL
        raw = read_state(journal)
        if raw is None:
            return
        if raw and not raw.endswith(b"\n"):
            # A line torn by a kill: drop it so the next append starts on a line of its own.
            raw = raw[: raw.rfind(b"\n") + 1]
            fd = open_state(journal, os.O_WRONLY)
            try:
                os.ftruncate(fd, len(raw))
            finally:
                os.close(fd)
        for line in raw.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("src") != self.source_url and normalise_source(str(rec.get("src"))) != self.source_url:
                continue
            if "put" in rec:
                self.entries[rec["put"]] = Entry(rec["s"], rec["f"], rec["m"])
            elif "del" in rec:
                self.entries.pop(rec["del"], None)
            self._journal_lines += 1

    @property
    def journal_lines(self) -> int:
        """Journal records not yet folded into the snapshot."""
        return self._journal_lines

    # -- writing -----------------------------------------------------------------------------------------------

    def _append(self, rec: dict) -> None:
        assert self._journal_fd is not None, "manifest is not open"
        rec["src"] = self.source_url
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        # One write() of one line with O_APPEND: a kill leaves whole lines or one torn tail, never interleaving.
        try:
            written = os.write(self._journal_fd, line)
        except OSError as exc:
            raise _write_error(exc, self.dir / JOURNAL, "append to") from exc
        if written != len(line):  # a full disk took part of the line: end it, so the next record stands alone
            with contextlib.suppress(OSError):
                os.write(self._journal_fd, b"\n")
            raise _write_error(OSError(errno.ENOSPC, "short write"), self.dir / JOURNAL, "append to")
        self._journal_lines += 1

    def record_put(self, rel: str, entry: Entry) -> None:
        self.entries[rel] = entry
        self._append({"put": rel, "s": entry.size, "f": entry.fingerprint, "m": entry.mtime_ns})

    def record_delete(self, rel: str) -> None:
        self.entries.pop(rel, None)
        self._append({"del": rel})

    def maybe_compact(self) -> None:
        """Compact once the journal outgrows the snapshot, so loading stays linear in the tree size."""
        if self._journal_lines > max(10_000, len(self.entries)):
            self.compact()

    def compact(self) -> None:
        """Write a new snapshot atomically (temp, fsync, rename, fsync folder), then empty the journal."""
        payload = {
            "format": FORMAT,
            "source": self.source_url,
            "entries": {rel: [e.size, e.fingerprint, e.mtime_ns] for rel, e in self.entries.items()},
        }
        # the old snapshot and the journal still hold everything until the new snapshot replaces it
        write_json_durably(self.dir / SNAPSHOT, payload)
        if self._journal_fd is not None:
            os.ftruncate(self._journal_fd, 0)
        else:
            with contextlib.suppress(FileNotFoundError):
                fd = open_state(self.dir / JOURNAL, os.O_WRONLY)
                os.ftruncate(fd, 0)
                os.close(fd)
        self._journal_lines = 0
