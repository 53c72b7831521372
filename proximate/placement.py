"""The placement rule, one pure function shared by the scheduler's router and the client's egress plan.

The router (:mod:`proximate.scheduler_plugin`) applies it to a task's measured inputs on the scheduler; the plan
(:mod:`proximate.egress`) applies it to predicted input sizes before anything is submitted. Both call
:func:`choose_pool`, so what the plan predicts and what the router does cannot drift apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable


def choose_pool(inputs: Iterable[tuple[str | None, int]]) -> str | None:
    """The pool (or region) holding most input bytes; ties go to the one with more inputs, then by name.

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
