"""Partials that combine exactly (moments, group sums, normal equations): what a region reduces its rows to, so
that only they cross regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from proximate.datasets import RegionPath
from proximate.errors import TableInputError
from proximate.expressions import (
    Derivations,
)
from proximate.sandbox import LimitExceeded, Limits, run_bounded
from proximate.tables.reading import open_table


@dataclass
class Moments:
    """Per column: non-null count, sum, sum of squares, minimum, maximum. Adds exactly across partitions."""

    count: pd.Series
    total: pd.Series
    total_sq: pd.Series
    minimum: pd.Series
    maximum: pd.Series

    @classmethod
    def of(cls, df: pd.DataFrame) -> Moments:
        values = df.astype("float64")
        return cls(values.count(), values.sum(), (values**2).sum(), values.min(), values.max())

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.count.add(other.count, fill_value=0),
            self.total.add(other.total, fill_value=0),
            self.total_sq.add(other.total_sq, fill_value=0),
            pd.concat([self.minimum, other.minimum], axis=1).min(axis=1),
            pd.concat([self.maximum, other.maximum], axis=1).max(axis=1),
        )

    def describe(self) -> dict[str, dict[str, float]]:
        """count, mean, std (with one degree of freedom, as pandas), min and max per column."""
        out = {}
        for column in self.count.index:
            n = float(self.count[column])
            mean = self.total[column] / n if n else float("nan")
            var = (self.total_sq[column] - n * mean**2) / (n - 1) if n > 1 else float("nan")
            out[str(column)] = {
                "count": n,
                "mean": float(mean),
                "std": float(np.sqrt(max(var, 0.0))),
                "min": float(self.minimum[column]),
                "max": float(self.maximum[column]),
            }
        return out


@dataclass
class GroupSums:
    """Per group and column: non-null count and sum. Adds exactly across partitions."""

    count: pd.DataFrame
    total: pd.DataFrame

    @classmethod
    def of(cls, df: pd.DataFrame, key: str, columns: Sequence[str]) -> GroupSums:
        groups = df.groupby(df[key].astype(str), sort=True)[list(columns)]
        return cls(groups.count().astype("float64"), groups.sum().astype("float64"))

    def __add__(self, other: GroupSums) -> GroupSums:
        return GroupSums(self.count.add(other.count, fill_value=0), self.total.add(other.total, fill_value=0))

    def groups(self) -> dict[str, dict[str, dict[str, float]]]:
        out: dict[str, dict[str, dict[str, float]]] = {}
        for group in self.count.index:
            out[str(group)] = {
                str(c): {
                    "count": float(self.count.at[group, c]),
                    "sum": float(self.total.at[group, c]),
                    "mean": float(self.total.at[group, c] / self.count.at[group, c])
                    if self.count.at[group, c]
                    else float("nan"),
                }
                for c in self.count.columns
            }
        return out


@dataclass
class NormalEquations:
    """XᵀX and Xᵀy of a least-squares fit with an intercept (first column of ones), plus what R² needs."""

    xtx: np.ndarray
    xty: np.ndarray
    n: int
    y_sum: float
    y_sq: float

    @classmethod
    def of(cls, df: pd.DataFrame, target: str, features: Sequence[str]) -> NormalEquations:
        rows = df[[target, *features]].astype("float64").dropna()
        x = np.column_stack([np.ones(len(rows)), rows[list(features)].to_numpy()])
        y = rows[target].to_numpy()
        return cls(x.T @ x, x.T @ y, len(rows), float(y.sum()), float(y @ y))

    def __add__(self, other: NormalEquations) -> NormalEquations:
        return NormalEquations(
            self.xtx + other.xtx,
            self.xty + other.xty,
            self.n + other.n,
            self.y_sum + other.y_sum,
            self.y_sq + other.y_sq,
        )

    def solve(self, features: Sequence[str]) -> dict[str, Any]:
        """Coefficients, intercept, R² and the number of rows used.

        Raises:
            TableInputError: no rows, a constant target, or features that do not determine a fit.
        """
        if self.n == 0:
            raise TableInputError("no rows to fit: every row has a missing target or feature")
        total = self.y_sq - self.y_sum**2 / self.n
        if total <= 1e-12 * max(1.0, self.y_sq):
            raise TableInputError("the target is constant: a regression of it explains nothing")
        beta, _, rank, _ = np.linalg.lstsq(self.xtx, self.xty, rcond=None)
        if rank < len(self.xty):
            raise TableInputError(f"features {list(features)} are collinear or constant: no unique fit")
        residual = self.y_sq - 2 * beta @ self.xty + beta @ self.xtx @ beta
        return {
            "coefficients": {f: float(b) for f, b in zip(features, beta[1:], strict=True)},
            "intercept": float(beta[0]),
            "r2": float(1 - residual / total),
            "n": int(self.n),
        }


def _sum(parts: Sequence[Any]) -> Any:
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


# -- what a region computes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableQuestion:
    """What to compute over tables: a description (per column, optionally per group) or a regression."""

    kind: str  # "describe" or "regression"
    columns: tuple[str, ...] = ()
    group_by: str | None = None
    target: str | None = None
    derive: Derivations = field(default_factory=Derivations)
    #: What one partition's partial may use on a worker; ``None`` takes the worker's environment
    #: (:meth:`proximate.sandbox.Limits.from_env`).
    limits: Limits | None = None

    def needed(self, available: Sequence[str]) -> list[str]:
        """The table columns to read; a column that does not exist is refused, naming the ones that do."""
        wanted = set(self.derive.inputs())
        own = set(self.columns) | {c for c in (self.group_by, self.target) if c}
        wanted |= own - set(self.derive.expressions)
        if self.kind == "describe" and not self.columns:
            wanted |= set(available)  # every numeric column, decided per partition
        missing = sorted(wanted - set(available))
        if missing:
            raise TableInputError(f"no column(s) {missing} in the table; it has {', '.join(map(str, available))}")
        return sorted(wanted)

    def partial(self, df: pd.DataFrame) -> Reduced:
        """One partition's partial (pure pandas; runs on the region's workers)."""
        nbytes = int(df.memory_usage(index=False).sum())
        df = self.derive.apply(df)
        columns = list(self.columns) or [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        if self.kind == "regression":
            return Reduced(NormalEquations.of(df, self.target or "", columns), nbytes)
        groups = GroupSums.of(df, self.group_by, columns) if self.group_by else None
        return Reduced(Moments.of(df[columns]), nbytes, groups)

    def bounded_partial(self, df: pd.DataFrame) -> Reduced:
        """:meth:`partial` in a child process within :attr:`limits`, so that a runaway computation (an expression
        whose values grow without bound) fails this task and never stalls the worker's event loop or heartbeats.

        Raises:
            TableInputError: the partial passed a limit; the message names the derived columns' expressions.
        """
        limits = self.limits or Limits.from_env()
        try:
            return run_bounded(self.partial, df, limits=limits)
        except (LimitExceeded, MemoryError) as exc:
            what = (
                f"derived column(s) {self.derive.expressions}" if self.derive.expressions else f"a {self.kind} partial"
            )
            reason = str(exc) if isinstance(exc, LimitExceeded) else f"ran out of its {limits.memory_bytes} B memory"
            raise TableInputError(f"computing {what} on {len(df)} rows {reason}") from None


@dataclass
class Reduced:
    """A partial of some rows (moments or normal equations, and group sums), and the in-memory size of those
    rows: what a centralised run would have moved instead."""

    value: Any
    nbytes: int
    groups: GroupSums | None = None

    def __add__(self, other: Reduced) -> Reduced:
        groups = [g for g in (self.groups, other.groups) if g is not None]
        return Reduced(self.value + other.value, self.nbytes + other.nbytes, _sum(groups) if groups else None)


def combine(parts: Sequence[Reduced]) -> Reduced:
    """Partials of several partitions or regions, combined exactly."""
    if not parts:
        raise TableInputError("no partitions to combine: the tables are empty")
    return _sum(parts)


def region_partial(client: Any, tables: Sequence[RegionPath], question: TableQuestion) -> Any:
    """Reduce the tables of one region to one partial, every task pinned to that region; returns the partial.

    Args:
        client: A Dask client on the multi-region cluster.
        tables: Tables of one region.
        question: What to compute.
    """
    import dask

    from proximate.pools import compute

    regions = {t.region for t in tables}
    if len(regions) != 1:
        raise ValueError(f"region_partial takes the tables of one region, got {sorted(regions)}")
    (region,) = regions
    partials = []
    for where in tables:
        frame = open_table(where, client=client)
        frame = frame[question.needed(list(frame.columns))]
        partials += [dask.delayed(question.bounded_partial)(p) for p in frame.to_delayed()]
    return compute(dask.delayed(combine)(partials), region=region, client=client)


def answer(question: TableQuestion, reduced: Reduced) -> dict[str, Any]:
    """The result a flow returns, from the combined partial of every region."""
    if question.kind == "regression":
        return reduced.value.solve(list(question.columns))
    out: dict[str, Any] = {"columns": reduced.value.describe()}
    if reduced.groups is not None:
        out["groups"] = reduced.groups.groups()
    return out


# -- planning: what a region will read and send, before any row is read -------------------------------------------
