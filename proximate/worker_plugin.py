"""Worker preload (``dask worker --preload proximate.worker_plugin``): check the worker's region before it joins.

A worker that would advertise a region it cannot serve (no root, or a resource that does not match) must not
join: it would accept pinned tasks and fail them all.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from proximate.regions import REGION_ENV, ROOT_ENV, pool_resource, validate_region_name

logger = logging.getLogger("proximate.worker")


def check_worker_region(region: str | None, root: str | None, resources: dict[str, float]) -> str:
    """Pure check, for the preload and for tests: returns the region or raises naming what is wrong."""
    if not region:
        raise RuntimeError(f"proximate worker started without {REGION_ENV}; use `proximate worker --region NAME`")
    validate_region_name(region)
    if not root or not Path(root).is_dir():
        raise RuntimeError(f"root directory of region {region!r} does not exist: {root!r} ({ROOT_ENV})")
    expected = pool_resource(region)
    if expected not in resources:
        raise RuntimeError(f"worker of region {region!r} lacks resource {expected!r} (has {sorted(resources)})")
    others = sorted(r for r in resources if r.startswith("pool-") and r != expected)
    if others:
        raise RuntimeError(f"worker of region {region!r} also claims other regions: {others}")
    return region


def _in_task_thread() -> bool:
    from distributed.worker import thread_state

    return getattr(thread_state, "key", None) is not None and getattr(thread_state, "actor", False) is False


def secede_while_clients_block() -> None:
    """A task that opens a synchronous Client (prefect-dask's ``get_dask_client()`` does) waits on work that may
    need its own thread: with every thread of a region so occupied, the region deadlocks. Make such a task
    secede (free its thread, as ``worker_client()`` does) while the client is open, and rejoin after."""
    from distributed import Client, rejoin, secede

    if getattr(Client, "_proximate_secedes", False):
        return
    enter, exit_ = Client.__enter__, Client.__exit__

    def __enter__(self: Any) -> Any:
        result = enter(self)
        if not self.asynchronous and _in_task_thread() and not getattr(self, "_proximate_seceded", False):
            secede()
            self._proximate_seceded = True
        return result

    def __exit__(self: Any, *exc: Any) -> Any:
        try:
            return exit_(self, *exc)
        finally:
            if getattr(self, "_proximate_seceded", False):
                self._proximate_seceded = False
                rejoin()

    Client.__enter__ = __enter__  # type: ignore[method-assign]
    Client.__exit__ = __exit__  # type: ignore[method-assign]
    Client._proximate_secedes = True  # type: ignore[attr-defined]


async def dask_setup(worker: Any) -> None:
    try:
        region = check_worker_region(
            os.environ.get(REGION_ENV), os.environ.get(ROOT_ENV), dict(worker.state.total_resources)
        )
    except RuntimeError as exc:
        # Dask only logs a failing preload; a worker that cannot serve its region must not stay.
        logger.critical("refusing to serve: %s", exc)
        await worker.close(nanny=True, reason=f"proximate: {exc}")
        raise
    worker.proximate_region = region
    secede_while_clients_block()
