"""The graph walk behind :func:`plan`: each pinned task keeps its region, each read runs where its file is, every
derived task is placed by the router's rule on predicted sizes, and shuffles between regions are sized.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from proximate.datasets import RegionPath
from proximate.egress.plans import Crossing, EgressPlan
from proximate.locality_report import CLIENT, key_name
from proximate.placement import InRegion, choose_pool, find_in_spec
from proximate.regions import POOL_PREFIX, region_of_resource, validate_region_name


class _LayerInfo:
    """What a layer tells about each of its tasks: the region its annotations pin them to, their chunk sizes."""

    __slots__ = ("chunks", "itemsize", "region", "resources", "uniform_bytes")

    def __init__(self, layer: Any) -> None:
        self.resources = (layer.annotations or {}).get("resources")
        self.region = None if callable(self.resources) else _pinned_region(self.resources)
        info = getattr(layer, "collection_annotations", None) or {}
        self.chunks = info.get("chunks")
        try:
            self.itemsize = np.dtype(info["dtype"]).itemsize if info.get("dtype") is not None else None
        except TypeError:
            self.itemsize = None
        # Most arrays have chunks of one size along each axis: then every task's size is the same, computed once
        # (a 100,000-task plan spent a sixth of its time multiplying chunk shapes).
        self.uniform_bytes: int | None = None
        if self.chunks is not None and self.itemsize is not None:
            with contextlib.suppress(TypeError, ValueError):
                if all(len(set(axis)) == 1 for axis in self.chunks):
                    self.uniform_bytes = self.itemsize * math.prod(axis[0] for axis in self.chunks)

    def region_of(self, key: Any) -> str | None:
        """The region ``key`` is pinned to, if any."""
        if callable(self.resources):  # dask.annotate with a function of the key
            return _pinned_region(self.resources(key))
        return self.region

    def bytes_of(self, key: Any) -> int | None:
        """Shape times item size of the chunk ``key`` names, from the array that made the layer; None if unknown."""
        chunks = self.chunks
        if chunks is None or self.itemsize is None or not isinstance(key, tuple) or len(key) != len(chunks) + 1:
            return None
        if self.uniform_bytes is not None:
            return self.uniform_bytes
        try:
            return self.itemsize * math.prod(chunks[d][i] for d, i in enumerate(key[1:]))
        except (IndexError, TypeError):
            return None


def _pinned_region(resources: Any) -> str | None:
    for resource in resources or ():
        if str(resource).startswith(POOL_PREFIX):
            return region_of_resource(resource)
    return None


def _graph_and_keys(collections: tuple[Any, ...]) -> tuple[Any, list[Any]]:
    from dask.base import unpack_collections
    from dask.core import flatten
    from dask.highlevelgraph import HighLevelGraph

    collections, _ = unpack_collections(*collections)
    graphs, keys = [], []
    for obj in collections:
        graph = obj.__dask_graph__()
        if not isinstance(graph, HighLevelGraph):
            graph = HighLevelGraph.from_collections(str(id(graph)), dict(graph))
        graphs.append(graph)
        keys.extend(flatten(obj.__dask_keys__()))
    return HighLevelGraph.merge(*graphs), keys


def _read_region(key: Any, found: Any) -> str | None:
    """The region whose files a task reads (rule 1, as :func:`proximate.placement.regions_read` finds it), from
    what :func:`proximate.placement.find_in_spec` found in the task; None if it reads none.

    Raises:
        CrossRegionReadError: The task reads files of several regions: no region can run it.
    """
    regions = {where.region for where in found}
    if len(regions) > 1:
        from proximate.errors import CrossRegionReadError

        raise CrossRegionReadError(key_name(key).rsplit("-", 1)[0], tuple(sorted(regions)), str(key))
    return next(iter(regions), None)


def _read_size(task: Any, declared: str = "read_bytes") -> int | None:
    """Bytes a read task will read, when its first argument declares them before reading (``read_bytes()``:
    a :class:`proximate.tables.TablePart`, sized from its Parquet row group's column chunks); with
    ``declared="memory_bytes"``, what its rows will take in memory."""
    if isinstance(task, tuple) and task and callable(task[0]):  # a legacy task: (function, *args)
        args: Any = task[1:]
    else:
        args = getattr(task, "args", None)
    if not args:
        return None
    read_bytes = getattr(args[0], declared, None)
    if not callable(read_bytes):
        return None
    columns = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else None
    return read_bytes(columns)


def _needed_by_layer(graph: Any, outputs: list[Any]) -> list[tuple[str, dict[Any, Any]]]:
    """The tasks the outputs need, layer by layer (inputs' layers first), each with its dependencies.

    Each layer culls itself as :meth:`dask.highlevelgraph.HighLevelGraph.cull` asks it to, which for an array's
    Blockwise layer derives the dependencies from its index pattern without building a task: the plan never
    materialises the graph (that is most of the cost of computing it, and the scheduler does it again anyway).
    """
    layers = graph.layers
    all_ext_keys: Any = (
        graph.get_all_external_keys() if any(layer.has_legacy_tasks for layer in layers.values()) else set()
    )
    wanted = set(outputs)
    needed: list[tuple[str, dict[Any, Any]]] = []
    for name in reversed(graph._toposort_layers()):
        if not wanted:
            break
        _, deps = layers[name].cull(wanted, all_ext_keys)
        if not deps:
            continue
        for key, on in deps.items():
            wanted |= on
            wanted.discard(key)
        needed.append((name, deps))
    needed.reverse()
    return needed


def _in_order(deps: dict[Any, Any]) -> list[Any]:
    """A layer's keys, each after those of the same layer it depends on (a reduction tree inside one layer)."""
    order: list[Any] = []
    done: set[Any] = set()
    for root in deps:
        if root in done:
            continue
        stack = [(root, False)]
        while stack:
            key, expanded = stack.pop()
            if expanded:
                order.append(key)
                continue
            if key in done:
                continue
            done.add(key)
            stack.append((key, True))
            stack.extend((d, False) for d in deps[key] if d in deps and d not in done)
    return order


def plan(
    *collections: Any, region: str | None = None, workers_by_region: Mapping[str, int] | None = None
) -> EgressPlan:
    """Predict what computing ``collections`` moves between regions, without submitting anything.

    The graph is walked layer by layer (each layer culled to what the outputs need, as Dask culls it), never
    materialised: an array layer's chunk sizes and pinned region hold for all its tasks.

    Args:
        *collections: Dask collections (xarray objects, dask arrays and DataFrames) built on region-pinned data.
        region: Plan as :func:`compute` with ``region=`` runs: every task pinned to this region.
        workers_by_region: Workers per region, for a shuffle's expected crossing (its outputs spread evenly over
            the workers); None: the current distributed client's workers if there is a client, else equal
            workers per region.

    Returns:
        The :class:`EgressPlan`.

    Raises:
        CrossRegionReadError: A task reads files of several regions (no region can run it).

    Examples:
        >>> import dask.array as da, proximate
        >>> with proximate.pool("a"):
        ...     x = da.ones((1000, 1000), chunks=500)
        >>> proximate.plan(x.sum()).bytes_between
        {('a', 'client'): 8}
    """
    if region is not None:
        validate_region_name(region)
    graph, outputs = _graph_and_keys(collections)
    out = EgressPlan()
    # Regions stand for their pools here: choose_pool compares labels by name only to break ties, and
    # "pool-" + a < "pool-" + b exactly when a < b, so the choice is the router's.
    region_of: dict[Any, str | None] = {}
    nbytes: dict[Any, int] = {}
    tasks_by_region: dict[str | None, int] = defaultdict(int)
    # The sized tasks (reads, chunks) a DataFrame task derives from (None: after a shuffle, or unknown), each counted
    # once (a set_index task takes a partition and its partitioning column, both from one read), with their sizes.
    flow: dict[Any, frozenset[Any] | None] = {}
    source_bytes: dict[Any, int] = {}
    shuffled: dict[str, dict[Any, str]] = defaultdict(dict)  # shuffle name -> source -> region it enters in
    unknown_shuffle_inputs = 0
    needed = _needed_by_layer(graph, outputs)
    for name, deps in needed:
        layer = graph.layers[name]
        info = _LayerInfo(layer)
        tasks = getattr(layer, "mapping", None)  # a materialised layer's tasks (DataFrames), for read sizes
        internal = any(d in deps for on in deps.values() for d in on)
        sized = info.chunks is not None and info.itemsize is not None
        pinned = region if region is not None else None if callable(info.resources) else info.region
        for key in _in_order(deps) if internal else deps:
            task = tasks.get(key) if tasks is not None else None
            size = info.bytes_of(key) if sized else None
            read = _read_size(task) if size is None and task is not None else None
            if read is not None:
                size = read
            entering = False
            if size is None:
                out.unsized_tasks += 1
                size = 0
                # Only tasks without a size of their own pay for this (never an array's chunks: a sized input is
                # its own source, looked at only when a DataFrame task takes it).
                inputs = []
                for dep in deps[key]:
                    if dep in flow:
                        inputs.append(flow[dep])
                    elif dep in nbytes:
                        inputs.append(frozenset((dep,)))
                        source_bytes.setdefault(dep, nbytes[dep])
                    else:
                        inputs.append(None)
                flow[key] = None if None in inputs else frozenset().union(*inputs)  # type: ignore[arg-type]
                entering = _shuffle_input(key)
            elif read is not None:  # a read: its rows in memory are what a shuffle moves (encoding shrinks them)
                flow[key] = frozenset((key,))
                source_bytes[key] = _read_size(task, "memory_bytes") or size
            nbytes[key] = size
            # Rule 1 first, as the router: a read runs where its file is (a materialised layer's tasks only: an
            # array's Blockwise layers read through pinned layers, and the router finds no file in them either).
            # One look through the task for both the files it reads and what it declares it brings in; not into an
            # array's chunk tasks (sized from their layer): those read through the pinned layers of their data.
            found = find_in_spec(task, (RegionPath, InRegion)) if task is not None and not sized else ()
            here = _read_region(key, found) if found else None
            if here is None:
                here = pinned if pinned is not None else info.region_of(key) if callable(info.resources) else None
            for marker in found:
                if isinstance(marker, InRegion):  # what the task declares it brings in
                    unsized = [d for d in deps[key] if not nbytes.get(d)]
                    for dep in unsized:
                        nbytes[dep] = marker.nbytes // len(unsized)
            if here is None:
                here = _place(deps[key], region_of, nbytes)
            region_of[key] = here
            tasks_by_region[here] += 1
            if entering:
                if flow[key] is not None and here is not None:
                    for source in flow[key]:  # type: ignore[union-attr]
                        shuffled[key_name(key)].setdefault(source, here)
                elif not any(key_name(d).startswith("stage-") for d in deps[key]):  # not a later stage of one
                    unknown_shuffle_inputs += 1
                flow[key] = None  # what leaves a shuffle depends on the data
            if read is not None and here is not None:
                out.read_bytes[here] = out.read_bytes.get(here, 0) + read
    out.unplaced_tasks = tasks_by_region.pop(None, 0)
    out.tasks_by_region = dict(tasks_by_region)
    # Each input crosses once per destination region that needs it.
    moved: dict[tuple[str, str, str], int] = defaultdict(int)
    seen: set[tuple[Any, str]] = set()
    for _, deps in needed:
        for key, on in deps.items():
            to = region_of[key]
            if to is None:
                continue
            for dep in on:
                source = region_of.get(dep)
                if source is None or source == to or (dep, to) in seen:
                    continue
                seen.add((dep, to))
                moved[(key_name(dep), source, to)] += nbytes.get(dep, 0)
    shuffled_bytes: dict[str, dict[str, int]] = {}
    for name, entered in shuffled.items():
        shuffled_bytes[name] = defaultdict(int)
        for source, where in entered.items():
            shuffled_bytes[name][where] += source_bytes[source]
    below = _add_shuffles(out, shuffled_bytes, unknown_shuffle_inputs, workers_by_region, moved)
    for key in dict.fromkeys(outputs):
        out.result_bytes += nbytes[key]
        if region_of[key] is not None:
            moved[(key_name(key), region_of[key], CLIENT)] += nbytes[key]
    between: dict[tuple[str, str], int] = defaultdict(int)
    for (name, src, dst), n in moved.items():
        between[(src, dst)] += n
        out.crossings.append(Crossing(name, src, dst, n))
    out.bytes_between = dict(between)
    out.expected_bytes_between = {pair: n - int(below.get(pair, 0.0)) for pair, n in between.items()}
    return out


def _place(deps: Any, region_of: dict[Any, str | None], nbytes: dict[Any, int]) -> str | None:
    """A derived task's region: the one of its inputs when they agree (most tasks), else the router's rule."""
    regions = {region_of.get(d) for d in deps}
    regions.discard(None)
    if len(regions) <= 1:
        return regions.pop() if regions else None
    return choose_pool((region_of.get(d), nbytes.get(d, 0)) for d in deps)


# -- shuffles --------------------------------------------------------------------------------------------------

#: Name prefixes of the tasks through which a partition enters a shuffle (one per input partition), as dask 2026.x
#: names them: P2P (``hash-join-transfer`` for a merge's sides, ``shuffle-transfer`` for ``set_index``/``shuffle``/
#: ``groupby(split_out=...)``), task-based (``group-`` of dask-expr's ``taskshuffle``, or of its first stage when
#: staged; legacy ``shuffle-group``) and on-disk (``shuffle-partition``).
SHUFFLE_INPUT_PREFIXES = (
    "hash-join-transfer-",
    "shuffle-transfer-",
    "group-taskshuffle-",
    "group-stage-0-",
    "shuffle-group-",
    "shuffle-partition-",
)


def shuffle_crossings(
    bytes_by_region: Mapping[str, float], workers_by_region: Mapping[str, int], *, upper_bound: bool = False
) -> dict[tuple[str, str], float]:
    """Bytes a shuffle moves between regions, by ``(from, to)``: each output partition lands on one worker of the
    cluster, evenly, so the bytes of region R go to region S with the share of S's workers (staying in R with R's).

    Args:
        bytes_by_region: Bytes entering the shuffle in each region.
        workers_by_region: Workers per region.
        upper_bound: Every byte leaves its region instead (spread over the other regions by their workers): what a
            placement of the outputs driven by the data (all keys landing elsewhere) can reach.

    Returns:
        Bytes by ``(from, to)`` for ``from != to`` (floats: shares of a byte count).

    Examples:
        >>> shuffle_crossings({"a": 1000, "b": 600}, {"a": 2, "b": 2})
        {('a', 'b'): 500.0, ('b', 'a'): 300.0}
        >>> shuffle_crossings({"a": 1000, "b": 600}, {"a": 2, "b": 2}, upper_bound=True)
        {('a', 'b'): 1000.0, ('b', 'a'): 600.0}
    """
    total = sum(workers_by_region.values())
    out: dict[tuple[str, str], float] = {}
    for src, nbytes in bytes_by_region.items():
        elsewhere = total - workers_by_region.get(src, 0)
        share = elsewhere if upper_bound else total
        if not nbytes or not elsewhere:
            continue
        for dst, workers in sorted(workers_by_region.items()):
            if dst != src and workers:
                out[(src, dst)] = nbytes * workers / share
    return out


def expected_shuffle_cross_bytes(bytes_by_region: Mapping[str, float], workers_by_region: Mapping[str, int]) -> int:
    """Expected bytes a shuffle moves between regions (see :func:`shuffle_crossings`); what
    :meth:`proximate.tables.MergeChoice.shuffle_cross_bytes` and :func:`plan` predict.

    Args:
        bytes_by_region: Bytes entering the shuffle in each region.
        workers_by_region: Workers per region (``proximate.client.worker_regions`` counted).

    Returns:
        The expected cross-region bytes of the shuffle (not of the result's way to the client).

    Examples:
        >>> expected_shuffle_cross_bytes({"a": 1000, "b": 600}, {"a": 2, "b": 2})
        800
    """
    return int(sum(shuffle_crossings(bytes_by_region, workers_by_region).values()))


def _shuffle_input(key: Any) -> bool:
    return key_name(key).startswith(SHUFFLE_INPUT_PREFIXES)


def _live_workers_by_region() -> dict[str, int] | None:
    """Workers per region of the current distributed client, or None without one."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):  # no distributed, or no client: the caller assumes equal workers
        return None
    from proximate.client import worker_regions

    counts: dict[str, int] = defaultdict(int)
    for where in worker_regions(client).values():
        counts[where] += 1
    return dict(counts) or None


def _add_shuffles(
    out: EgressPlan,
    shuffled: dict[str, dict[str, int]],
    unknown_inputs: int,
    workers_by_region: Mapping[str, int] | None,
    moved: dict[tuple[str, str, str], int],
) -> dict[tuple[str, str], float]:
    """Count each shuffle's upper bound into ``moved`` and its bound into ``out.bounds``; returns, by direction,
    what the expected value is below the bound."""
    below: dict[tuple[str, str], float] = defaultdict(float)
    if not shuffled and not unknown_inputs:
        return below
    workers = dict(workers_by_region) if workers_by_region is not None else _live_workers_by_region()
    if not workers:
        workers = dict.fromkeys(out.tasks_by_region, 1)
        assumed = "equal workers per region (no client)"
    else:
        assumed = "workers " + ", ".join(f"{r}: {n}" for r, n in sorted(workers.items()))
    for name, by_region in sorted(shuffled.items()):
        bound = shuffle_crossings(by_region, workers, upper_bound=True)
        expected = shuffle_crossings(by_region, workers)
        for (src, dst), n in bound.items():
            moved[(name, src, dst)] += int(n)
            below[(src, dst)] += int(n) - expected.get((src, dst), 0.0)
        sides = ", ".join(f"{r}: {n:,}" for r, n in sorted(by_region.items()))
        out.bounds.append(
            f"shuffle {name.rsplit('-', 1)[0]!r} of {sides} bytes counted as crossing whole "
            f"(expected {int(sum(expected.values())):,} with {assumed})"
        )
    if unknown_inputs:
        out.bounds.append(
            f"{unknown_inputs} shuffle input(s) of data-dependent size (after another shuffle) not counted"
        )
    return below
