"""proximate.sync against what real S3 does and moto does not, produced by tests/s3_fault_proxy.py in front of
the moto server: opaque SSE-KMS and SSE-C ETags, CRC64NVME FULL_OBJECT checksums, a bucket in another region,
requester-pays buckets, archived objects, a truncated listing page without a token; and the guards around them:
deletes that cannot wipe a mirror, the manifest keyed by the normalised source, key conflicts, a full disk."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from pathlib import Path

import anycrc
import boto3
import pytest
from botocore.config import Config
from s3_fault_proxy import FaultProxy
from test_sync import BUCKET, MiB, client, data_files, options, put_many, put_multipart, small_payloads

from proximate.sync import STATE_DIR, Manifest, ManifestWriteError, SourceError, checksums, plan_sync, sync, transfer
from proximate.sync.sources import RemoteObject
from proximate.sync.sources import open_source as Source

EXE = Path(sys.executable).with_name("proximate")


def plain_client(endpoint: str):
    """A client that stores no additional checksum (as older SDKs and many tools do): only the ETag is left."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(request_checksum_calculation="when_required"),
    )


def plain_bucket(s3: dict, objects: dict[str, bytes]):
    """The test bucket with ``objects`` stored without an additional checksum; (boto3's client, the plain one)."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    plain = plain_client(s3["endpoint_url"])
    for key, body in objects.items():
        plain.put_object(Bucket=BUCKET, Key=key, Body=body)
    return c, plain


def expected(objects: dict[str, bytes], prefix: str = "p/") -> dict[str, bytes]:
    return {k.removeprefix(prefix): v for k, v in objects.items()}


def crc64nvme_reference(data: bytes) -> int:
    """CRC-64/NVME bit by bit from its definition (reflected polynomial 0x9a6c9329ac4bc9b5, init and xorout all
    ones), independent of any library."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x9A6C9329AC4BC9B5 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def test_crc64nvme_matches_its_definition_and_the_catalogue_check_value():
    assert crc64nvme_reference(b"123456789") == 0xAE8B14860A799888  # the CRC RevEng catalogue's check value
    data = os.urandom(3000)
    h = checksums.HASHERS["crc64nvme"]()
    for i, at in enumerate(range(0, len(data), 999)):  # in pieces, every buffer type the engine hands in
        piece = data[at : at + 999]
        h.update((piece, bytearray(piece), memoryview(bytearray(piece)))[i % 3])
    assert h.digest() == crc64nvme_reference(data).to_bytes(8, "big")
    assert anycrc.Model("CRC64-NVME").calc(data) == crc64nvme_reference(data)  # what the proxy answers with


def test_choose_never_takes_an_encrypted_objects_etag_for_its_md5():
    md5 = "0" * 32
    assert checksums.choose({}, md5, multipart=False).algorithm == "md5"
    for headers in (
        {"x-amz-server-side-encryption": "aws:kms"},
        {"X-Amz-Server-Side-Encryption": "aws:kms:dsse"},
        {"x-amz-server-side-encryption-customer-algorithm": "AES256"},
    ):
        assert checksums.choose(headers, md5, multipart=False) is None
        assert checksums.choose(headers, md5 + "-3", multipart=True) is None
    assert checksums.choose({"x-amz-server-side-encryption": "AES256"}, md5, multipart=False).algorithm == "md5"
    full = {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-checksum-crc64nvme": "AAAAAAAAAAA=",
        "x-amz-checksum-type": "FULL_OBJECT",
    }
    got = checksums.choose(full, md5 + "-3", multipart=True)  # no part-wise check: the whole-object CRC serves
    assert (got.algorithm, got.parts) == ("crc64nvme", None)


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_sse_kms_objects_land_checked_by_what_s3_says_never_failed_as_corrupt(s3, tmp_path):
    """SSE-KMS objects have ETags that look like MD5s and are not: those without another checksum are checked
    by size, reported as such, fetched once; one with a stored CRC32 is checked by it; one whose only checksum is
    S3's CRC64NVME (FULL_OBJECT, also over a multipart upload) is checked by that, streamed whole."""
    objects = {"p/kms/small.bin": os.urandom(5000), "p/kms/big.bin": os.urandom(3 * MiB)}
    c, plain = plain_bucket(s3, objects)
    objects["p/kms/multi.bin"] = os.urandom(11 * MiB)
    put_multipart(plain, "p/kms/multi.bin", objects["p/kms/multi.bin"])
    objects["p/kms/crc32.bin"] = os.urandom(7000)
    c.put_object(Bucket=BUCKET, Key="p/kms/crc32.bin", Body=objects["p/kms/crc32.bin"])  # boto3 adds a CRC32
    crc = {"p/crc/small.bin": os.urandom(6000), "p/crc/multi.bin": os.urandom(11 * MiB)}
    plain.put_object(Bucket=BUCKET, Key="p/crc/small.bin", Body=crc["p/crc/small.bin"])
    put_multipart(plain, "p/crc/multi.bin", crc["p/crc/multi.bin"])
    objects.update(crc)
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.kms = {f"{BUCKET}/{k}" for k in objects}
        proxy.crc64nvme = {f"{BUCKET}/{k}" for k in crc}
        result = sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=options(proxy.url, s3), block_size=MiB)
        assert result.failed == [], result.failed
        assert data_files(tmp_path / "root") == expected(objects)
        assert sorted(result.size_only) == ["p/kms/big.bin", "p/kms/multi.bin", "p/kms/small.bin"]
        for key, body in objects.items():  # every byte fetched once: nothing downloaded again for a "mismatch"
            assert sum(proxy.get_sizes[f"{BUCKET}/{key}"]) == len(body), key
        assert proxy.get_sizes[f"{BUCKET}/p/crc/multi.bin"] == [11 * MiB]  # whole, in order, for its CRC

        proxy.corrupt = {f"{BUCKET}/{k}" for k in (*crc, "p/kms/crc32.bin")}
        bad = sync(f"s3://{BUCKET}/p/", tmp_path / "bad", storage_options=options(proxy.url, s3), block_size=MiB)
    failed = dict(bad.failed)
    assert set(failed) == {*crc, "p/kms/crc32.bin"}, failed
    assert all("CRC64NVME" in failed[k] and "x-amz-checksum-crc64nvme" in failed[k] for k in crc), failed
    assert "CRC32" in failed["p/kms/crc32.bin"]


def test_sse_c_objects_are_read_with_the_key_given_and_refused_without_it(s3, tmp_path):
    objects = {"p/c/small.bin": os.urandom(4000), "p/c/big.bin": os.urandom(3 * MiB)}
    plain_bucket(s3, objects)
    key = os.urandom(32)
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.sse_c = {f"{BUCKET}/{k}": key for k in objects}
        without = sync(f"s3://{BUCKET}/p/", tmp_path / "no", storage_options=options(proxy.url, s3), block_size=MiB)
        assert {k for k, _ in without.failed} == set(objects) and all("400" in r for _, r in without.failed)
        given = {
            **options(proxy.url, s3),
            "s3_additional_kwargs": {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key},
        }
        result = sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=given, block_size=MiB)
    assert result.failed == [] and data_files(tmp_path / "root") == expected(objects)
    assert sorted(result.size_only) == sorted(objects)  # opaque ETags, no other checksum: size, and said so


def test_sse_c_and_requester_pays_reads_carry_the_headers_botocore_sends(s3):
    """The hand-signed GET takes its SSE-C and requester-pays headers from the request botocore prepares for the
    same get_object: they are the ones its own get_object sends (captured here from a real call)."""
    key = os.urandom(32)
    sent: dict[str, str] = {}
    c = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1")

    def capture(request, **kwargs):
        sent.update({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    c.meta.events.register("before-send.s3.GetObject", capture)
    with pytest.raises(c.exceptions.ClientError):
        c.get_object(Bucket="b", Key="k", SSECustomerAlgorithm="AES256", SSECustomerKey=key, RequestPayer="requester")
    extra = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}

    async def headers() -> dict[str, str]:
        opts = {**options(s3["endpoint_url"], s3), "requester_pays": True, "s3_additional_kwargs": extra}
        async with Source("s3://b/p/", opts) as src:
            await src.address(RemoteObject("p/k", "k", 1, "x"))
            return {k.lower(): v for k, v in src._get_headers.items()}

    ours = asyncio.run(headers())
    assert len(ours) == 4 and ours == {k: sent[k] for k in ours}
    assert ours["x-amz-request-payer"] == "requester"


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_a_bucket_in_another_region_is_read_from_its_region(s3, tmp_path):
    """Signed for us-east-1, the bucket in eu-west-2: S3 answers 400 AuthorizationHeaderMalformed with
    x-amz-bucket-region. botocore follows it for the listing (and a HeadBucket); every GET is then signed for
    eu-west-2, in one run and in a transfer with a fresh source (the flow's batches), small and multipart alike."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(20)
    put_many(c, objects)
    objects["p/multi.bin"] = os.urandom(11 * MiB)
    put_multipart(c, "p/multi.bin", objects["p/multi.bin"])
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.bucket_region = {BUCKET: "eu-west-2"}
        opts = options(proxy.url, s3)
        result = sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=opts, block_size=MiB)
        assert result.failed == [] and data_files(tmp_path / "root") == expected(objects)
        assert set(proxy.signed_regions) == {"eu-west-2"}, proxy.signed_regions
        assert proxy.wrong_region["GET object"] == 0, proxy.wrong_region  # no GET went to the wrong region
        assert proxy.wrong_region["GET bucket"] >= 1  # the listing was redirected, as real S3 makes it

        plan = plan_sync(f"s3://{BUCKET}/p/", tmp_path / "batch", storage_options=opts)
        proxy.signed_regions.clear()
        batch = transfer(plan.fetch, f"s3://{BUCKET}/p/", tmp_path / "batch", new=plan.new, storage_options=opts)
        assert batch.failed == [] and data_files(tmp_path / "batch") == expected(objects)
        assert set(proxy.signed_regions) == {"eu-west-2"} and proxy.wrong_region["GET object"] == 0


@pytest.mark.parametrize("answers", ["403 names it", "location", "probe redirect"])
@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_a_bucket_in_another_region_is_found_when_head_bucket_is_refused(s3, tmp_path, answers):
    """Credentials without s3:ListBucket get 403 for HeadBucket. A transfer with a fresh source (the flow's
    batches, listed elsewhere) finds the bucket's region as botocore and S3 tell it: the 403's
    x-amz-bucket-region, else GetBucketLocation, else the redirect of a probe GET through botocore; every read is
    then signed for eu-west-2 and none is refused for its region."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(12)
    objects["p/multi.bin"] = os.urandom(11 * MiB)
    put_many(c, objects)
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.bucket_region = {BUCKET: "eu-west-2"}
        opts = options(proxy.url, s3)
        plan = plan_sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=opts)
        proxy.refuse_head_bucket = {BUCKET: answers == "403 names it"}
        proxy.refuse_location = {BUCKET} if answers == "probe redirect" else set()
        proxy.signed_regions.clear()
        proxy.wrong_region.clear()
        proxy.bucket_requests.clear()
        batch = transfer(plan.fetch, f"s3://{BUCKET}/p/", tmp_path / "root", new=plan.new, storage_options=opts)
        assert batch.failed == [] and data_files(tmp_path / "root") == expected(objects)
        assert set(proxy.signed_regions) == {"eu-west-2"}, proxy.signed_regions
        # No read of ours went to the wrong region; only the probe may have (botocore sends it and follows S3's
        # redirect), unless a HEAD botocore sent first had already taught botocore the region.
        assert proxy.wrong_region["GET object"] <= (answers == "probe redirect"), proxy.wrong_region
        assert proxy.bucket_requests["HEAD bucket"] == 1
        assert proxy.bucket_requests["GET location"] == (answers != "403 names it"), proxy.bucket_requests


def test_a_bucket_whose_region_nothing_names_fails_naming_it_and_what_to_set(s3, tmp_path):
    """HeadBucket and GetBucketLocation refused and no answer naming the region: each read fails with a message
    naming the bucket, the region it was signed for, what was asked, and the option to set; set, it works."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(3)
    put_many(c, objects)
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.bucket_region = {BUCKET: "eu-west-2"}
        opts = options(proxy.url, s3)
        plan = plan_sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=opts)
        proxy.refuse_head_bucket = {BUCKET: False}
        proxy.refuse_location = proxy.unnamed_region = {BUCKET}
        batch = transfer(plan.fetch, f"s3://{BUCKET}/p/", tmp_path / "root", new=plan.new, storage_options=opts)
        assert len(batch.failed) == len(objects)
        message = str(batch.failed[0])
        for part in (f"bucket {BUCKET!r} is not in region 'us-east-1'", "HeadBucket answered HTTP 403",
                     "GetBucketLocation answered HTTP 403", "region_name", "s3:ListBucket"):  # fmt: skip
            assert part in message, message
        opts["client_kwargs"]["region_name"] = "eu-west-2"
        batch = transfer(plan.fetch, f"s3://{BUCKET}/p/", tmp_path / "root", new=plan.new, storage_options=opts)
        assert batch.failed == [] and data_files(tmp_path / "root") == expected(objects)


def test_a_requester_pays_bucket_is_listed_and_read_only_when_asked(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {"p/a.bin": os.urandom(3000), "p/big.bin": os.urandom(3 * MiB)}
    put_many(c, objects)
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.requester_pays = {BUCKET}
        with pytest.raises(SourceError, match=r"AccessDenied|403"):
            sync(f"s3://{BUCKET}/p/", tmp_path / "no", storage_options=options(proxy.url, s3), retries=0)
        paying = {**options(proxy.url, s3), "requester_pays": True}
        result = sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=paying, block_size=MiB)
        assert result.failed == [] and data_files(tmp_path / "root") == expected(objects)
        cli = subprocess.run(
            [
                str(EXE),
                "sync",
                "--endpoint-url",
                proxy.url,
                "--requester-pays",
                f"s3://{BUCKET}/p/",
                str(tmp_path / "cli"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert cli.returncode == 0, cli.stderr
    assert data_files(tmp_path / "cli") == expected(objects)


def test_cold_objects_are_skipped_counted_and_never_fail_the_run(s3, tmp_path):
    """GLACIER and DEEP_ARCHIVE objects (the listing says so) are skipped without a GET; an object archived where
    the listing does not show it (an Intelligent-Tiering archive tier: the GET answers 403 InvalidObjectState) is
    skipped too. Each is named in a warning and in ``cold``; the run is a success."""
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {"p/warm.bin": os.urandom(2000), "p/tiered.bin": os.urandom(2000)}
    put_many(c, objects)
    for key, storage in (("p/glacier.bin", "GLACIER"), ("p/deep.bin", "DEEP_ARCHIVE"), ("p/thawed.bin", "GLACIER")):
        c.put_object(Bucket=BUCKET, Key=key, Body=b"archived", StorageClass=storage)
    c.restore_object(Bucket=BUCKET, Key="p/thawed.bin", RestoreRequest={"Days": 1})
    root = tmp_path / "root"
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.cold = {f"{BUCKET}/p/tiered.bin"}
        proxy.restored = {f"{BUCKET}/p/thawed.bin"}
        result = sync(f"s3://{BUCKET}/p/", root, storage_options=options(proxy.url, s3))
        assert f"{BUCKET}/p/glacier.bin" not in proxy.gets and f"{BUCKET}/p/deep.bin" not in proxy.gets
        cli = subprocess.run(
            [str(EXE), "sync", "--endpoint-url", proxy.url, "--json", f"s3://{BUCKET}/p/", str(tmp_path / "cli")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.ok and result.failed == []
    assert sorted(result.cold) == ["p/deep.bin", "p/glacier.bin", "p/tiered.bin"] and result.skipped_cold == 3
    assert data_files(root) == {"warm.bin": objects["p/warm.bin"], "thawed.bin": b"archived"}  # restored: read
    assert cli.returncode == 0, cli.stderr
    assert "skipped cold object 'p/glacier.bin'" in cli.stderr and '"skipped_cold": 3' in cli.stdout


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_a_truncated_listing_without_a_token_is_refused_and_deletes_nothing(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {f"p/o{i:04d}": b"x" for i in range(1100)}
    put_many(c, objects, workers=16)
    root = tmp_path / "root"
    assert sync(f"s3://{BUCKET}/p/", root, storage_options=options(s3["endpoint_url"], s3)).transferred == 1100
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.truncate_listing = True
        with pytest.raises(SourceError, match="truncated but gives no continuation token"):
            sync(f"s3://{BUCKET}/p/", root, storage_options=options(proxy.url, s3), delete=True, delete_all=True)
    assert len(data_files(root)) == 1100


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_deletes_past_half_the_mirror_or_of_every_file_are_refused_whole(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {f"p/f{i}.bin": os.urandom(100) for i in range(10)}
    put_many(c, objects)
    root = tmp_path / "root"
    opts = options(s3["endpoint_url"], s3)
    sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    for i in range(6):
        c.delete_object(Bucket=BUCKET, Key=f"p/f{i}.bin")
    refused = sync(f"s3://{BUCKET}/p/", root, storage_options=opts, delete=True)
    assert refused.deleted == 0 and len(data_files(root)) == 10 and not refused.ok
    assert "refusing to delete 6 of the 10" in refused.delete_refused and "--max-delete 6" in refused.delete_refused
    cli = subprocess.run(
        [str(EXE), "sync", "--endpoint-url", s3["endpoint_url"], "--delete", f"s3://{BUCKET}/p/", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1 and "--max-delete 6" in cli.stderr and "--delete-all" in cli.stderr, cli.stderr
    assert len(data_files(root)) == 10
    allowed = subprocess.run(
        [
            str(EXE),
            "sync",
            "--endpoint-url",
            s3["endpoint_url"],
            "--delete",
            "--max-delete",
            "6",
            f"s3://{BUCKET}/p/",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert sorted(data_files(root)) == [f"f{i}.bin" for i in range(6, 10)]
    for i in range(6, 10):
        c.delete_object(Bucket=BUCKET, Key=f"p/f{i}.bin")
    assert sync(f"s3://{BUCKET}/p/", root, storage_options=opts, delete=True, max_delete=100).deleted == 0
    assert sync(f"s3://{BUCKET}/p/", root, storage_options=opts, delete=True, delete_all=True).deleted == 4
    assert data_files(root) == {}


def test_the_manifest_is_one_per_source_however_its_url_is_spelled(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(20, "data/")
    put_many(c, objects)
    root = tmp_path / "root"
    opts = options(s3["endpoint_url"], s3)
    assert sync(f"s3://{BUCKET}/data", root, storage_options=opts).transferred == 20
    again = sync(f"s3://{BUCKET}/data/", root, storage_options=opts)
    assert (again.transferred, again.skipped) == (0, 20)
    assert sync(f"s3a://{BUCKET}/data/", root, storage_options=opts).transferred == 0
    with Manifest(root, f"s3://{BUCKET}/data") as m:
        assert len(m.entries) == 20


def test_a_key_beside_a_folder_of_the_same_name_is_reported_once_by_both_names(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    put_many(c, {"p/a": b"file", "p/a/b": b"in the folder", "p/a/c/d": b"deeper", "p/z": b"z"})
    root = tmp_path / "root"
    with FaultProxy(s3["endpoint_url"]) as proxy:
        for run in range(2):
            proxy.gets.clear()
            result = sync(f"s3://{BUCKET}/p/", root, storage_options=options(proxy.url, s3))
            assert len(result.failed) == 1, result.failed
            ((key, reason),) = result.failed
            assert key == "p/a" and "'p/a'" in reason and "'p/a/b'" in reason and TEMP not in reason
            assert f"{BUCKET}/p/a" not in proxy.gets, "the conflicting key was fetched"
            if run:
                assert result.transferred == 0
    assert data_files(root) == {"a/b": b"in the folder", "a/c/d": b"deeper", "z": b"z"}


TEMP = ".proximate-tmp-"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (the test runs as root, as CI does); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_names_the_path_and_leaves_the_manifest_consistent(s3, tmp_path, small_disk):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = {f"p/f{i}.bin": os.urandom(700_000) for i in range(8)}  # 5.3 MB into 4 MiB
    put_many(c, objects)
    root = small_disk / "root"
    opts = options(s3["endpoint_url"], s3)
    try:
        result = sync(f"s3://{BUCKET}/p/", root, storage_options=opts, concurrency=2)
    except ManifestWriteError as exc:
        assert "no space left on device" in str(exc) and str(root / STATE_DIR) in str(exc)
    else:
        assert result.failed, "everything fit: the test proved nothing"
        for key, reason in result.failed:
            assert "No space left on device" in reason and str(root / key.removeprefix("p/")) in reason, reason
    with Manifest(root, f"s3://{BUCKET}/p/") as m:  # whatever it records is there, whole
        for rel, entry in m.entries.items():
            assert (root / rel).read_bytes() == objects[f"p/{rel}"] and entry.size == 700_000
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rerun = sync(f"s3://{BUCKET}/p/", root, storage_options=opts)
    assert rerun.failed == [] and data_files(root) == expected(objects)
    assert not [p for p in root.rglob("*") if p.name.startswith(TEMP)]


def test_a_journal_the_disk_refuses_ends_the_run_with_its_path(s3, tmp_path, monkeypatch):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(10)
    put_many(c, objects)
    root = tmp_path / "root"
    from proximate.sync import manifest as manifest_module

    real_write = os.write

    def full(fd, data):
        if b'"put"' in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(manifest_module.os, "write", full)
    with pytest.raises(ManifestWriteError, match=r"no space left on device: cannot append to .*journal.jsonl"):
        sync(f"s3://{BUCKET}/p/", root, storage_options=options(s3["endpoint_url"], s3))
    monkeypatch.setattr(manifest_module.os, "write", real_write)
    rerun = sync(f"s3://{BUCKET}/p/", root, storage_options=options(s3["endpoint_url"], s3))
    assert rerun.failed == [] and data_files(root) == expected(objects)
