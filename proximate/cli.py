"""The ``proximate`` command: local cluster, production workers, and the demo."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proximate.errors import ProximateError, ProximateInputError
from proximate.regions import RegionError, validate_region_name

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint


def _terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so context managers clean up exactly as on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _tls_from_args(args: argparse.Namespace):
    from proximate.cluster import TLSFiles

    given = [args.tls_ca_file, args.tls_cert, args.tls_key]
    if not any(given):
        return None
    if not all(given):
        raise RegionError("TLS needs all of --tls-ca-file, --tls-cert and --tls-key")
    for path in given:
        if not Path(path).is_file():
            raise RegionError(f"TLS file does not exist: {path}")
    return TLSFiles(args.tls_ca_file, args.tls_cert, args.tls_key)


def _add_tls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca-file", help="CA certificate that signs scheduler and worker certificates")
    parser.add_argument("--tls-cert", help="this process's certificate")
    parser.add_argument("--tls-key", help="this process's private key")


def _cluster_bounds(args: argparse.Namespace, region_names: list[str]):
    """Each region's scaling bounds from ``--min-workers``/``--max-workers``, or ``None`` for fixed workers."""
    if not args.min_workers and not args.max_workers:
        return None
    if not args.max_workers:
        raise RegionError("--min-workers needs --max-workers (N, or REGION=N for every region)")
    from proximate.autoscale import parse_bounds

    bounds = parse_bounds(region_names, args.min_workers, args.max_workers)
    if args.workers_per_region is not None:
        for name, b in bounds.items():
            if b.clamp(args.workers_per_region) != args.workers_per_region:
                raise RegionError(
                    f"--workers-per-region {args.workers_per_region} is outside region {name!r}'s "
                    f"--min-workers {b.minimum} .. --max-workers {b.maximum}"
                )
    if args.scale_down_after < 0:
        raise RegionError(f"--scale-down-after must not be negative, got {args.scale_down_after}")
    if args.target_duration <= 0:
        raise RegionError(f"--target-duration must be positive, got {args.target_duration}")
    if args.scale_interval <= 0:
        raise RegionError(f"--scale-interval must be positive, got {args.scale_interval}")
    return bounds


def cmd_cluster_up(args: argparse.Namespace) -> int:
    from proximate.cluster import LocalRegionalCluster, parse_region_arg, validate_regions

    regions = validate_regions([parse_region_arg(r) for r in args.region])  # before anything starts
    bounds = _cluster_bounds(args, [r.name for r in regions])  # likewise
    if bounds is None:
        workers: int | dict[str, int] = 2 if args.workers_per_region is None else args.workers_per_region
    else:  # each region starts at its minimum (or the count given), then follows its own backlog
        start = args.workers_per_region
        workers = {name: b.minimum if start is None else start for name, b in bounds.items()}
    if isinstance(workers, int) and workers < 0:
        raise RegionError(f"--workers-per-region must not be negative, got {workers}")
    _terminate_on_sigterm()
    cluster = LocalRegionalCluster(
        regions,
        workers_per_region=workers,
        threads_per_worker=args.threads_per_worker,
        scheduler_port=args.port,
        dashboard=args.dashboard,
        no_workers_timeout=args.no_workers_timeout,
        tls=_tls_from_args(args),
    )
    try:
        cluster.start()
        print(cluster.address, flush=True)
        summary = ", ".join(f"{r.name}={r.root}" for r in cluster.regions)
        if bounds is None:
            print(f"# {workers} worker(s) per region: {summary}", file=sys.stderr, flush=True)
        else:
            scaling = ", ".join(f"{n} {b.minimum}..{b.maximum}" for n, b in bounds.items())
            print(f"# autoscaling workers per region ({scaling}): {summary}", file=sys.stderr, flush=True)
        if cluster.dashboard_link:
            print(f"# dashboard: {cluster.dashboard_link}", file=sys.stderr, flush=True)
        if bounds is None:
            while True:
                signal.pause()
        from proximate.autoscale import autoscaled

        with autoscaled(
            cluster,
            bounds,
            interval=args.scale_interval,
            scale_down_after=args.scale_down_after,
            target_duration=args.target_duration,
        ):
            while True:
                signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.close()


def cmd_autoscale(args: argparse.Namespace) -> int:
    import logging

    from proximate.autoscale import parse_bounds
    from proximate.autoscale.service import parse_ecs_services, run_ecs_autoscaler

    services = parse_ecs_services(args.ecs_service)  # every value checked before anything connects
    if not args.max_workers:
        raise RegionError("give --max-workers N (or REGION=N for every region)")
    bounds = parse_bounds(list(services), args.min_workers, args.max_workers)
    for flag, value in (("--target-duration", args.target_duration), ("--scale-interval", args.scale_interval)):
        if value <= 0:
            raise RegionError(f"{flag} must be positive, got {value}")
    if args.scale_down_after < 0:
        raise RegionError(f"--scale-down-after must not be negative, got {args.scale_down_after}")
    tls = _tls_from_args(args)
    if tls is None and args.scheduler.startswith("tls://"):
        raise RegionError("a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    scaler = run_ecs_autoscaler(
        args.scheduler,
        services,
        bounds,
        security=tls.security() if tls else None,
        endpoint_url=args.ecs_endpoint_url,
        interval=args.scale_interval,
        target_duration=args.target_duration,
        scale_down_after=args.scale_down_after,
        threads_per_worker=args.threads_per_worker,
    )
    updates = ", ".join(f"{r}={n}" for r, n in scaler.backend.updates) or "none"
    print(f"autoscale stopped: desiredCount updates {updates}; {len(scaler.errors)} error(s)", flush=True)
    return 0


def _worker_network(args: argparse.Namespace) -> tuple[str, str | None]:
    """The address ``proximate worker`` binds (and advertises) and where its HTTP server listens (None: none).

    A plaintext scheduler off loopback is refused unless ``--allow-plaintext``; without ``--host`` the worker
    binds the interface on the route to the scheduler, never Dask's default of every interface.
    """
    from proximate.network import check_scheduler_transport, local_address_toward

    check_scheduler_transport(args.scheduler, allow_plaintext=args.allow_plaintext)
    host = args.host or local_address_toward(args.scheduler)
    return host, None if args.http_address.lower() == "none" else args.http_address


def cmd_worker(args: argparse.Namespace) -> int:
    from proximate.cluster import worker_command, worker_env

    validate_region_name(args.region)
    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise RegionError(f"root directory of region {args.region!r} does not exist: {root}")
    tls = _tls_from_args(args)
    if tls is None and args.scheduler.startswith("tls://"):
        raise RegionError("a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key")
    host, http_address = _worker_network(args)
    name = args.name or f"{args.region}-{socket.gethostname()}-{os.getpid()}"
    cmd = worker_command(
        scheduler=args.scheduler,
        region=args.region,
        name=name,
        nthreads=args.nthreads,
        host=host,
        http_address=http_address,
        nanny=not args.no_nanny,
        tls=tls,
        memory_limit=args.memory_limit,
        rejoin=not args.no_rejoin,
    )
    env = worker_env(args.region, root.resolve())
    os.execve(cmd[0], cmd, env)  # the worker takes over this process: signals reach it directly
    return 0  # pragma: no cover


COMMANDS_GROUP = "proximate.commands"
# The demo extra, as the demo's S3 server needs it: moto, and the web framework moto's server runs on.
DEMO_EXTRA_MODULES = ("moto", "flask")


class CommandUnavailableError(ProximateInputError):
    """A command whose part is not installed: exit status 2, as for bad input, with the fix in the message."""


def find_command(name: str, entry_points: Iterable[EntryPoint] | None = None) -> Callable[..., Any]:
    """The function registered as command ``name`` in the ``proximate.commands`` entry points.

    Commands that live outside the core (the full demo runs the Prefect flows) are found this way so that
    ``proximate/`` never imports their packages; look-ups happen when a command runs, never at start-up.

    Args:
        name: the entry point's name, e.g. ``"demo"``.
        entry_points: where to look; by default the installed ones of the group.

    Returns:
        The loaded entry point (importing its module).

    Raises:
        CommandUnavailableError: no entry point of that name (the installation predates it).
    """
    if entry_points is None:
        from importlib.metadata import entry_points as installed

        entry_points = installed(group=COMMANDS_GROUP)
    for entry_point in entry_points:
        if entry_point.name == name:
            return entry_point.load()
    raise CommandUnavailableError(
        f"no {name!r} command is installed (entry point group {COMMANDS_GROUP!r}): reinstall proximate, "
        "pip install -e '.[demo]'"
    )


def _require_demo_extra() -> None:
    from importlib.util import find_spec

    if any(find_spec(module) is None for module in DEMO_EXTRA_MODULES):
        raise CommandUnavailableError("the demo needs the demo extra: pip install 'proximate[demo]'")


def cmd_demo(args: argparse.Namespace) -> int:
    if args.quick:  # the cluster part only: generated data, no S3 server, no Prefect
        from proximate.testing.quick_demo import run_demo
    else:  # the full demo lives with the flows it runs (the core does not import Prefect)
        _require_demo_extra()
        run_demo = find_command("demo", args.entry_points)

    _terminate_on_sigterm()
    run_demo(workdir=Path(args.workdir), workers_per_region=args.workers_per_region)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    _require_demo_extra()  # the demo's data comes from its S3 server
    run_up = find_command("up", args.entry_points)  # lives with the deployments (the core does not import Prefect)
    _terminate_on_sigterm()
    run_up(
        workdir=Path(args.workdir),
        workers_per_region=args.workers_per_region,
        port=args.port,
        prefect_database=args.prefect_database,
    )
    return 0


def cmd_deploy_nightly(args: argparse.Namespace) -> int:
    deploy = find_command("deploy-nightly", args.entry_points)  # lives with the deployments (imports Prefect)
    return int(deploy(["--pool", args.pool, "--cluster", args.cluster]))


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


def cmd_sync(args: argparse.Namespace) -> int:
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


def cmd_testbed(args: argparse.Namespace) -> int:
    """``proximate testbed up|down|status``: see :mod:`proximate.testing.testbed`."""
    import json

    _require_demo_extra()  # the testbed's S3 servers are moto, as the demo's
    from proximate.testing.testbed import Testbed, TestbedError, status, teardown

    try:
        if args.testbed_command == "up":
            bed = Testbed(
                args.region or ["ecmwf", "gcp"],
                name=args.name,
                rate=args.rate,
                workers_per_region=args.workers_per_region,
                nthreads=args.nthreads,
                tls=not args.no_tls,
                no_workers_timeout=args.no_workers_timeout,
                worker_ttl=args.worker_ttl,
                file_server=args.file_server,
                workdir=args.workdir,
                die_with_parent=False,  # the testbed outlives this command, until `down`
            ).up()
            bed.control.close()
            print(bed.scheduler_address, flush=True)
            client_ns = bed.namespace("client")
            print(
                f"# testbed {bed.name}: namespaces {', '.join(bed.namespace(n) for n in bed.nodes)}; links at "
                f"{bed.rate}; state {bed.state_path}\n# a client: ip netns exec {client_ns} env "
                f"PROXIMATE_TESTBED_STATE={bed.state_path} python  (then proximate.testing.testbed.connect())\n"
                f"# stop: proximate testbed down --name {bed.name}"
                + (f" --workdir {bed.workdir}" if args.workdir else ""),
                file=sys.stderr,
            )
        elif args.testbed_command == "down":
            removed = teardown(args.name, args.workdir)
            print(f"testbed {args.name}: removed {', '.join(removed) or 'nothing (no namespaces left)'}")
        else:
            print(json.dumps(status(args.name, args.workdir), indent=2))
    except TestbedError as exc:
        print(f"proximate: error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_catalog_export_stac(args: argparse.Namespace) -> int:
    from proximate.catalog import CatalogSettings
    from proximate.catalog.settings import CATALOG_ENV
    from proximate.catalog.stac import export_stac

    # --catalog replaces only the URL: the credentials variables (PROXIMATE_CATALOG_USERNAME...) still apply.
    environ = None if args.catalog is None else {**os.environ, CATALOG_ENV: args.catalog}
    with CatalogSettings.from_env(environ).open() as catalog:
        path = export_stac(catalog, args.dir)
    print(path)
    return 0


def _exit_now(code: int) -> None:
    """End a one-shot command without the interpreter's teardown: freeing botocore's loaded models and every
    module's objects costs 50-80 ms of a short sync (measured), and nothing is left to do by then (the sync
    made its files and manifest durable and the lock goes with the process)."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proximate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    cluster = sub.add_parser("cluster", help="a local multi-region Dask cluster")
    csub = cluster.add_subparsers(dest="cluster_command", required=True)
    up = csub.add_parser("up", help="start it, print the scheduler address, run until interrupted")
    up.add_argument(
        "--region",
        action="append",
        required=True,
        metavar="NAME=ROOT",
        help="a region and the folder holding its data; repeat for each region",
    )
    up.add_argument(
        "--workers-per-region",
        type=int,
        help="workers each region starts with (default 2; with --max-workers, each region's minimum)",
    )
    up.add_argument(
        "--min-workers",
        action="append",
        default=[],
        metavar="N|REGION=N",
        help="with --max-workers: the fewest workers a region scales down to (default 1); REGION=N overrides one",
    )
    up.add_argument(
        "--max-workers",
        action="append",
        default=[],
        metavar="N|REGION=N",
        help="scale each region's workers on its own backlog up to N; REGION=N overrides one region; repeatable",
    )
    up.add_argument(
        "--scale-down-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --max-workers: how long a region must need fewer workers before one is retired",
    )
    up.add_argument(
        "--target-duration",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="with --max-workers: a region gets enough workers to clear its backlog in this time",
    )
    up.add_argument("--scale-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    up.add_argument("--threads-per-worker", type=int, default=1)
    up.add_argument("--port", type=int, default=0, help="scheduler port (0: any free port)")
    up.add_argument(
        "--dashboard",
        action="store_true",
        help="serve the Dask dashboard (and /health, /metrics) on loopback; without it no process serves HTTP",
    )
    up.add_argument(
        "--no-workers-timeout",
        type=float,
        default=60.0,
        help="seconds a task may wait for a region with no live worker before it errs",
    )
    _add_tls(up)
    up.set_defaults(func=cmd_cluster_up)

    worker = sub.add_parser("worker", help="one region's Dask worker, as an ECS task in that region runs it")
    worker.add_argument("--region", required=True)
    worker.add_argument("--root", required=True, help="the region's data root (its FSx mount)")
    worker.add_argument("--scheduler", required=True, help="scheduler address, tcp:// or tls://")
    worker.add_argument("--nthreads", type=int, default=os.cpu_count() or 1)
    worker.add_argument("--name", help="worker name (default: <region>-<host>-<pid>)")
    worker.add_argument(
        "--host", help="the address to listen on and advertise (default: this machine's address toward the scheduler)"
    )
    worker.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="accept a tcp:// scheduler off loopback: unencrypted, unauthenticated; only on a network the cluster owns",
    )
    worker.add_argument(
        "--http-address",
        default="127.0.0.1:0",
        metavar="HOST:PORT|none",
        help="where the worker serves /health and /metrics (default: loopback, any port; none: no HTTP server)",
    )
    worker.add_argument("--memory-limit", default="auto")
    worker.add_argument("--no-nanny", action="store_true")
    worker.add_argument(
        "--no-rejoin",
        action="store_true",
        help="shut down when the scheduler is lost instead of restarting to rejoin (the default, with the nanny)",
    )
    _add_tls(worker)
    worker.set_defaults(func=cmd_worker)

    sync = sub.add_parser(
        "sync",
        help="mirror an s3:// (or file://) prefix into a folder once: incremental, atomic, verified",
        description="Mirror SOURCE into DEST as proximate.sync.sync does (the nightly flow's engine). Credentials "
        "come from the environment or --profile, as for the AWS CLI. Exit status 1 when any object failed.",
    )
    sync.add_argument("source", help="s3://bucket/prefix/ or file:///path/")
    sync.add_argument("dest", help="the destination root (a region's file system)")
    sync.add_argument("--delete", action="store_true", help="remove files this sync wrote whose objects are gone")
    sync.add_argument(
        "--max-delete",
        type=int,
        metavar="N",
        help="with --delete: remove at most N files (default: refuse to remove more than half the mirror)",
    )
    sync.add_argument(
        "--delete-all", action="store_true", help="with --delete: allow any number of removals, every file included"
    )
    sync.add_argument("--endpoint-url", help="S3 endpoint (default: AWS, or AWS_ENDPOINT_URL_S3)")
    sync.add_argument("--profile", help="AWS profile for credentials")
    sync.add_argument("--anon", action="store_true", help="read a public bucket without credentials")
    sync.add_argument("--requester-pays", action="store_true", help="the bucket is requester-pays: you pay for reads")
    sync.add_argument(
        "--sse-c-key-file", metavar="FILE", help="the SSE-C key the objects are encrypted with (32 bytes, or base64)"
    )
    sync.add_argument("--concurrency", type=int, help="object reads in flight (default: the engine's, 16)")
    sync.add_argument("--no-fsync", action="store_true", help="do not make files durable before naming them")
    sync.add_argument("--json", action="store_true", help="print the SyncResult as JSON")
    sync.set_defaults(func=cmd_sync, one_shot=True)

    testbed = sub.add_parser(
        "testbed",
        help="regions as network namespaces on this machine, joined by shaped links (Linux, root)",
        description="Build, inspect or remove a multi-region testbed: a network namespace per region and one for "
        "the client, veth links shaped with tc tbf, an S3 server per region reachable only inside it, the "
        "scheduler in the client namespace and `proximate worker`s in each region, TLS by default.",
    )
    tsub = testbed.add_subparsers(dest="testbed_command", required=True)
    tup = tsub.add_parser("up", help="create it and start every process; prints the scheduler address")
    tup.add_argument("--region", action="append", help="a region name; repeat (default: ecmwf and gcp)")
    tup.add_argument("--name", help="prefix of its namespaces and devices (default: random pxt...)")
    tup.add_argument("--rate", default="100mbit", help="tc rate of every link, both directions (default 100mbit)")
    tup.add_argument("--workers-per-region", type=int, default=1)
    tup.add_argument("--nthreads", type=int, default=1, help="threads per worker")
    tup.add_argument("--no-tls", action="store_true", help="plaintext tcp:// (TLS is the default)")
    tup.add_argument("--no-workers-timeout", type=float, default=60.0)
    tup.add_argument("--worker-ttl", type=float, default=30.0, help="seconds before a silent worker is dropped")
    tup.add_argument("--file-server", action="store_true", help="serve each region's root over HTTP on its address")
    tup.add_argument(
        "--workdir", help="state, logs, certificates and region roots (default /tmp/proximate-testbed/NAME)"
    )
    for name, text in (("down", "stop its processes by PID and delete its namespaces"), ("status", "print as JSON")):
        p = tsub.add_parser(name, help=text)
        p.add_argument("--name", required=True)
        p.add_argument("--workdir", help="as given to up")
    testbed.set_defaults(func=cmd_testbed)
    catalog = sub.add_parser("catalog", help="the dataset catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    export = catalog_sub.add_parser(
        "export-stac",
        help="write the catalog as a static STAC catalog (one collection per region) into DIR",
        description="Every record as a STAC Item (footprint, time span, the file as region:path, status and reason), "
        "one Collection per region, under DIR/catalog.json; the catalog is PROXIMATE_CATALOG's unless --catalog.",
    )
    export.add_argument("dir", help="the directory to write (created; existing files of the same names replaced)")
    export.add_argument("--catalog", help="a SQLite file or an OpenSearch URL (default: PROXIMATE_CATALOG)")
    export.set_defaults(func=cmd_catalog_export_stac)

    demo = sub.add_parser("demo", help="the end-to-end demo on the embedded defaults")
    demo.add_argument("--workdir", default="proximate-demo", help="where regions' data and results go")
    demo.add_argument("--workers-per-region", type=int, default=2)
    demo.add_argument("--quick", action="store_true", help="only the two-region cluster part, without Prefect")
    demo.set_defaults(func=cmd_demo)

    up = sub.add_parser(
        "up",
        help="the embedded default kept running for the Prefect UI: server, cluster, work pool, worker, deployments",
        description="Start a Prefect server, the demo's data and a two-region Dask cluster, save the blocks, apply "
        "the deployments and start a worker; print the UI address and what to click; Ctrl-C stops all of it.",
    )
    up.add_argument("--workdir", default="proximate-demo", help="where data, catalog, Prefect state and logs go")
    up.add_argument("--workers-per-region", type=int, default=2)
    up.add_argument("--port", type=int, default=0, help="the Prefect server's port on 127.0.0.1 (0: any free port)")
    up.add_argument(
        "--prefect-database",
        help="the Prefect server's database, postgresql+asyncpg://USER:PASS@HOST:PORT/DB (default: SQLite)",
    )
    up.set_defaults(func=cmd_up)

    autoscale = sub.add_parser(
        "autoscale",
        help="scale each region's ECS service of workers on its own backlog (production; runs until SIGTERM)",
    )
    autoscale.add_argument("--scheduler", required=True, help="the multi-region scheduler, tls://host:port")
    autoscale.add_argument(
        "--ecs-service",
        action="append",
        default=[],
        metavar="REGION=AWS_REGION:CLUSTER/SERVICE",
        help="the ECS service running a region's workers (repeat per region)",
    )
    autoscale.add_argument("--min-workers", action="append", default=[], metavar="N|REGION=N",
                           help="the fewest workers a region scales down to (default 1)")  # fmt: skip
    autoscale.add_argument("--max-workers", action="append", default=[], metavar="N|REGION=N",
                           help="the most workers a region scales up to")  # fmt: skip
    autoscale.add_argument("--scale-down-after", type=float, default=10.0,
                           help="seconds a region must need fewer workers before one is retired")  # fmt: skip
    autoscale.add_argument("--target-duration", type=float, default=5.0,
                           help="a region gets enough workers to clear its backlog in this many seconds")  # fmt: skip
    autoscale.add_argument("--scale-interval", type=float, default=1.0, help="seconds between decisions")
    autoscale.add_argument("--threads-per-worker", type=int, default=1, help="threads of each worker task")
    autoscale.add_argument("--ecs-endpoint-url", help="an ECS endpoint other than AWS's (a VPC endpoint)")
    _add_tls(autoscale)
    autoscale.set_defaults(func=cmd_autoscale)

    nightly = sub.add_parser(
        "deploy-nightly",
        help="one scheduled nightly deployment per saved Region block with a nightly_cron (and none without)",
    )
    nightly.add_argument("--pool", default="proximate-local", help="the work pool the deployments run on")
    nightly.add_argument("--cluster", default="proximate-cluster", help="the RegionalCluster block the runs use")
    nightly.set_defaults(func=cmd_deploy_nightly)
    return parser


def main(argv: Sequence[str] | None = None, entry_points: Iterable[EntryPoint] | None = None) -> int:
    """Run one command.

    Args:
        argv: the arguments (default: the process's).
        entry_points: where commands living outside the core are found (default: the installed ones).

    Returns:
        The exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.entry_points = entry_points
    try:
        code = int(args.func(args) or 0)
    except ProximateError as exc:  # expected: bad input, or a part that failed; the message names it
        print(f"proximate: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except Exception:  # a bug: the traceback says where, rather than passing for bad input
        traceback.print_exc()
        print(f"proximate: internal error in {args.command!r} (a bug; the traceback above says where)", file=sys.stderr)
        code = 1
    if argv is None and getattr(args, "one_shot", False):  # this process is the command (the console script)
        _exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
