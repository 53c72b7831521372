"""proximate.sync against the real moto server process and real files: mirror, incremental re-run, deletes,
kill and resume, hostile keys, injected server faults, a down server, file:// staging."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zlib
from base64 import b64encode
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import google_crc32c
import pytest
from botocore.config import Config
from conftest import free_port
from s3_fault_proxy import FaultProxy

from proximate.sync import (
    STATE_DIR,
    TEMP_PREFIX,
    HostileKeyError,
    Manifest,
    RemoteObject,
    SourceError,
    SyncResult,
    checksums,
    is_data_path,
    safe_relative_path,
    sync,
)
from proximate.sync.checksums import ChecksumError
from proximate.sync.sources import ObjectAddress
from proximate.sync.sources import open_source as Source

MiB = 2**20
BUCKET = "data"


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def options(endpoint: str, s3: dict) -> dict:
    return {"key": s3["key"], "secret": s3["secret"], "client_kwargs": {"endpoint_url": endpoint}}


def put_many(c, objects: dict[str, bytes], workers: int = 8) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda kv: c.put_object(Bucket=BUCKET, Key=kv[0], Body=kv[1]), objects.items()))


def put_multipart(c, key: str, payload: bytes, part: int = 5 * MiB) -> str:
    up = c.create_multipart_upload(Bucket=BUCKET, Key=key)
    parts = []
    for n, start in enumerate(range(0, len(payload), part), 1):
        r = c.upload_part(
            Bucket=BUCKET, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=payload[start : start + part]
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    c.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    return c.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')


def data_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except the sync's own folder, by relative path."""
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(STATE_DIR + "/"):
            out[rel] = path.read_bytes()
    return out


def small_payloads(n: int, prefix: str = "p/") -> dict[str, bytes]:
    return {f"{prefix}d{i % 7}/sub{i % 3}/obj-{i:04d}.bin": os.urandom(i % 2000) for i in range(n)}


# -- pure rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a//b",
        "./a",
        "a/./b",
        "dir/",
        "",
        "x" * 256,
        "ok/" + "é" * 128,  # 256 bytes in UTF-8
        "a/" * 2100 + "b",
        f"{STATE_DIR}/manifest.json",
        f"d/{TEMP_PREFIX}123",
    ],
)
def test_hostile_relative_paths_are_refused(rel):
    with pytest.raises(HostileKeyError):
        safe_relative_path(rel)


def test_ordinary_relative_paths_pass_unchanged():
    for rel in ("a", "a/b/c.nc", "x" * 255, "Ünïcode/ファイル.zarr/.zattrs", ".hidden", "a..b", "..."):
        assert safe_relative_path(rel) == rel
    assert not is_data_path(f"{STATE_DIR}/journal.jsonl") and is_data_path("a/b.nc")


def test_manifest_drops_a_torn_journal_line_and_keeps_the_rest(tmp_path):
    from proximate.sync.manifest import Entry

    with Manifest(tmp_path, "s3://b/p/") as m:
        m.record_put("a", Entry(1, "etag:x", 5))
        m.record_put("b", Entry(2, "etag:y", 6))
    journal = tmp_path / STATE_DIR / "journal.jsonl"
    with open(journal, "ab") as f:
        f.write(b'{"put":"c","s":3')  # what a kill in the middle of a write could leave
    with Manifest(tmp_path, "s3://b/p/") as m:
        assert set(m.entries) == {"a", "b"}
        m.record_put("d", Entry(4, "etag:z", 7))
    assert [json.loads(line)["put"] for line in journal.read_text().splitlines()] == ["a", "b", "d"]
    with Manifest(tmp_path, "s3://b/other/") as m:  # a manifest of another source is not reused
        assert m.entries == {}


# -- against the moto server -----------------------------------------------------------------------------------


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_mirror_1000_objects_and_a_multipart_one_then_incremental_and_delete(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(1000)
    put_many(c, objects)
    big = os.urandom(12 * MiB)
    etag = put_multipart(c, "p/big/multipart.bin", big)
    assert etag.endswith("-3"), etag
    objects["p/big/multipart.bin"] = big
    c.put_object(Bucket=BUCKET, Key="other/not-mine.bin", Body=b"outside the prefix")
    root = tmp_path / "root"
    opts = options(s3["endpoint_url"], s3)

    first = sync(f"s3://{BUCKET}/p/", root, storage_options=opts, block_size=2 * MiB, concurrency=8)
    assert first.failed == []
    assert first.transferred == first.new == 1001 and first.skipped == 0
    assert first.bytes_transferred == sum(len(v) for v in objects.values())
    expected = {k.removeprefix("p/"): v for k, v in objects.items()}
    assert sorted(first.changed) == sorted(expected)
    assert data_files(root) == expected  # byte-equal, nothing else (manifest lives in STATE_DIR)

    second = sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    assert (second.transferred, second.bytes_transferred, second.skipped, second.changed) == (0, 0, 1001, [])

    # One changed, one new, one deleted at the source; a file of someone else's in the root.
    c.put_object(Bucket=BUCKET, Key="p/d0/sub0/obj-0000.bin", Body=b"changed")
    c.put_object(Bucket=BUCKET, Key="p/new/one.bin", Body=b"new")
    c.delete_object(Bucket=BUCKET, Key="p/d1/sub1/obj-0001.bin")
    (root / "d1" / "sub1" / "users-own.txt").write_bytes(b"mine")
    third = sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    assert sorted(third.changed) == ["d0/sub0/obj-0000.bin", "new/one.bin"]
    assert (third.transferred, third.new, third.modified, third.deleted) == (2, 1, 1, 0)
    assert (root / "d0/sub0/obj-0000.bin").read_bytes() == b"changed"
    assert (root / "d1/sub1/obj-0001.bin").exists(), "without delete=True nothing is removed"

    fourth = sync(f"s3://{BUCKET}/p/", root, storage_options=opts, delete=True)
    assert (fourth.transferred, fourth.deleted, fourth.deleted_paths) == (0, 1, ["d1/sub1/obj-0001.bin"])
    assert not (root / "d1/sub1/obj-0001.bin").exists()
    assert (root / "d1/sub1/users-own.txt").read_bytes() == b"mine", "a file sync did not write is never deleted"
    assert fourth.skipped == 1001


def test_delete_spares_a_synced_file_that_someone_replaced(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    put_many(c, {"p/a.txt": b"aaa", "p/b.txt": b"bbb"})
    root = tmp_path / "root"
    opts = options(s3["endpoint_url"], s3)
    sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    c.delete_object(Bucket=BUCKET, Key="p/a.txt")
    c.delete_object(Bucket=BUCKET, Key="p/b.txt")
    (root / "a.txt").write_bytes(b"edited by a person")
    refused = sync(f"s3://{BUCKET}/p/", root, storage_options=opts, delete=True)  # every file: only when told
    assert refused.deleted == 0 and "--delete-all" in refused.delete_refused and not refused.ok
    result = sync(f"s3://{BUCKET}/p/", root, storage_options=opts, delete=True, delete_all=True)
    assert result.deleted_paths == ["b.txt"] and result.deleted == 1
    assert (root / "a.txt").read_bytes() == b"edited by a person"


KILL_SCRIPT = """
import json, sys
from proximate.sync import sync
sync(sys.argv[1], sys.argv[2], storage_options=json.loads(sys.argv[3]), block_size=64 * 1024, concurrency=4)
"""


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_killed_sync_leaves_no_partial_files_and_resumes_without_refetching(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {f"p/f{i % 5}/o{i:03d}.bin": os.urandom(40_000 + (i % 4) * 100_000) for i in range(240)}
    put_many(c, objects)
    expected = {k.removeprefix("p/"): v for k, v in objects.items()}
    root = tmp_path / "root"
    journal = root / STATE_DIR / "journal.jsonl"
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.delay = 0.01  # paces the run so the kill lands in the middle of it
        opts = options(proxy.url, s3)
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, f"s3://{BUCKET}/p/", str(root), json.dumps(opts)],
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if journal.exists() and journal.read_bytes().count(b"\n") >= 40:
                    break
                time.sleep(0.01)
            assert proc.poll() is None, "the sync finished before it could be killed"
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        assert proc.returncode == -signal.SIGKILL

        # Whatever sits under a final name is complete and correct.
        on_disk = data_files(root)
        finals = {rel: data for rel, data in on_disk.items() if not Path(rel).name.startswith(TEMP_PREFIX)}
        assert finals and all(expected[rel] == data for rel, data in finals.items())
        with Manifest(root, f"s3://{BUCKET}/p/") as m:
            completed = set(m.entries)
        assert len(completed) >= 40 and completed <= set(finals)

        proxy.gets.clear()
        resumed = sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    assert resumed.failed == []
    assert resumed.skipped == len(completed) and resumed.transferred == len(expected) - len(completed)
    refetched = {k.removeprefix(f"{BUCKET}/p/") for k in proxy.gets} & completed
    assert refetched == set(), "objects completed before the kill were downloaded again"
    assert data_files(root) == expected  # complete, and the leftover temporaries are gone
    assert not any(p.name.startswith(TEMP_PREFIX) for p in root.rglob("*"))


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_big_objects_stream_in_bounded_memory_and_are_checked_part_by_part(s3, tmp_path):
    """A 24 MiB single-part object comes in one streamed GET and a multipart one in one ranged GET per part,
    each hashed as it arrives (no read-back): Python never holds more than a few blocks."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    single, multi = os.urandom(24 * MiB), os.urandom(21 * MiB)
    c.put_object(Bucket=BUCKET, Key="p/single.bin", Body=single)
    put_multipart(c, "p/multi.bin", multi)
    c.put_object(Bucket=BUCKET, Key="tiny/one.bin", Body=b"1")
    opts = options(s3["endpoint_url"], s3)

    def peak_memory(prefix: str, root: Path) -> tuple[SyncResult, int]:
        tracemalloc.start()  # the moto server is another process: what is traced is the sync's own memory
        try:
            done = sync(f"s3://{BUCKET}/{prefix}/", root, storage_options=opts, block_size=MiB, concurrency=4)
            return done, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    _, baseline = peak_memory("tiny", tmp_path / "tiny")  # botocore's service models alone take ~20 MiB
    result, peak = peak_memory("p", tmp_path / "direct")
    peak -= baseline
    assert result.failed == [] and result.transferred == 2
    assert data_files(tmp_path / "direct") == {"single.bin": single, "multi.bin": multi}
    with FaultProxy(s3["endpoint_url"]) as proxy:  # the proxy holds bodies whole: it counts, it is not traced
        via = sync(f"s3://{BUCKET}/p/", tmp_path / "via", storage_options=options(proxy.url, s3), block_size=MiB)
    assert via.failed == [] and data_files(tmp_path / "via") == data_files(tmp_path / "direct")
    assert proxy.get_sizes[f"{BUCKET}/p/single.bin"] == [24 * MiB]
    assert sorted(proxy.get_sizes[f"{BUCKET}/p/multi.bin"]) == [MiB] + [5 * MiB] * 4
    assert peak < 12 * MiB, f"peak Python memory {peak / MiB:.1f} MiB above a 1-byte sync for 24 + 21 MiB objects"


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_files_land_whole_through_direct_writes_and_through_the_page_cache(s3, tmp_path):
    """Durable files are written with O_DIRECT: small ones from the buffer they were received into, big ones
    when every range starts on an aligned offset; odd sizes are padded to a block, then truncated back, also
    when reads are cut short mid-body at an unaligned byte. A big one whose parts are not aligned goes through
    the page cache; so does everything without fsync."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {"p/single-odd.bin": os.urandom(9 * MiB + 1)}
    c.put_object(Bucket=BUCKET, Key="p/single-odd.bin", Body=objects["p/single-odd.bin"])
    small = {"p/s/empty.bin": b"", "p/s/odd.bin": os.urandom(4097), "p/s/block.bin": os.urandom(MiB)}
    put_many(c, small)
    objects.update(small)
    objects["p/parts-odd.bin"] = os.urandom(11 * MiB + 4095)  # 5 MiB parts; the last is 1 MiB + 4095 bytes
    put_multipart(c, "p/parts-odd.bin", objects["p/parts-odd.bin"])
    objects["p/parts-unaligned.bin"] = os.urandom(11 * MiB + 3)
    put_multipart(c, "p/parts-unaligned.bin", objects["p/parts-unaligned.bin"], part=5 * MiB + 1)
    expected = {k.removeprefix("p/"): v for k, v in objects.items()}
    for fsync in (True, False):
        root = tmp_path / f"fsync-{fsync}"
        result = sync(f"s3://{BUCKET}/p/", root, storage_options=options(s3["endpoint_url"], s3), fsync=fsync)
        assert result.failed == [] and result.transferred == len(objects)
        assert data_files(root) == expected
    with FaultProxy(s3["endpoint_url"]) as proxy:  # each part's first GET stops halfway (1 MiB + 2047 bytes in)
        proxy.truncate = {f"{BUCKET}/p/parts-odd.bin": 3, f"{BUCKET}/p/s/odd.bin": 1}
        cut = sync(
            f"s3://{BUCKET}/p/", tmp_path / "cut", storage_options=options(proxy.url, s3), retries=2, backoff=0.01
        )
        assert proxy.truncate == {f"{BUCKET}/p/parts-odd.bin": 0, f"{BUCKET}/p/s/odd.bin": 0}
    assert cut.failed == [] and data_files(tmp_path / "cut") == expected
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_a_multipart_object_smaller_than_a_block_is_checked_part_by_part(s3, tmp_path):
    """An object under one block is read in one GET and held; a part-wise checksum (its multipart ETag or a
    COMPOSITE one) first needs the part size, asked on the loop, so the held bytes are copied out of the reading
    thread's buffer, which meanwhile serves other reads: they must still be the object's, checked and written."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {f"p/multi-{i}.bin": os.urandom(11 * MiB + i) for i in range(3)}
    for key, body in objects.items():
        put_multipart(c, key, body)
    objects.update(small_payloads(300, "p/zz/"))  # listed after: reads that reuse the same threads' buffers meanwhile
    put_many(c, {k: v for k, v in objects.items() if "multi" not in k})
    result = sync(
        f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=options(s3["endpoint_url"], s3), block_size=16 * MiB
    )
    assert result.failed == [] and data_files(tmp_path / "root") == {
        k.removeprefix("p/"): v for k, v in objects.items()
    }
    with FaultProxy(s3["endpoint_url"]) as proxy:  # a flipped byte is still caught on the copied-out bytes
        proxy.corrupt = {f"{BUCKET}/p/multi-1.bin"}
        bad = sync(f"s3://{BUCKET}/p/", tmp_path / "bad", storage_options=options(proxy.url, s3), block_size=16 * MiB)
    assert [k for k, _ in bad.failed] == ["p/multi-1.bin"] and "checksum" in bad.failed[0][1], bad.failed
    assert not (tmp_path / "bad" / "multi-1.bin").exists()


def test_a_direct_write_the_file_system_refuses_goes_through_the_page_cache(tmp_path):
    """Where a direct write is refused (EINVAL: a file system or device with other alignment rules), the file
    descriptor drops O_DIRECT and the same bytes are written through the page cache instead of failing."""
    import fcntl

    from proximate.sync import durable

    fd, direct = durable.open_temp(tmp_path / "t", True)
    try:
        if not direct:
            pytest.skip("this file system has no direct I/O")
        durable.write_direct(fd, memoryview(b"fifteen  bytes!"), 3)  # unaligned memory, offset and length
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
    finally:
        os.close(fd)
    assert (tmp_path / "t").read_bytes() == b"\0\0\0fifteen  bytes!"


def test_direct_io_is_decided_when_a_sync_starts(monkeypatch):
    """``direct`` given wins; left to None, PROXIMATE_SYNC_DIRECT is read at the call, not when the module loaded."""
    from proximate.sync import durable

    monkeypatch.setenv("PROXIMATE_SYNC_DIRECT", "0")
    assert durable.direct_wanted(None) is False and durable.direct_wanted(True) is True
    monkeypatch.delenv("PROXIMATE_SYNC_DIRECT")
    assert durable.direct_wanted(None) is True and durable.direct_wanted(False) is False


def test_keys_that_need_escaping_in_a_url_are_signed_and_fetched(s3, tmp_path):
    """Object URLs are signed without botocore's per-call machinery; keys that URL-encoding and SigV4 treat
    specially must still come back byte for byte, small ones and one big enough for ranged part reads."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    names = ["sp ace", "plus+sign", "pct%20lit", "q?mark", "hash#tag", "é-ü-漢", "tilde~", "eq=amp&", "semi;colon"]
    objects = {f"p/{name}/{name}.bin": name.encode() * 3 for name in names}
    put_many(c, objects)
    objects["p/big + odd?#.bin"] = big = os.urandom(11 * MiB)
    put_multipart(c, "p/big + odd?#.bin", big)
    result = sync(
        f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=options(s3["endpoint_url"], s3), block_size=MiB
    )
    assert result.failed == []
    assert data_files(tmp_path / "root") == {k.removeprefix("p/"): v for k, v in objects.items()}

    async def signed_directly() -> dict[str, str]:
        async with Source(f"s3://{BUCKET}/p/", options(s3["endpoint_url"], s3)) as src:
            address = await src.address(RemoteObject("p/sp ace/sp ace.bin", "sp ace/sp ace.bin", 15, "x"))
        assert address is not None and address.credentials is not None and "?" not in address.url, address
        return address.sign({"x-amz-checksum-mode": "ENABLED", "Range": "bytes=0-1"})

    signed = asyncio.run(signed_directly())  # else the fast signing path was not taken: this test proved nothing
    assert "SignedHeaders=host;range;x-amz-checksum-mode;" in signed["Authorization"], signed


def test_a_public_bucket_is_read_anonymously(s3, tmp_path):
    """``anon=True`` (public data, as many Earth-observation buckets are) leaves nothing to sign with: reads go to
    the URL botocore builds unsigned, small objects and ranged part reads alike."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    public = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
    c.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [public]}))
    objects = {f"p/open/{i}.nc": os.urandom(1000 + i) for i in range(5)}
    put_many(c, objects)
    objects["p/open/big.nc"] = big = os.urandom(11 * MiB)
    put_multipart(c, "p/open/big.nc", big)
    anonymous = {"anon": True, "client_kwargs": {"endpoint_url": s3["endpoint_url"]}}
    result = sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=anonymous, block_size=MiB)
    assert result.failed == [] and result.transferred == 6
    assert data_files(tmp_path / "root") == {k.removeprefix("p/"): v for k, v in objects.items()}

    async def address() -> ObjectAddress | None:
        async with Source(f"s3://{BUCKET}/p/", anonymous) as src:
            return await src.address(RemoteObject("p/open/0.nc", "open/0.nc", 1000, "x"))

    found = asyncio.run(address())
    assert found is not None and found.credentials is None and "Signature" not in found.url, found


def test_a_stored_sha256_is_checked_and_catches_a_flipped_byte(s3, tmp_path):
    """A SHA-256 stored with an object is what it is checked against (not its MD5 ETag), small or streamed; a
    corrupted body fails naming the checksum, the rest land intact."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    bodies = {f"p/sha-{size}.bin": os.urandom(size) for size in (5000, 3 * MiB)}
    bodies["p/plain.bin"] = os.urandom(5000)
    for key, body in bodies.items():
        c.put_object(Bucket=BUCKET, Key=key, Body=body, ChecksumAlgorithm="SHA256")
        head = c.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == b64encode(hashlib.sha256(body).digest()).decode(), "not kept by the server"
    corrupt = {"p/sha-5000.bin", f"p/sha-{3 * MiB}.bin"}
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.corrupt = {f"{BUCKET}/{k}" for k in corrupt}
        result = sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=options(proxy.url, s3), block_size=MiB)
    failed = dict(result.failed)
    assert set(failed) == corrupt, failed
    assert all("SHA256 (sha256)" in failed[k] and "x-amz-checksum-sha256" in failed[k] for k in corrupt), failed
    assert data_files(tmp_path / "root") == {k.removeprefix("p/"): v for k, v in bodies.items() if k not in corrupt}


def test_checksums_match_independent_computations():
    """Each kind the store may send (whole or COMPOSITE over parts) against digests computed here directly."""
    data = os.urandom(3 * 1000 + 7)
    parts = [data[0:1000], data[1000:2000], data[2000:3000], data[3000:]]
    crc32c = [google_crc32c.value(p).to_bytes(4, "big") for p in parts]
    whole = b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    composite = b64encode(google_crc32c.value(b"".join(crc32c)).to_bytes(4, "big")).decode() + "-4"
    for headers, digests in (
        ({"x-amz-checksum-crc32c": whole}, [google_crc32c.value(data).to_bytes(4, "big")]),
        ({"X-Amz-Checksum-CRC32C": composite}, crc32c),
        ({"x-amz-checksum-sha1": b64encode(hashlib.sha1(data).digest()).decode()}, [hashlib.sha1(data).digest()]),
        # CRC32 goes through ISA-L when it is installed: it must give zlib's values, fed in pieces as streams are
        (
            {"x-amz-checksum-crc32": b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()},
            [zlib.crc32(data).to_bytes(4, "big")],
        ),
    ):
        expected = checksums.choose(headers, None, multipart=False)
        assert expected is not None
        computed = []
        for chunk in parts if expected.parts else [data]:
            h = expected.new()
            for i, at in enumerate(range(0, len(chunk), 999)):  # every buffer type the engine may hand in
                piece = chunk[at : at + 999]
                h.update((piece, bytearray(piece), memoryview(bytearray(piece)))[i % 3])
            computed.append(h.digest())
        assert computed == digests
        expected.verify("k", computed)
        with pytest.raises(ChecksumError):
            expected.verify("k", [bytes(len(d)) for d in computed])
    # The cheapest stored kind wins; a FULL_OBJECT CRC cannot be checked part by part, so the ETag serves.
    md5s = [hashlib.md5(p).digest() for p in parts]
    etag = hashlib.md5(b"".join(md5s)).hexdigest() + "-4"
    sha256 = b64encode(hashlib.sha256(data).digest()).decode()
    both = {"x-amz-checksum-sha256": sha256, "x-amz-checksum-crc32": "AAAAAA=="}
    assert checksums.choose(both, etag, multipart=False).algorithm == "crc32"
    by_parts = checksums.choose({"x-amz-checksum-crc32": "AAAAAA=="}, etag, multipart=True)
    assert (by_parts.algorithm, by_parts.parts) == ("md5", 4)
    by_parts.verify("k", md5s)
    assert checksums.choose({}, "not-an-md5", multipart=False) is None


HOSTILE = [
    "p/../escape.txt",
    "p/../../../../tmp/escape-abs.txt",
    "p//etc/passwd-like",
    "p/back\\slash.txt",
    "p/nul\x00byte.txt",
    "p/esc\x1bape.txt",
    "p/" + "n" * 300,
    f"p/{STATE_DIR}/manifest.json",
    f"p/dir/{TEMP_PREFIX}deadbeef",
    "p/dot/./x",
    "p/link/through-symlink.txt",
]


def test_hostile_keys_are_refused_and_nothing_lands_outside_the_root(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    for key in [*HOSTILE, "p/good.txt"]:
        c.put_object(Bucket=BUCKET, Key=key, Body=b"payload")
    stored = {o["Key"] for o in c.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert set(HOSTILE) <= stored, "the server must really hold the hostile keys for this test to mean anything"
    root = tmp_path / "inside" / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir(parents=True)
    os.symlink(outside, root / "link")  # a link planted in the root must not be followed
    before = sorted(p for p in tmp_path.rglob("*"))

    result = sync(f"s3://{BUCKET}/p/", root, storage_options=options(s3["endpoint_url"], s3))
    failed = dict(result.failed)
    assert set(failed) == set(HOSTILE)
    assert all("refused" in reason or "symbolic link" in reason for reason in failed.values()), failed
    assert result.changed == ["good.txt"]
    assert list(outside.iterdir()) == []
    after = sorted(p for p in tmp_path.rglob("*") if STATE_DIR not in p.parts)
    assert set(after) - set(before) == {root / "good.txt"}
    assert not (root / "dir").exists() or not any((root / "dir").iterdir())
    manifest = json.loads((root / STATE_DIR / "manifest.json").read_text())
    assert list(manifest["entries"]) == ["good.txt"]


def test_server_faults_fail_only_their_objects_and_a_rerun_finishes(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(30)
    big = os.urandom(3 * MiB)
    objects["p/big.bin"] = big
    put_many(c, objects)
    # Stored without an additional checksum (as older clients do): only the MD5 ETag can catch corruption.
    plain = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name="us-east-1",
        config=Config(request_checksum_calculation="when_required"),
    )
    plain.put_object(Bucket=BUCKET, Key="p/plain.bin", Body=(plain_body := os.urandom(5000)))
    objects["p/plain.bin"] = plain_body
    objects["p/multi.bin"] = multi = os.urandom(11 * MiB)
    put_multipart(c, "p/multi.bin", multi)
    root = tmp_path / "root"
    broken = {"p/d5/sub2/obj-0005.bin", "p/big.bin"}
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.fail = {f"{BUCKET}/{k}" for k in broken}
        proxy.flaky = {f"{BUCKET}/p/d2/sub2/obj-0002.bin": 2}  # two 503s, then fine: retried
        # A flipped byte: the stored CRC32 catches it, or the MD5 ETag where there is no CRC; after one retry.
        proxy.corrupt = {f"{BUCKET}/p/{k}" for k in ("d3/sub0/obj-0003.bin", "plain.bin", "multi.bin")}
        result = sync(
            f"s3://{BUCKET}/p/",
            root,
            storage_options=options(proxy.url, s3),
            retries=3,
            backoff=0.01,
            block_size=1 * MiB,
        )
        assert proxy.gets[f"{BUCKET}/p/d2/sub2/obj-0002.bin"] == 3
    failed = dict(result.failed)
    assert set(failed) == broken | {"p/d3/sub0/obj-0003.bin", "p/plain.bin", "p/multi.bin"}, failed
    assert all("503" in failed[k] or "ServiceUnavailable" in failed[k] for k in broken), {k: failed[k] for k in broken}
    assert "CRC32 (crc32)" in failed["p/d3/sub0/obj-0003.bin"] and "MD5 (md5)" in failed["p/plain.bin"], failed
    assert "multipart checksum" in failed["p/multi.bin"], failed  # part-wise reads: the -N checksum is recomputed
    assert result.transferred == len(objects) - 5
    on_disk = data_files(root)
    assert on_disk == {k.removeprefix("p/"): v for k, v in objects.items() if k not in failed}

    rerun = sync(f"s3://{BUCKET}/p/", root, storage_options=options(s3["endpoint_url"], s3))
    assert rerun.failed == [] and sorted(rerun.changed) == sorted(k.removeprefix("p/") for k in failed)
    assert data_files(root) == {k.removeprefix("p/"): v for k, v in objects.items()}


def test_a_connection_dropped_mid_body_is_retried_and_never_lands_half_written(s3, tmp_path):
    """The server announces the full length, sends half and hangs up: the read is retried from a fresh
    connection (small objects and ranged part reads alike); a key that is always cut fails naming the broken
    connection, with no file under its name and nothing left behind."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {"p/small-once.bin": os.urandom(300_000), "p/small-always.bin": os.urandom(200_000)}
    put_many(c, objects)
    objects["p/multi-once.bin"] = multi = os.urandom(11 * MiB)
    put_multipart(c, "p/multi-once.bin", multi)
    root = tmp_path / "root"
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.truncate = {f"{BUCKET}/p/small-once.bin": 1, f"{BUCKET}/p/multi-once.bin": 2}
        proxy.truncate[f"{BUCKET}/p/small-always.bin"] = 10**6
        result = sync(
            f"s3://{BUCKET}/p/", root, storage_options=options(proxy.url, s3), retries=2, backoff=0.01, block_size=MiB
        )
        assert proxy.gets[f"{BUCKET}/p/small-once.bin"] == 2
        assert proxy.truncate[f"{BUCKET}/p/multi-once.bin"] == 0, "the part reads were not cut as planned"
    failed = dict(result.failed)
    assert set(failed) == {"p/small-always.bin"}, failed
    assert "IncompleteRead" in failed["p/small-always.bin"] or "short read" in failed["p/small-always.bin"], failed
    assert data_files(root) == {k.removeprefix("p/"): v for k, v in objects.items() if k not in failed}
    assert not [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def test_object_reads_go_through_the_proxy_the_environment_names(s3, tmp_path, monkeypatch):
    """Platform networks often reach S3 through an HTTP proxy named in the environment: object reads honour it
    (as botocore does for the listing), and NO_PROXY exempts the endpoint again."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {"p/a.bin": os.urandom(5000), "p/big.bin": os.urandom(3 * MiB)}
    put_many(c, objects)
    with FaultProxy(s3["endpoint_url"]) as proxy:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        result = sync(
            f"s3://{BUCKET}/p/", tmp_path / "via", storage_options=options(s3["endpoint_url"], s3), block_size=MiB
        )
        assert result.failed == []
        assert data_files(tmp_path / "via") == {k.removeprefix("p/"): v for k, v in objects.items()}
        assert sorted(proxy.get_sizes) == [f"{BUCKET}/p/a.bin", f"{BUCKET}/p/big.bin"], proxy.get_sizes
        relayed = dict(proxy.gets)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.setenv(name, "127.0.0.1")
        again = sync(f"s3://{BUCKET}/p/", tmp_path / "direct", storage_options=options(s3["endpoint_url"], s3))
        assert again.failed == [] and dict(proxy.gets) == relayed


def test_a_down_server_raises_a_clear_error_and_loses_nothing(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    put_many(c, {"p/a.bin": b"a", "p/b/c.bin": b"c"})
    root = tmp_path / "root"
    sync(f"s3://{BUCKET}/p/", root, storage_options=options(s3["endpoint_url"], s3))
    manifest_before = (root / STATE_DIR / "manifest.json").read_bytes()
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceError, match=rf"cannot list source 's3://{BUCKET}/p/'"):
        sync(f"s3://{BUCKET}/p/", root, storage_options=options(down, s3), retries=1, backoff=0.01, delete=True)
    assert data_files(root) == {"a.bin": b"a", "b/c.bin": b"c"}
    assert (root / STATE_DIR / "manifest.json").read_bytes() == manifest_before
    with pytest.raises(SourceError, match=r"NoSuchBucket|does not exist|Not Found|404"):
        sync("s3://no-such-bucket/p/", root / "other", storage_options=options(s3["endpoint_url"], s3), retries=0)


def test_file_url_staging_source_is_mirrored_incrementally(tmp_path):
    src = tmp_path / "staging"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "x.nc").write_bytes(os.urandom(3 * MiB + 7))
    (src / "top.txt").write_bytes(b"top")
    root = tmp_path / "root"
    first = sync(f"file://{src}", root, block_size=MiB)
    assert first.failed == [] and sorted(first.changed) == ["a/b/x.nc", "top.txt"]
    assert data_files(root) == {"a/b/x.nc": (src / "a/b/x.nc").read_bytes(), "top.txt": b"top"}
    assert sync(f"file://{src}", root).transferred == 0
    time.sleep(0.01)  # a distinct mtime for the rewrite (the fingerprint of a local source)
    (src / "top.txt").write_bytes(b"TOP")
    (src / "a" / "b" / "x.nc").unlink()
    again = sync(f"file://{src}", root, delete=True)
    assert again.changed == ["top.txt"] and again.deleted_paths == ["a/b/x.nc"]
    assert data_files(root) == {"top.txt": b"TOP"}
    assert hashlib.md5((root / "top.txt").read_bytes()).hexdigest() == hashlib.md5(b"TOP").hexdigest()


def test_error_reports_blank_presigned_url_credentials():
    from proximate.sync.retry import describe

    text = describe(OSError("GET http://h/b/k?X-Amz-Credential=AKIDSECRET%2F1&X-Amz-Signature=f00d&x=1 failed"))
    assert "AKIDSECRET" not in text and "f00d" not in text and text.startswith("OSError: GET http://h/b/k?")


@pytest.mark.parametrize(
    "options",
    [
        {"key": "AKIDTOP", "secret": "s3cr3t", "endpoint_url": "http://127.0.0.1:9"},
        {"username": "AKIDUSER", "password": "pw", "token": "tok", "client_kwargs": {"region_name": "eu-west-2"}},
        {"anon": True, "key": "AKIDDROPPED", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}},
        {"key": "k", "secret": "s", "use_ssl": False, "config_kwargs": {"read_timeout": 7, "connect_timeout": 3}},
    ],
    ids=["top-level", "username-token-region", "anonymous", "ssl-timeouts"],
)
def test_storage_options_build_the_client_s3fs_would_build(options):
    """s3fs-style options are translated for botocore as s3fs translates them for aiobotocore: the same endpoint,
    region, credentials, signature and timeouts, whichever client a source ends up with."""
    from aiobotocore.session import AioSession

    from proximate.sync.s3client import open_client

    async def describe_client(opts: dict) -> tuple:
        client = await open_client(opts)
        try:
            meta, creds = client._client.meta, await client.credentials()
            return (
                client.blocking,
                meta.endpoint_url,
                meta.region_name,
                str(meta.config.signature_version),
                meta.config.connect_timeout,
                meta.config.read_timeout,
                None if creds is None else (creds.access_key, creds.secret_key, creds.token),
            )
        finally:
            await client.close()

    ours = asyncio.run(describe_client(options))
    theirs = asyncio.run(describe_client({**options, "session": AioSession()}))  # a key only s3fs knows
    assert ours[0] is True and theirs[0] is False
    assert ours[1:] == theirs[1:]


@pytest.mark.parametrize(
    "options",
    [
        {"key": "AKIDTOP", "secret": "s3cr3t", "token": "tok"},
        {},  # the environment's
        {"client_kwargs": {"aws_access_key_id": "AKIDCK", "aws_secret_access_key": "ck", "aws_account_id": "1234"}},
        {"key": "AKIDKEYONLY"},  # no secret: botocore and s3fs alike refuse to build the client
    ],
    ids=["explicit", "environment", "client-kwargs", "key-only"],
)
@pytest.mark.parametrize("through", ["botocore", "s3fs"])
def test_reads_are_signed_with_the_credentials_botocore_signs_with(options, through):
    """The credentials object reads are signed with (taken through public API: the client's config, the session
    it was built from, the keys given to it) are the very ones botocore's own signer holds and presigns with,
    for botocore's client and s3fs's alike. The test may look inside botocore; the code does not."""
    from urllib.parse import parse_qs, urlsplit

    from aiobotocore.session import AioSession
    from botocore.exceptions import PartialCredentialsError

    from proximate.sync.s3client import open_client

    opts = {**options, "endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"signature_version": "s3v4"}}
    if through == "s3fs":
        opts["session"] = AioSession()

    async def compare() -> None:
        if "secret" not in options and "key" in options:
            with pytest.raises(PartialCredentialsError):
                await open_client(opts)
            return
        client = await open_client(opts)
        try:
            ours = await client.credentials()
            held = client._client._request_signer._credentials
            theirs = held.get_frozen_credentials()
            theirs = await theirs if asyncio.iscoroutine(theirs) else theirs
            assert ours == theirs
            url = await client.call(
                "generate_presigned_url", ClientMethod="get_object", Params={"Bucket": "b", "Key": "k"}
            )
            query = parse_qs(urlsplit(url).query)
            assert query["X-Amz-Credential"][0].startswith(f"{ours.access_key}/")
            assert query.get("X-Amz-Security-Token", [None])[0] == ours.token
        finally:
            await client.close()

    asyncio.run(compare())


def test_conflicting_storage_options_are_refused_by_name():
    from proximate.sync.s3client import client_arguments

    with pytest.raises(ValueError, match="'key' and 'username'"):
        client_arguments({"key": "a", "username": "b"})
    with pytest.raises(ValueError, match="endpoint_url twice"):
        client_arguments({"endpoint_url": "http://a", "client_kwargs": {"endpoint_url": "http://b"}})


def test_a_source_with_options_only_s3fs_knows_is_read_through_s3fs(s3, tmp_path):
    """Options outside the translated set (here a ready aiobotocore session) go to s3fs, whose client then lists
    and signs: the same objects land, small and multipart alike."""
    from aiobotocore.session import AioSession

    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(30)
    put_many(c, objects)
    objects["p/multi.bin"] = multi = os.urandom(11 * MiB + 5)
    put_multipart(c, "p/multi.bin", multi)
    via_s3fs = {**options(s3["endpoint_url"], s3), "session": AioSession()}
    result = sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=via_s3fs, block_size=MiB)
    assert result.failed == [] and result.transferred == len(objects)
    assert data_files(tmp_path / "root") == {k.removeprefix("p/"): v for k, v in objects.items()}
    assert sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=via_s3fs).transferred == 0


def test_opening_a_source_leaves_garbage_collection_as_it_found_it():
    """Opening an S3 source pauses the collector while its client's modules import (botocore's client, or s3fs's
    for options only s3fs knows); it must come back on, and stay off if it was."""
    import gc

    from aiobotocore.session import AioSession

    async def open_and_close(options: dict) -> None:
        async with Source(f"s3://{BUCKET}/p/", options):
            pass

    for options in ({"key": "k", "secret": "s"}, {"key": "k", "secret": "s", "session": AioSession()}):
        assert gc.isenabled()
        asyncio.run(open_and_close(options))
        assert gc.isenabled()
        gc.disable()
        try:
            asyncio.run(open_and_close(options))
            assert not gc.isenabled()
        finally:
            gc.enable()
