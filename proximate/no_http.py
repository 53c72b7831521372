"""Preload (``dask scheduler|worker --preload proximate.no_http``): close the node's HTTP server.

Dask starts an HTTP server in every scheduler and worker, even with ``--no-dashboard`` (it serves ``/health``,
``/metrics``, worker lists and, on a worker, ``/sitemap.json`` and profiles), and by default on every interface.
No option of Dask's turns it off, so our commands start it on loopback (``--dashboard-address HOST:0``) and this
preload closes it when the node starts, before a worker registers (the scheduler then learns no HTTP port) and
before a scheduler serves its first client. ``--no-dashboard`` thus means no HTTP server at all.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("proximate.no_http")


def close_http_server(node: Any) -> bool:
    """Stop ``node``'s HTTP server (its listening sockets close) and drop it from the services it advertises.

    Args:
        node: a Dask ``Scheduler`` or ``Worker`` (any ``ServerNode``).

    Returns:
        True if a server was running and is now closed.

    Examples:
        >>> class Node:
        ...     services = {}
        >>> close_http_server(Node())
        False
    """
    server = node.services.pop("dashboard", None) or getattr(node, "http_server", None)
    if server is None:
        return False
    server.stop()
    logger.info("HTTP server closed (no dashboard, /health or /metrics): %s", type(node).__name__)
    return True


async def dask_setup(node: Any) -> None:
    """Preload hook: close the HTTP server of the scheduler or worker loading this module."""
    close_http_server(node)
