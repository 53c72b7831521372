"""The placement rules, pure functions shared by the scheduler's router and the client's egress plan.

Two rules, in this order:

1. A task whose own arguments name a region's file (:func:`regions_read`: a
   :class:`~proximate.datasets.RegionPath`, or anything holding one such as a table's ``TablePart``) runs in that
   region, whatever its annotations say: it reads there.
2. Any other task runs where most of its input bytes are (:func:`choose_pool`).

The router (:mod:`proximate.scheduler_plugin`) applies them to the materialised tasks on the scheduler, the
inputs measured; the plan (:mod:`proximate.egress`) applies them to predicted sizes before anything is submitted.
Both call these functions, so what the plan predicts and what the router does cannot drift apart.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from dask._task_spec import DataNode, Task

from proximate.datasets import RegionPath

#: How deep :func:`regions_read` looks into a task's arguments. A fused task nests its tasks (a subgraph in a dict,
#: each task's arguments in containers) a few levels deep; the bound keeps a pathological argument from costing the
#: scheduler time.
MAX_SPEC_DEPTH = 32
#: How many values :func:`find_in_spec` looks at in one spec: a task carrying a huge plain list (a million numbers
#: embedded in the graph) must not hold the scheduler's event loop (measured: about 0.1 s for that million on a
#: loaded 2-core machine). A read past this bound is not found, so it is not pinned by its data; it still cannot
#: read another region's file (the path resolves only in its region).
MAX_SPEC_VALUES = 10_000

T = TypeVar("T")
#: Values that hold nothing to look into (the bulk of a task's arguments).
_ATOMS = frozenset({str, bytes, int, float, bool, complex, type(None)})


@dataclass(frozen=True)
class InRegion:
    """An argument that places its task in ``region`` by rule 1, as a file of that region would.

    For a task that must run in a region although no file of it is read there: the step of a broadcast join that
    brings the small side into the large side's region once (:func:`proximate.tables.merge`), so that its join
    tasks find it there instead of each fetching it across.
    """

    region: str
    #: Bytes the task brings into the region, when known (its inputs' size): :func:`proximate.plan` counts them for
    #: inputs it cannot size itself.
    nbytes: int = 0


def regions_read(spec: Any) -> frozenset[str]:
    """Rule 1: the regions whose files a task spec names, what the task will read wherever it runs.

    Looks for :class:`~proximate.datasets.RegionPath` values (and :class:`InRegion` markers) with
    :func:`find_in_spec`: a reader that wants to be routed by its data passes a ``RegionPath`` (or a dataclass
    holding one, such as a table's ``TablePart``) as an argument of its task.

    Args:
        spec: A task's run spec (``TaskState.run_spec`` on the scheduler, a graph value on the client), or any
            argument.

    Returns:
        The region names found (empty: the task reads no region's file).

    Examples:
        >>> from dask._task_spec import Task
        >>> sorted(regions_read(Task("k", print, RegionPath("a", "t.parquet"), [RegionPath("b", "u.csv")])))
        ['a', 'b']
        >>> regions_read(Task("k", sum, [1, 2]))
        frozenset()
    """
    return frozenset(where.region for where in find_in_spec(spec, (RegionPath, InRegion)))


def find_in_spec(spec: Any, kind: type[T] | tuple[type, ...]) -> list[T]:
    """The values of type ``kind`` in a task spec's arguments, depth first.

    Looks through a :class:`dask._task_spec.Task` (its function, when a ``functools.partial``, its arguments and
    keyword arguments), fused subgraphs, Dask's containers and data nodes, plain lists/tuples/sets/dicts and
    dataclasses. Anything else (arrays, frames, arbitrary objects) is not opened, and a value of ``kind`` is not
    looked into.

    Args:
        spec: A task spec or any argument.
        kind: The type (or types) to find.

    Returns:
        The values found, each object once.

    Examples:
        >>> from dask._task_spec import Task
        >>> find_in_spec(Task("k", print, {"x": [RegionPath("a", "t.csv")]}), RegionPath)
        [RegionPath(region='a', path='t.csv')]
    """
    found: dict[int, T] = {}
    stack: list[tuple[Any, int]] = [(spec, 0)]
    visited = 0
    while stack and visited < MAX_SPEC_VALUES:
        obj, depth = stack.pop()
        visited += 1
        if type(obj) in _ATOMS:
            continue
        if isinstance(obj, kind):
            found.setdefault(id(obj), obj)
            continue
        if depth >= MAX_SPEC_DEPTH:
            continue
        children: Iterable[Any]
        if isinstance(obj, Task):
            children = (*obj.args, *obj.kwargs.values())
            if isinstance(obj.func, functools.partial):
                children = (*children, obj.func)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = obj
        elif isinstance(obj, dict):
            children = (*obj.keys(), *obj.values())
        elif isinstance(obj, DataNode):
            children = (obj.value,)
        elif type(obj).__module__ == "dask._task_spec" and hasattr(obj, "container"):  # List, Tuple, Set, Dict
            children = (obj.container,)
        elif isinstance(obj, functools.partial):
            children = (*obj.args, *obj.keywords.values())
        elif hasattr(type(obj), "__dataclass_fields__"):
            children = [getattr(obj, name) for name in type(obj).__dataclass_fields__]
        else:
            continue
        stack.extend((child, depth + 1) for child in itertools.islice(children, MAX_SPEC_VALUES - visited))
    return list(found.values())


def choose_pool(inputs: Iterable[tuple[str | None, int]]) -> str | None:
    """Rule 2: the pool (or region) holding most input bytes; ties go to the one with more inputs, then by name.

    Inputs without a pool (unpinned) do not vote; a negative size (Dask's "not known yet") counts as 0, so a task
    whose inputs are not measured yet goes where most of its pinned inputs are.

    Args:
        inputs: ``(pool, nbytes)`` for each input of the task; ``pool`` is None for an unpinned input.

    Returns:
        The chosen pool, or None when no input is pinned (the task stays unpinned).

    Examples:
        >>> choose_pool([("pool-a", 32_000_000), ("pool-b", 16_000)])
        'pool-a'
        >>> choose_pool([("pool-a", 0), ("pool-b", 0), ("pool-b", 0)])
        'pool-b'
        >>> choose_pool([(None, 10)]) is None
        True
    """
    weight: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for pool, nbytes in inputs:
        if pool is None:
            continue
        weight[pool] += max(int(nbytes), 0)
        count[pool] += 1
    if not count:
        return None
    return max(count, key=lambda p: (weight[p], count[p], p))
