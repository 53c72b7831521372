"""``proximate sync``: mirror an s3:// (or file://) prefix into a folder once, as the nightly flow does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from proximate.cli.common import add_command
from proximate.errors import ProximateInputError


def register(subparsers: Any) -> None:
    """Add ``sync`` to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    add_command(
        subparsers,
        "sync",
        run,
        help="mirror an s3:// (or file://) prefix into a folder once: incremental, atomic, verified",
        description="Mirror SOURCE into DEST as proximate.sync.sync does (the nightly flow's engine). Credentials "
        "come from the environment or --profile, as for the AWS CLI. Exit status 1 when any object failed.",
        arguments={
            "source": "s3://bucket/prefix/ or file:///path/",
            "dest": "the destination root (a region's file system)",
            "--delete": {"action": "store_true", "help": "remove files this sync wrote whose objects are gone"},
            "--max-delete": {
                "type": int,
                "metavar": "N",
                "help": "with --delete: remove at most N files (default: refuse to remove more than half the mirror)",
            },
            "--delete-all": {
                "action": "store_true",
                "help": "with --delete: allow any number of removals, every file included",
            },
            "--endpoint-url": "S3 endpoint (default: AWS, or AWS_ENDPOINT_URL_S3)",
            "--profile": "AWS profile for credentials",
            "--anon": {"action": "store_true", "help": "read a public bucket without credentials"},
            "--requester-pays": {"action": "store_true", "help": "the bucket is requester-pays: you pay for reads"},
            "--sse-c-key-file": {
                "metavar": "FILE",
                "help": "the SSE-C key the objects are encrypted with (32 bytes, or base64)",
            },
            "--concurrency": {"type": int, "help": "object reads in flight (default: the engine's, 16)"},
            "--no-fsync": {"action": "store_true", "help": "do not make files durable before naming them"},
            "--json": {"action": "store_true", "help": "print the SyncResult as JSON"},
        },
        one_shot=True,
    )


def _sse_c_key(path: str) -> bytes:
    """The SSE-C key in ``path``: its 32 bytes, or their base64 text (as ``openssl rand -base64 32`` writes it)."""
    import base64
    import binascii

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:  # a mistyped path is bad input, not a crash
        raise ProximateInputError(f"--sse-c-key-file {path}: {exc.strerror}") from None
    if len(raw) == 32:
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise ProximateInputError(f"--sse-c-key-file {path}: not a 256-bit key (32 bytes, raw or base64)")
    return key


def run(args: argparse.Namespace) -> int:
    """Run one sync and report it (a line, or JSON), with warnings for cold, size-only and failed objects.

    Args:
        args: the parsed ``sync`` arguments.

    Returns:
        0 when every object synced, else 1.

    Raises:
        ProximateInputError: the SSE-C key file is missing or not a key.
    """
    import json

    from proximate.sync import ManifestWriteError, sync

    options: dict[str, object] = {}
    if args.endpoint_url:
        options["endpoint_url"] = args.endpoint_url
    if args.profile:
        options["profile"] = args.profile
    if args.anon:
        options["anon"] = True
    if args.requester_pays:
        options["requester_pays"] = True
    if args.sse_c_key_file:
        key = _sse_c_key(args.sse_c_key_file)
        options["s3_additional_kwargs"] = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    tuning = {} if args.concurrency is None else {"concurrency": args.concurrency}
    try:
        result = sync(
            args.source,
            args.dest,
            storage_options=options,
            delete=args.delete,
            max_delete=args.max_delete,
            delete_all=args.delete_all,
            fsync=not args.no_fsync,
            **tuning,
        )
    except ManifestWriteError as exc:  # a full disk: the message names the file
        print(f"proximate: error: {exc.strerror}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        cold = f", {result.skipped_cold} cold (skipped)" if result.cold else ""
        print(
            f"{result.source_url} -> {result.dest_root}: {result.new} new, {result.modified} changed,"
            f" {result.deleted} deleted, {result.skipped} unchanged, {len(result.failed)} failed{cold};"
            f" {result.bytes_transferred / 2**20:.1f} MiB in {result.seconds:.2f} s ({result.mib_per_s:.1f} MiB/s)"
        )
    for key in result.cold[:50]:
        print(f"proximate: warning: skipped cold object {key!r} (archived, not restored)", file=sys.stderr)
    if len(result.cold) > 50:
        print(f"proximate: warning: ... and {len(result.cold) - 50} more cold objects", file=sys.stderr)
    if result.size_only:
        print(
            f"proximate: note: {len(result.size_only)} object(s) checked by size only (no checksum the store keeps"
            f" could be checked), e.g. {result.size_only[0]!r}",
            file=sys.stderr,
        )
    for key, reason in result.failed[:50]:
        print(f"proximate: failed: {key!r}: {reason}", file=sys.stderr)
    if len(result.failed) > 50:
        print(f"proximate: failed: ... and {len(result.failed) - 50} more", file=sys.stderr)
    if result.delete_refused:
        print(f"proximate: error: {result.delete_refused}", file=sys.stderr)
    return 0 if result.ok else 1
