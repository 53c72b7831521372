"""One sync run per root at a time, and the index backlog every sync leaves for the catalog (file:// sources:
no server needed)."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from proximate.sync import IndexBacklog, SyncLockedError, acknowledge, add_to_backlog, hold_run, read_backlog, sync


def _tree(folder, files: dict[str, bytes]) -> str:
    for rel, body in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(body)
    return f"file://{folder}"


def _hold(root: str, ready, release) -> None:
    with hold_run(root, "the other process"):
        ready.set()
        release.wait(60)


def test_a_sync_is_refused_while_another_process_holds_the_root_and_changes_nothing(tmp_path):
    source = _tree(tmp_path / "src", {"a.nc": b"a", "b/c.nc": b"c"})
    root = tmp_path / "root"
    sync(source, root)
    (tmp_path / "src" / "a.nc").unlink()
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(root), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        t0 = time.monotonic()
        with pytest.raises(SyncLockedError, match=f"the other process.*pid {holder.pid}.*refused and changed nothing"):
            sync(source, root, delete=True, delete_all=True)
        assert time.monotonic() - t0 < 5  # refused at once, not after waiting
        assert (root / "a.nc").read_bytes() == b"a"  # the stale delete did not happen
    finally:
        release.set()
        holder.join(30)
    # The holder is gone: its lock went with it, and the next run deletes what the source lost.
    assert sync(source, root, delete=True, delete_all=True).deleted_paths == ["a.nc"]


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    root = tmp_path / "root"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(root), ready, release))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, 9)
    holder.join(30)
    with hold_run(root, "next"):
        pass


def test_every_sync_adds_what_it_wrote_and_deleted_to_the_backlog(tmp_path):
    source = _tree(tmp_path / "src", {"x.nc": b"1", "y.nc": b"2"})
    root = tmp_path / "root"
    sync(source, root)
    first = read_backlog(root)
    assert sorted(first.changed) == ["x.nc", "y.nc"] and first.deleted == []
    (tmp_path / "src" / "y.nc").unlink()
    sync(source, root, delete=True, delete_all=True)
    second = read_backlog(root)
    assert sorted(second.changed) == ["x.nc"] and second.deleted == ["y.nc"]  # y's last change wins: removed
    assert not acknowledge(root, second)
    sync(source, root)  # nothing changed: nothing added
    assert not read_backlog(root)


def test_an_acknowledgement_keeps_files_fetched_again_since(tmp_path):
    root = tmp_path / "root"
    add_to_backlog(root, {"a.nc": "etag-1", "b.nc": "etag-1"}, ["gone.nc"])
    indexed = read_backlog(root)
    add_to_backlog(root, {"a.nc": "etag-2"}, [])  # a sync fetched a newer a.nc while the indexer worked
    left = acknowledge(root, indexed)
    assert left == IndexBacklog({"a.nc": "etag-2"}, [])
    assert read_backlog(root) == left
