"""The sync against links planted in its root (issue 26), on the real moto server and real files: its state files
and state folder are never links, and it never writes or deletes outside its root through one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_sync import BUCKET, client, options

from proximate.sync import STATE_DIR, sync
from proximate.sync.backlog import read_backlog
from proximate.sync.confined import SymlinkRefusedError


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): a file's digest and mtime, a link's target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            path = Path(dirpath) / name
            if path.is_symlink():
                out[str(path.relative_to(root))] = "link->" + os.readlink(path)
            elif path.is_file():
                st = path.stat()
                out[str(path.relative_to(root))] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {st.st_mtime_ns}"
    return out


@pytest.fixture
def bucket(s3):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)  # the s3 fixture emptied the server
    return c, options(s3["endpoint_url"], s3)


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the root that a followed link would truncate, overwrite, read or delete."""
    outside = tmp_path / "outside"
    outside.mkdir()
    # no trailing newline: a journal read through a link would be "repaired" by truncating it
    (outside / "victim.txt").write_bytes(b'{"precious": "data"}\npartial line')
    return outside


@pytest.mark.parametrize("name", ["run.lock", "lock", "journal.jsonl", "manifest.json", "index-backlog.json"])
def test_a_state_file_that_is_a_link_is_refused_and_its_target_untouched(bucket, tmp_path, victim, name):
    c, opts = bucket
    c.put_object(Bucket=BUCKET, Key="p/a.txt", Body=b"aaa")
    root = tmp_path / "root"
    (root / STATE_DIR).mkdir(parents=True)
    (root / STATE_DIR / name).symlink_to(victim / "victim.txt")
    before = _tree(victim)
    with pytest.raises(SymlinkRefusedError, match=rf"{STATE_DIR}/{name} is a symbolic link \(to .*victim.txt\)"):
        sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    assert _tree(victim) == before


@pytest.mark.parametrize("name", ["manifest.json.tmp", "index-backlog.json.tmp"])
def test_a_link_planted_as_a_state_temporary_is_replaced_never_written_through(bucket, tmp_path, victim, name):
    c, opts = bucket
    c.put_object(Bucket=BUCKET, Key="p/a.txt", Body=b"aaa")
    root = tmp_path / "root"
    (root / STATE_DIR).mkdir(parents=True)
    (root / STATE_DIR / name).symlink_to(victim / "victim.txt")
    before = _tree(victim)
    result = sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    assert result.ok and result.changed == ["a.txt"]
    assert _tree(victim) == before
    assert list(read_backlog(root).changed) == ["a.txt"]  # the state was written where it belongs
    assert not (root / STATE_DIR / name).exists()


def test_a_state_folder_that_is_a_link_is_refused_before_anything_is_written(bucket, tmp_path, victim):
    c, opts = bucket
    c.put_object(Bucket=BUCKET, Key="p/a.txt", Body=b"aaa")
    root = tmp_path / "root"
    root.mkdir()
    (root / STATE_DIR).symlink_to(victim, target_is_directory=True)
    before = _tree(victim)
    with pytest.raises(SymlinkRefusedError, match=rf"root/{STATE_DIR} is a symbolic link \(to .*outside\): .*manifest"):
        sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    with pytest.raises(SymlinkRefusedError, match=STATE_DIR):
        read_backlog(root)  # the indexer's read refuses it too, rather than read a backlog from elsewhere
    assert _tree(victim) == before
    assert sorted(os.listdir(root)) == [STATE_DIR]  # no data fetched either


def test_a_data_folder_replaced_by_a_link_to_a_look_alike_copy_is_never_deleted_or_written_through(
    bucket, tmp_path, victim
):
    c, opts = bucket
    for key, body in {"p/data/x.bin": b"x" * 100, "p/data/y.bin": b"y" * 50, "p/keep.bin": b"k"}.items():
        c.put_object(Bucket=BUCKET, Key=key, Body=body)
    root = tmp_path / "root"
    assert sync(f"s3://{BUCKET}/p/", root, storage_options=opts).ok
    # Someone moves the data folder away and links a copy outside in its place: same sizes, same mtimes, so the
    # manifest's check on the file alone would take the copy for the sync's own file.
    copy = victim / "data-copy"
    copy.mkdir()
    for name in ("x.bin", "y.bin"):
        (copy / name).write_bytes((root / "data" / name).read_bytes())
        st = (root / "data" / name).stat()
        os.utime(copy / name, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(root / "data", tmp_path / "moved-away")
    (root / "data").symlink_to(copy, target_is_directory=True)
    before = _tree(victim)
    # x is deleted at the source (a delete through the link), y changes (a write through the link)
    c.delete_object(Bucket=BUCKET, Key="p/data/x.bin")
    c.put_object(Bucket=BUCKET, Key="p/data/y.bin", Body=b"Y" * 60)

    result = sync(f"s3://{BUCKET}/p/", root, storage_options=opts, delete=True)
    failed = dict(result.failed)
    assert set(failed) == {"data/x.bin", "p/data/y.bin"}, failed  # a delete names the file, a fetch the object
    assert "not deleted" in failed["data/x.bin"] and "root/data is a symbolic link" in failed["data/x.bin"]
    assert "'data' is a symbolic link" in failed["p/data/y.bin"]
    assert result.deleted == 0 and result.changed == []
    assert _tree(victim) == before  # nothing outside deleted, written or left behind (no temporaries)
    assert (root / "keep.bin").read_bytes() == b"k"


def test_a_folder_swapped_for_a_link_mid_run_never_receives_a_placed_file(tmp_path, victim):
    from proximate.sync.durable import Writer

    root = tmp_path / "root"
    root.mkdir()
    writer = Writer(root, fsync=False)
    writer.parent("data/sub/x.bin")  # checked and remembered for the run: a real folder now
    os.rename(root / "data", tmp_path / "moved-away")
    (root / "data").symlink_to(victim, target_is_directory=True)
    (victim / "sub").mkdir()
    before = _tree(victim)
    tmp = root / "data" / "sub" / ".tmp-not-through-the-link"  # where a temporary made by path would now sit
    tmp.write_bytes(b"payload")
    with pytest.raises(SymlinkRefusedError, match=r"root/data is a symbolic link"):
        writer.rename(tmp, "data/sub/x.bin")
    outcomes = writer.rename_all([(tmp, "data/sub/x.bin")])  # a group's rename: fails this file only, discards it
    assert isinstance(outcomes[0], SymlinkRefusedError)
    assert not (victim / "sub" / "x.bin").exists()
    assert _tree(victim) == before  # the temporary discarded, nothing placed


def test_the_command_refuses_a_linked_state_folder_in_one_line(tmp_path, victim):
    from test_sync_cli import run

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "a.txt").write_bytes(b"aaa")
    root = tmp_path / "root"
    root.mkdir()
    (root / STATE_DIR).symlink_to(victim, target_is_directory=True)
    before = _tree(victim)
    done = run(staging.as_uri(), str(root))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line, no traceback
    assert f"{root / STATE_DIR} is a symbolic link" in done.stderr
    assert _tree(victim) == before and sorted(os.listdir(root)) == [STATE_DIR]
