"""Budgets that refuse a computation before any task is submitted: :func:`compute` and :func:`egress_budget`."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from proximate.egress.planner import plan
from proximate.egress.plans import EgressBudgetError, EgressPlan, _size


@dataclass(frozen=True)
class _Budget:
    max_bytes: int | None
    max_usd: float | None
    prices: Mapping[tuple[str, str], float] | None


_BUDGETS: contextvars.ContextVar[tuple[_Budget, ...]] = contextvars.ContextVar("proximate_egress_budgets", default=())


@contextlib.contextmanager
def egress_budget(
    max_bytes: int | None = None,
    max_usd: float | None = None,
    prices: Mapping[tuple[str, str], float] | None = None,
) -> Iterator[None]:
    """Refuse every :func:`proximate.compute` inside the block whose plan exceeds the budget.

    Budgets nest: each enclosing one must hold. Plain ``.compute()`` calls are not checked (Dask offers no hook
    that runs on the client before a distributed submission); compute through :func:`proximate.compute`.

    Args:
        max_bytes: Most predicted cross-region bytes (the client counting as a region) per computation.
        max_usd: Most predicted cost per computation, at ``prices``.
        prices: Price table for ``max_usd`` (see :meth:`EgressPlan.cost`).

    Raises:
        ValueError: A negative budget.

    Examples:
        >>> import proximate
        >>> with proximate.egress_budget(max_bytes=10 * 2**20):  # doctest: +SKIP
        ...     proximate.compute(mean - observations)
    """
    for name, value in (("max_bytes", max_bytes), ("max_usd", max_usd)):
        if value is not None and value < 0:
            raise ValueError(f"egress_budget {name} must be >= 0, got {value!r}")
    token = _BUDGETS.set((*_BUDGETS.get(), _Budget(max_bytes, max_usd, prices)))
    try:
        yield
    finally:
        _BUDGETS.reset(token)


def check_budget(
    egress: EgressPlan, max_cross_region_bytes: int | None = None, budgets: tuple[_Budget, ...] | None = None
) -> None:
    """Raise :class:`EgressBudgetError` if ``egress`` exceeds ``max_cross_region_bytes`` or an active budget."""
    limits = [_Budget(max_cross_region_bytes, None, None)] if max_cross_region_bytes is not None else []
    limits.extend(_BUDGETS.get() if budgets is None else budgets)
    for budget in limits:
        predicted = egress.cross_region_bytes
        if budget.max_bytes is not None and predicted > budget.max_bytes:
            raise EgressBudgetError(egress, f"max {_size(int(budget.max_bytes))}", _size(predicted))
        if budget.max_usd is not None:
            usd = egress.cost(budget.prices)
            if usd > budget.max_usd:
                raise EgressBudgetError(egress, f"max ${budget.max_usd:g}", f"${usd:.6f} for {_size(predicted)}")


def compute(
    *collections: Any,
    region: str | None = None,
    max_cross_region_bytes: int | None = None,
    client: Any = None,
    **kwargs: Any,
) -> Any:
    """Compute collections on the cluster, refusing first if their plan exceeds a budget.

    Args:
        *collections: Dask collections.
        region: Pin every task of the graphs to this region (the way to route DataFrames).
        max_cross_region_bytes: Refuse if the plan predicts more bytes crossing (the result to the client counts).
        client: The Dask client; the default client otherwise (a worker client inside a task).
        **kwargs: Passed to ``Client.compute``.

    Returns:
        The computed values (a tuple for several collections).

    Raises:
        EgressBudgetError: The plan exceeds ``max_cross_region_bytes`` or an :func:`egress_budget` around the call;
            raised before any task is submitted.

    Examples:
        >>> proximate.compute(mean - observations, max_cross_region_bytes=10 * 2**20)  # doctest: +SKIP
    """
    from proximate.client import client_context
    from proximate.pools import compute as compute_in_region

    if max_cross_region_bytes is not None and max_cross_region_bytes < 0:
        raise ValueError(f"max_cross_region_bytes must be >= 0, got {max_cross_region_bytes!r}")
    if max_cross_region_bytes is not None or _BUDGETS.get():
        check_budget(plan(*collections, region=region), max_cross_region_bytes)
    if region is not None:
        return compute_in_region(*collections, region=region, client=client, **kwargs)
    with client_context(client) as c:
        futures = c.compute(list(collections), **kwargs)
        results = c.gather(futures)
    return results[0] if len(results) == 1 else tuple(results)
