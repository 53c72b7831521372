"""`proximate sync`, the one-shot command, run as its console script in its own process against the S3 server:
what it prints, its exit status, and that its quick exit (no interpreter teardown) loses nothing it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import free_port
from s3_fault_proxy import FaultProxy
from test_sync import BUCKET, client, data_files, put_many, small_payloads

from proximate.sync import STATE_DIR, Manifest

EXE = Path(sys.executable).with_name("proximate")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), "sync", *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_cli_mirrors_reports_json_and_a_rerun_moves_nothing(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(40)
    put_many(c, objects)
    root = tmp_path / "root"

    first = run("--endpoint-url", s3["endpoint_url"], "--json", f"s3://{BUCKET}/p/", str(root))
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["transferred"], report["new"], report["failed"]) == (40, 40, [])
    assert report["bytes_transferred"] == sum(map(len, objects.values()))
    assert data_files(root) == {k.removeprefix("p/"): v for k, v in objects.items()}
    # The process skipped the interpreter's teardown: the manifest it wrote is whole and knows every file.
    with Manifest(root, f"s3://{BUCKET}/p/") as manifest:
        assert set(manifest.entries) == {k.removeprefix("p/") for k in objects}
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in first.stdout + first.stderr

    c.delete_object(Bucket=BUCKET, Key="p/d0/sub0/obj-0000.bin")
    # The endpoint from the environment this time, as --help says botocore takes it.
    again = run("--delete", f"s3://{BUCKET}/p/", str(root), AWS_ENDPOINT_URL_S3=s3["endpoint_url"])
    assert again.returncode == 0, again.stderr
    assert "0 new, 0 changed, 1 deleted, 39 unchanged, 0 failed; 0.0 MiB" in again.stdout
    assert "d0/sub0/obj-0000.bin" not in data_files(root)


def test_cli_exits_1_naming_failed_keys_and_keeps_the_rest(s3, tmp_path):
    c = client(s3["endpoint_url"])
    c.create_bucket(Bucket=BUCKET)
    objects = small_payloads(12)
    put_many(c, objects)
    broken = "p/d3/sub0/obj-0003.bin"
    root = tmp_path / "root"
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.fail = {f"{BUCKET}/{broken}"}
        done = run("--endpoint-url", proxy.url, f"s3://{BUCKET}/p/", str(root))
    assert done.returncode == 1
    assert f"proximate: failed: {broken!r}:" in done.stderr and "503" in done.stderr
    assert "11 new, 0 changed, 0 deleted, 0 unchanged, 1 failed" in done.stdout
    assert data_files(root) == {k.removeprefix("p/"): v for k, v in objects.items() if k != broken}


def test_cli_reports_a_down_server_by_name_and_writes_nothing(tmp_path):
    root = tmp_path / "root"
    down = run("--endpoint-url", f"http://127.0.0.1:{free_port()}", f"s3://{BUCKET}/p/", str(root))
    assert down.returncode == 1
    assert down.stderr.startswith(f"proximate: error: cannot list source 's3://{BUCKET}/p/'"), down.stderr
    assert data_files(root) == {} and not (root / STATE_DIR / "manifest.json").exists()
