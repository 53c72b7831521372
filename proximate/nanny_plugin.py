"""Nanny preload (``dask worker --preload-nanny proximate.nanny_plugin``): a worker that lost its scheduler rejoins.

When a Dask worker's stream to the scheduler breaks (a cut link, a restarted scheduler), the worker closes and
asks its nanny to close too (``close_gracefully``), so the region stays without that worker until someone
restarts it. Dask's nanny already restarts a worker process that exits while the nanny is running; this preload
keeps the nanny running in exactly that case, by answering the worker's ``close_gracefully`` request with a log
line instead of closing, when the reason is a lost scheduler. The nanny then restarts the worker (Dask's own
restart), and the new worker keeps trying to register with the scheduler: each attempt waits at most Dask's
connect timeout (``distributed.comm.timeouts.connect``, 30 s) with Dask's jittered exponential back-off inside
it, so once the path to the scheduler returns the worker serves its region again within about one connect
timeout, without a person restarting it.

Every other reason closes the nanny as before: a worker the scheduler retires or removes
(``scheduler-remove-worker``, ``scheduler-close-worker``), a cluster shutdown (``scheduler-close``), a worker
that refuses to serve its region, SIGTERM. A worker the scheduler dropped while its stream still lived (its
heartbeats were late by more than ``distributed.scheduler.worker-ttl``) is told to close and does not rejoin:
keep ``worker-ttl`` (default 5 minutes) above ``distributed.comm.timeouts.tcp`` (default 30 s), so a cut link
breaks the stream first.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("proximate.nanny")

#: ``Worker.close`` reasons that mean "the scheduler is gone", not "the scheduler wants this worker gone".
LOST_SCHEDULER_REASONS = frozenset({"worker-handle-scheduler-connection-broken"})


def keep_nanny_on_lost_scheduler(nanny: Any) -> None:
    """Replace ``nanny``'s ``close_gracefully`` handler (this nanny's only) with one that ignores a lost scheduler.

    Dask's handler marks the nanny ``closing_gracefully``, after which it does not restart the worker. The
    handler table is per instance (``Server.handlers``), so no class is changed.
    """
    original = nanny.handlers["close_gracefully"]

    def close_gracefully(reason: str = "nanny-close-gracefully") -> Any:
        if reason in LOST_SCHEDULER_REASONS and nanny.status.name == "running":
            nanny.proximate_rejoins = getattr(nanny, "proximate_rejoins", 0) + 1
            logger.warning(
                "worker %s lost its scheduler %s (%s): restarting it to rejoin (rejoin %d); it retries "
                "connecting until the scheduler answers, each attempt bounded by the connect timeout",
                nanny.worker_address,
                nanny.scheduler_addr,
                reason,
                nanny.proximate_rejoins,
            )
            return None
        return original(reason=reason)

    nanny.handlers["close_gracefully"] = close_gracefully


async def dask_setup(nanny: Any) -> None:
    """Preload hook: keep the nanny (and so restart its worker) when the worker lost the scheduler."""
    keep_nanny_on_lost_scheduler(nanny)
