"""``proximate testbed up|down|status``: regions as network namespaces joined by shaped links (Linux, root)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proximate import config
from proximate.cli.common import require_demo_extra


def register(subparsers: Any) -> None:
    """Add ``testbed`` to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    testbed = subparsers.add_parser(
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
    tup.add_argument("--no-workers-timeout", type=float, default=float(config.default("scheduler.no-workers-timeout")))
    tup.add_argument("--worker-ttl", type=float, default=30.0, help="seconds before a silent worker is dropped")
    tup.add_argument("--file-server", action="store_true", help="serve each region's root over HTTP on its address")
    tup.add_argument(
        "--workdir", help="state, logs, certificates and region roots (default /tmp/proximate-testbed/NAME)"
    )
    for name, text in (("down", "stop its processes by PID and delete its namespaces"), ("status", "print as JSON")):
        p = tsub.add_parser(name, help=text)
        p.add_argument("--name", required=True)
        p.add_argument("--workdir", help="as given to up")
    testbed.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, remove or describe a testbed: see :mod:`proximate.testing.testbed`.

    Args:
        args: the parsed ``testbed`` arguments.

    Returns:
        0, or 1 when the testbed refused (the message on stderr).
    """
    import json

    require_demo_extra()  # the testbed's S3 servers are moto, as the demo's
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
                f"{config.env_var('testbed.state')}={bed.state_path} python"
                "  (then proximate.testing.testbed.connect())\n"
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
