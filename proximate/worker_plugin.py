"""Worker preload (``dask worker --preload proximate.worker_plugin``): check the worker's region before it joins,
then install the worker plugins ``SecedeWhileClientsBlock``, ``PeerLinkWatch``, ``P2PSendLog`` and
``TransferRequesters``.

A worker that would advertise a region it cannot serve (no root, or a resource that does not match) must not
join: it would accept pinned tasks and fail them all.

``SecedeWhileClientsBlock`` changes process-wide state: while it is installed, ``distributed.Client.__enter__``
and ``__exit__`` of this process are wrapped so that a task opening a synchronous client secedes (see the
class). distributed has no hook for "a task opened a client", hence the patch; the plugin owns it, putting it in
place on setup and the original methods back on teardown (when the worker closes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from distributed import Client, WorkerPlugin, rejoin, secede
from distributed.worker import thread_state
from distributed.worker_state_machine import GatherDepNetworkFailureEvent

from proximate import config
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


class _ProcessPatch:
    """Attributes of a class replaced for the whole process while at least one owner holds the patch.

    distributed has no hook for several things proximate needs to see (a client opened in a task, a shard sent, a
    connection's handshake), so plugins wrap class attributes. A class is shared by every worker of a process
    while each worker installs its own plugin, hence one record per patch: the first ``hold`` puts the wrappers
    in place, the last ``release`` puts the originals back (an attribute the class only inherited is deleted
    again), and both are idempotent per owner.

    Args:
        target: returns the class to patch (called at the first hold, so an import can wait until needed).
        names: the attributes replaced.
        wrap: given the owners' mapping (owner -> the value it held with, alive for the patch's life) and the
            original attributes, returns the replacements, in the order of ``names``.
    """

    def __init__(
        self,
        target: Callable[[], type],
        names: tuple[str, ...],
        wrap: Callable[..., tuple[Callable[..., Any], ...]],
    ) -> None:
        self._target = target
        self._names = names
        self._wrap = wrap
        self.owners: dict[Any, Any] = {}
        # (class, {name: what the class itself held, None where it only inherited}) while the patch is in place;
        # the raw entry, so that a staticmethod or classmethod goes back as one.
        self._saved: tuple[type, dict[str, Any]] | None = None

    @property
    def in_place(self) -> bool:
        return self._saved is not None

    def hold(self, owner: Any, value: Any = None) -> None:
        """Record ``owner`` (with ``value``), putting the wrappers in place unless they already are."""
        self.owners[owner] = value
        if self._saved is None:
            cls = self._target()
            saved = {name: vars(cls).get(name) for name in self._names}
            replacements = self._wrap(self.owners, *(getattr(cls, name) for name in self._names))
            for name, replacement in zip(self._names, replacements, strict=True):
                setattr(cls, name, replacement)
            self._saved = (cls, saved)

    def release(self, owner: Any) -> None:
        """Forget ``owner``; once no owner is left, put the originals back."""
        self.owners.pop(owner, None)
        if not self.owners and self._saved is not None:
            cls, saved = self._saved
            for name, original in saved.items():
                if original is None:
                    delattr(cls, name)
                else:
                    setattr(cls, name, original)
            self._saved = None


def _shuffle_run() -> type:
    from distributed.shuffle._core import ShuffleRun

    return ShuffleRun


def _comm() -> type:
    from distributed.comm.core import Comm

    return Comm


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
    # One Client class per process, whatever the workers: the plugins share one patch.
    _patch: ClassVar[_ProcessPatch] = _ProcessPatch(
        lambda: Client, ("__enter__", "__exit__"), lambda _owners, enter, exit_: _seceding(enter, exit_)
    )

    def setup(self, worker: Any = None) -> None:
        """Wrap ``Client.__enter__``/``__exit__`` unless already wrapped.

        Args:
            worker: the worker installing the plugin (unused: the patch is process-wide).
        """
        self._patch.hold(self)

    def teardown(self, worker: Any = None) -> None:
        """Put the original ``Client.__enter__``/``__exit__`` back once no installed plugin is left.

        Args:
            worker: the worker removing the plugin (unused: the patch is process-wide).
        """
        self._patch.release(self)


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


#: Event topic on which workers report a peer they cannot fetch from, and its recovery (the scheduler's router
#: listens, see ``scheduler_plugin.RegionRouter.log_event``).
LINK_TOPIC = "proximate-peer-link"


class PeerLinkWatch(WorkerPlugin):
    """Tells the scheduler which peers this worker cannot fetch data from, and since when.

    Dask treats a failed fetch as if the peer had died: it forgets the peer's copies and asks the scheduler
    again, which names the same peer, forever (the scheduler hears nothing: the peer still heartbeats). Only
    the fetching worker knows the path is broken, so it reports each failure, with how long the peer has been
    failing, as an event on :data:`LINK_TOPIC`; the scheduler decides when that is long enough to fail the
    task (``RegionLinkError``). The first success after failures is reported too.

    Dask has no hook for a finished fetch, so ``setup`` wraps this worker's own ``gather_dep`` (the coroutine
    every fetch runs, whose result says success or network failure); ``teardown`` removes the wrapper.
    """

    name = "proximate-peer-link-watch"

    def __init__(self) -> None:
        #: Peer address -> monotonic time the first of its consecutive failed fetches started.
        self.failing: dict[str, float] = {}
        self.worker: Any = None

    def setup(self, worker: Any = None) -> None:
        """Wrap ``worker.gather_dep`` (an instance attribute shadowing the method; the class is untouched)."""
        self.worker = worker
        original = type(worker).gather_dep.__get__(worker)

        async def gather_dep(peer: str, *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            event = await original(peer, *args, **kwargs)
            self.observed(peer, started, isinstance(event, GatherDepNetworkFailureEvent))
            return event

        worker.gather_dep = gather_dep

    def teardown(self, worker: Any = None) -> None:
        if worker is not None and "gather_dep" in vars(worker):
            del worker.gather_dep

    def observed(self, peer: str, started: float, failed: bool) -> None:
        """Record one finished fetch from ``peer`` (``started`` on the monotonic clock) and report a change."""
        if failed:
            since = self.failing.setdefault(peer, started)
            self._report(peer, "failing", time.monotonic() - since)
        elif self.failing.pop(peer, None) is not None:
            self._report(peer, "ok", 0.0)

    def _report(self, peer: str, status: str, seconds: float) -> None:
        # Durations, not timestamps: the scheduler's clock need not agree with ours.
        msg = {"worker": self.worker.address, "peer": peer, "status": status, "seconds": seconds}
        if status == "failing":
            logger.warning("cannot fetch data from %s for %.0f s (reported to the scheduler)", peer, seconds)
        self.worker.log_event(LINK_TOPIC, msg)


class P2PSendLog(WorkerPlugin):
    """Logs what this worker's P2P shuffles send to each peer in its ``transfer_outgoing_log``, where the locality
    report reads every other transfer.

    A P2P shuffle (``shuffle_method="p2p"``: merges, ``set_index``, ``shuffle``) moves its shards between workers
    with its own RPC (``shuffle_receive``), which Dask does not log as a transfer: without this, the bytes a
    shuffle moves between regions, most of what it moves, would be missing from the report. Each successful send
    is logged as Dask logs a transfer (``who``, ``total``, ``keys``), its keys naming the shuffle
    (``shuffle-transfer-<id>``) and ``"p2p": True`` marking it.

    Dask has no hook for a shard sent, so ``setup`` wraps ``ShuffleRun._send`` of the whole process (one shuffle
    run per worker; the wrapper finds the worker by the run's local address); ``teardown`` puts the original back
    when the last worker of the process removes the plugin.
    """

    name = "proximate-p2p-send-log"
    #: Owner: the worker's address, held with the worker (the process-wide wrapper finds the sender by it).
    _patch: ClassVar[_ProcessPatch] = _ProcessPatch(
        _shuffle_run, ("_send",), lambda workers, send: (_logging_send(send, workers),)
    )

    def setup(self, worker: Any = None) -> None:
        self._patch.hold(worker.address, worker)

    def teardown(self, worker: Any = None) -> None:
        if worker is not None:
            self._patch.release(worker.address)


def _logging_send(send: Callable[..., Any], workers: dict[str, Any]) -> Callable[..., Any]:
    """``ShuffleRun._send`` that logs each send the peer acknowledged in the sending worker's transfer log."""
    from distributed.sizeof import sizeof

    async def _send(self: Any, address: str, shards: Any) -> Any:
        start = time.time()
        response = await send(self, address, shards)
        worker = workers.get(self.local_address)
        if worker is not None and isinstance(response, dict) and response.get("status") == "OK":
            # A pickled blob (small shards) is sent as is; a list of shards as their buffers.
            nbytes = len(shards) if isinstance(shards, (bytes, bytearray)) else int(sizeof(shards))
            stop = time.time()
            worker.transfer_outgoing_log.append(
                {
                    "start": start,
                    "stop": stop,
                    "middle": (start + stop) / 2,
                    "duration": max(stop - start, 0.001),
                    "who": address,
                    "keys": {f"shuffle-transfer-{self.id}": nbytes},
                    "total": nbytes,
                    "compressed": 0,
                    "bandwidth": nbytes / max(stop - start, 0.001),
                    "p2p": True,
                }
            )
        return response

    return _send


#: Key this process adds to the handshake of every connection it opens (its region), and the key of a
#: ``transfer_outgoing_log`` entry naming the region of the process that asked for the data.
REGION_HANDSHAKE_KEY = "proximate-region"
REQUESTER_KEY = "proximate-requester-region"


class TransferRequesters(WorkerPlugin):
    """Names the region of whoever asked for each piece of data this worker sent.

    A worker logs each transfer with the requesting *worker* (``who``), but a client's request has ``who`` None:
    a task's own client gathering from a worker of its own region (a table flow's region task reading its table
    plan) and a client outside every region look the same, and the locality report would count both as leaving
    the region. The peer's address does not tell them apart either (a local cluster is one host). So each
    worker process says its region in the handshake of every connection it opens (``Comm.handshake_info`` of
    the process, wrapped while a plugin is installed; a process with workers of several regions says none), and
    this worker's ``get_data`` handler (wrapped, this instance's only) copies the requester's region from the
    connection's handshake into the log entry it just appended, as ``REQUESTER_KEY``. A requester without the
    key (a client process, the scheduler gathering for a client) stays outside every region.

    distributed has no hook for either, hence the wrappers; ``teardown`` removes them (the class method once the
    last plugin of the process is gone).
    """

    name = "proximate-transfer-requesters"
    #: Owner: an installed plugin, held with its worker's region (the process says a region only while all agree).
    _patch: ClassVar[_ProcessPatch] = _ProcessPatch(
        _comm, ("handshake_info",), lambda regions, info: (_handshake_with_region(info, regions),)
    )

    def setup(self, worker: Any = None) -> None:
        """Wrap ``Comm.handshake_info`` (once per process) and this worker's ``get_data`` handler."""
        self._patch.hold(self, getattr(worker, "proximate_region", None))
        original = worker.handlers["get_data"]
        log = worker.transfer_outgoing_log

        async def get_data(comm: Any, keys: Any, who: str | None = None, serializers: Any = None) -> Any:
            before = log[-1] if log else None
            result = await original(comm, keys=keys, who=who, serializers=serializers)
            # The entry is appended just before the handler returns, with no await in between: the newest
            # entry, if new, is this request's.
            if log and log[-1] is not before:
                log[-1][REQUESTER_KEY] = (getattr(comm, "remote_info", None) or {}).get(REGION_HANDSHAKE_KEY)
            return result

        get_data.proximate_original = original  # type: ignore[attr-defined]
        worker.handlers["get_data"] = get_data

    def teardown(self, worker: Any = None) -> None:
        """Put this worker's ``get_data`` back, and ``Comm.handshake_info`` once no plugin is left."""
        self._patch.release(self)
        handler = worker.handlers.get("get_data") if worker is not None else None
        if handler is not None and hasattr(handler, "proximate_original"):
            worker.handlers["get_data"] = handler.proximate_original


def _handshake_with_region(
    handshake_info: Callable[..., dict[str, Any]], regions: dict[Any, str | None]
) -> Callable[..., dict[str, Any]]:
    """``Comm.handshake_info`` adding this process's region, when every installed plugin names the same one."""

    def wrapped(comm: Any) -> dict[str, Any]:
        info = handshake_info(comm)
        named = set(regions.values())
        if len(named) == 1 and None not in named:
            info[REGION_HANDSHAKE_KEY] = next(iter(named))
        return info

    return wrapped


async def dask_setup(worker: Any) -> None:
    try:
        region = check_worker_region(
            config.get_str("worker.region"), config.get_str("worker.root"), dict(worker.state.total_resources)
        )
    except RuntimeError as exc:
        # Dask only logs a failing preload; a worker that cannot serve its region must not stay.
        logger.critical("refusing to serve: %s", exc)
        await worker.close(nanny=True, reason=f"proximate: {exc}")
        raise
    worker.proximate_region = region
    await worker.plugin_add(SecedeWhileClientsBlock(), catch_errors=False)
    await worker.plugin_add(PeerLinkWatch(), catch_errors=False)
    await worker.plugin_add(P2PSendLog(), catch_errors=False)
    await worker.plugin_add(TransferRequesters(), catch_errors=False)
