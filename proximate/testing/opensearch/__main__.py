"""``python -m proximate.testing.opensearch [--port P] [--data DIR]``: run a single OpenSearch node on 127.0.0.1.

Prints the node's URL on a line of its own once the cluster answers green or yellow, then runs until SIGTERM or
Ctrl-C, and removes everything it wrote except ``--data``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from proximate.testing.opensearch.build import NodeBuildError, build_node, opensearch_version
from proximate.testing.opensearch.node import DEFAULT_HEAP, DEFAULT_STARTUP_TIMEOUT, NodeStartError, OpenSearchNode


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGTERM/SIGINT.

    Args:
        argv: The command line (``sys.argv[1:]`` when ``None``).

    Returns:
        0 after a requested stop; 1 if the node could not be built or started, or died on its own.

    Examples:
        $ python -m proximate.testing.opensearch --port 9200
        http://127.0.0.1:9200
    """
    ap = argparse.ArgumentParser(prog="python -m proximate.testing.opensearch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    ap.add_argument("--data", default=None, help="keep the indices in this directory (default: nothing is kept)")
    ap.add_argument("--heap", default=DEFAULT_HEAP, help=f"JVM maximum heap (default {DEFAULT_HEAP})")
    ap.add_argument("--startup-timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT, help="seconds")
    ap.add_argument("--build-only", action="store_true", help="resolve the jars and compile the node, then exit")
    args = ap.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.build_only:
            print(build_node().directory, flush=True)
            return 0
        node = OpenSearchNode(args.port, args.data, heap=args.heap, startup_timeout=args.startup_timeout)
        try:
            print(f"starting OpenSearch {opensearch_version()} ...", file=sys.stderr, flush=True)
            print(node.start(), flush=True)
            # Whoever supervises this launcher can stop the JVM (its own session) by PID should the launcher die.
            print(f"OpenSearch node pid {node.pid}, log {node.log_path}", file=sys.stderr, flush=True)
            # Wake now and then to notice a node that died on its own (the JVM's exit is no signal to us).
            while not stop.wait(1.0):
                if node.pid is None:
                    print(f"the OpenSearch node exited on its own; its log:\n{node.log_tail()}", file=sys.stderr)
                    return 1
            return 0
        finally:
            node.close()
    except (NodeBuildError, NodeStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
