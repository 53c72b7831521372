"""One sync run per root at a time, from its plan to its finish.

The manifest's own lock is taken and released by each step (plan, transfer, finish). That is not enough: a run
that planned, then lost the lock to another run between its steps, would delete on a stale plan (a file the other
run had just fetched again, whose object still exists). :func:`hold_run` is held for a whole run instead; a second
run refuses at once, naming the run that holds it, and changes nothing.

``flock`` locks are per open file and are released by the kernel when the holder dies, so a killed run never
leaves a stale lock behind. On FSx for Lustre they are cluster-wide when the file system is mounted with
``flock`` (its default).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from proximate.sync.confined import open_state
from proximate.sync.manifest import SyncLockedError, state_dir

RUN_LOCK = "run.lock"


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return "another sync"
    if not info:
        return "another sync"
    what = f" {info['what']}" if info.get("what") else ""
    return f"the sync{what} started {info.get('started')} on {info.get('host')} (pid {info.get('pid')})"


@contextlib.contextmanager
def hold_run(root: str | os.PathLike[str], what: str = "") -> Iterator[None]:
    """Hold ``root``'s run lock for the block's length.

    Args:
        root: The destination root of the sync.
        what: Names the run for the message a refused run gets (a flow run's name, a command line).

    Raises:
        SyncLockedError: Another run holds the lock; the message names it (what, when, host, pid).
        SymlinkRefusedError: The state folder or the lock file is a symbolic link.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    folder = state_dir(root)  # refuses a link in place of the folder
    fd = open_state(folder / RUN_LOCK, os.O_RDWR | os.O_CREAT)  # and of the lock: it is truncated below
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncLockedError(
                f"{_holder(fd)} is still writing into {Path(root)}: this run was refused and changed nothing;"
                " run it again when that one ends"
            ) from None
        info = {
            "what": what,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
