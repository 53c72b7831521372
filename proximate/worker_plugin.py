"""Worker preload (``dask worker --preload proximate.worker_plugin``): check the worker's region before it joins,
then install the worker plugin ``SecedeWhileClientsBlock``.

A worker that would advertise a region it cannot serve (no root, or a resource that does not match) must not
join: it would accept pinned tasks and fail them all.

``SecedeWhileClientsBlock`` changes process-wide state: while it is installed, ``distributed.Client.__enter__``
and ``__exit__`` of this process are wrapped so that a task opening a synchronous client secedes (see the
class). distributed has no hook for "a task opened a client", hence the patch; the plugin owns it, putting it in
place on setup and the original methods back on teardown (when the worker closes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from distributed import Client, WorkerPlugin, rejoin, secede
from distributed.worker import thread_state

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
    return getattr(thread_state, "key", None) is not None and getattr(thread_state, "actor", False) is False


class SecedeWhileClientsBlock(WorkerPlugin):
    """A task that opens a synchronous Client (prefect-dask's ``get_dask_client()`` does) waits on work that may
    need its own thread: with every thread of a region so occupied, the region deadlocks. While this plugin is
    installed, such a task secedes (frees its thread, as ``worker_client()`` does) while the client is open, and
    rejoins after.

    It does so by wrapping ``distributed.Client.__enter__`` and ``__exit__`` of the whole process (distributed
    has no hook for a client opened in a task): ``setup`` puts the wrappers in place, ``teardown`` puts the
    original methods back. Both are idempotent, and with several workers in one process (one plugin each) the
    originals come back when the last of them tears down.
    """

    name = "proximate-secede-while-clients-block"
    # The plugins that have the patch in place: there is one Client class per process, whatever the workers.
    _owners: ClassVar[set[SecedeWhileClientsBlock]] = set()
    _originals: ClassVar[tuple[Callable[..., Any], Callable[..., Any]] | None] = None

    def setup(self, worker: Any = None) -> None:
        """Wrap ``Client.__enter__``/``__exit__`` unless already wrapped.

        Args:
            worker: the worker installing the plugin (unused: the patch is process-wide).
        """
        cls = SecedeWhileClientsBlock
        if cls._originals is None:
            cls._originals = (Client.__enter__, Client.__exit__)
            Client.__enter__, Client.__exit__ = _seceding(*cls._originals)  # type: ignore[method-assign]
        cls._owners.add(self)

    def teardown(self, worker: Any = None) -> None:
        """Put the original ``Client.__enter__``/``__exit__`` back once no installed plugin is left.

        Args:
            worker: the worker removing the plugin (unused: the patch is process-wide).
        """
        cls = SecedeWhileClientsBlock
        cls._owners.discard(self)
        if not cls._owners and cls._originals is not None:
            Client.__enter__, Client.__exit__ = cls._originals  # type: ignore[method-assign]
            cls._originals = None


def _seceding(enter: Callable[..., Any], exit_: Callable[..., Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``Client.__enter__``/``__exit__`` that secede and rejoin around a synchronous client opened in a task."""

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

    return __enter__, __exit__


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
    await worker.plugin_add(SecedeWhileClientsBlock(), catch_errors=False)
