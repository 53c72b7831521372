"""A table flow's plan from metadata alone: what each region would read and send, sized from Parquet footers
and CSV file sizes before any row is read.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from proximate.datasets import RegionPath
from proximate.regions import resolve
from proximate.tables.partials import Reduced, TableQuestion
from proximate.tables.reading import CSV_SAMPLE_ROWS, TablePart, plan_table, read_csv

#: Groups a planned partial is built with; beyond this, its size is extrapolated per group.
PLAN_SAMPLE_GROUPS = 1000


@dataclass
class RegionReads:
    """One region's reduction, predicted from its tables' metadata (Parquet footers, CSV sizes and headers) on a
    worker of the region, before any row is read.

    Attributes:
        region: The region.
        partitions: Parts to read (Parquet row groups and CSV files).
        rows: Rows of the tables (Parquet footers); None when a CSV file is among them.
        read_bytes: What reading the needed columns takes: uncompressed column chunks (Parquet), file sizes (CSV).
        partial: A partial of the shape the region will send (its values not computed: built on placeholder rows).
        extra_bytes: Bytes to add to ``partial`` for groups beyond :data:`PLAN_SAMPLE_GROUPS` (0 otherwise).
        groups: With ``group_by``: the most groups the partial can hold (a bound: the count is data-dependent).
        notes: Where the prediction is a bound, what bounds it.
    """

    region: str
    partitions: int
    rows: int | None
    read_bytes: int
    partial: Reduced
    extra_bytes: int = 0
    groups: int | None = None
    notes: tuple[str, ...] = ()


def plan_region(tables: Sequence[RegionPath], question: TableQuestion) -> RegionReads:
    """Worker-side: what reducing ``tables`` (of one region) to a partial reads and sends, from metadata only.

    Without ``group_by`` the partial's size does not depend on the data (a fixed number of floats per column), so
    the prediction is exact; with it the number of groups is bounded by the group column's Parquet statistics
    (an integer column: at most max - min + 1 groups) and by the rows, and the partial is sized for that bound.

    Args:
        tables: Tables of one region.
        question: What the flow computes.

    Returns:
        The :class:`RegionReads`.

    Examples:
        >>> reads = client.submit(plan_region, [RegionPath("a", "trips.parquet")], question,
        ...                       resources={"pool-a": 0}).result()  # doctest: +SKIP
    """
    import pyarrow.parquet as pq

    regions = {t.region for t in tables}
    if len(regions) != 1:
        raise ValueError(f"plan_region takes the tables of one region, got {sorted(regions)}")
    parts: list[TablePart] = []
    meta = None
    lows, highs, rows_bound, csv = [], [], 0, False
    (region,) = regions
    for where in tables:
        where_parts, where_meta = plan_table(where)
        if meta is None:
            first = where_parts[0]
            # CSV's empty header frame types every column as text: take the types of a sample of its rows.
            meta = (
                where_meta
                if first.rows is not None
                else read_csv(resolve(region, first.where.path), dates=first.dates, nrows=CSV_SAMPLE_ROWS).iloc[:0]
            )
        parts += where_parts
        for part in where_parts:
            if part.rows is not None:
                rows_bound += part.rows
            else:
                csv = True
                # Every CSV row is at least one character and a separator per column.
                rows_bound += (part.file_bytes or 0) // (2 * max(1, len(meta.columns)))
        if question.group_by:
            for part in where_parts:
                if part.rows is None:
                    continue
                stats = _column_statistics(pq, part, question.group_by)
                lows.append(stats[0] if stats else None)
                highs.append(stats[1] if stats else None)
    assert meta is not None  # plan_table refuses a folder without tables
    needed = question.needed(list(meta.columns))
    meta = meta[needed]
    read_bytes = sum(p.read_bytes(needed) or 0 for p in parts)
    notes: list[str] = []
    groups = None
    labels: list[Any] = []
    if question.group_by:
        integer = pd.api.types.is_integer_dtype(meta[question.group_by]) or pd.api.types.is_bool_dtype(
            meta[question.group_by]
        )
        if integer and lows and not csv and None not in lows:
            low, high = int(min(lows)), int(max(highs))
            groups = min(high - low + 1, rows_bound)
            labels = list(range(low, low + min(groups, PLAN_SAMPLE_GROUPS)))
            why = f"{question.group_by!r} ranges over {low}..{high} (Parquet statistics)"
        else:
            groups = rows_bound
            labels = [str(i).zfill(12) for i in range(min(groups, PLAN_SAMPLE_GROUPS))]
            why = f"at most one group per row ({rows_bound:,} rows, labels sized at 12 characters)"
        notes.append(f"{region}: the partial holds up to {groups:,} {question.group_by!r} groups: {why}")
    partial = question.partial(_placeholder_rows(meta, question.group_by, labels))
    extra = 0
    if groups is not None and groups > len(labels):
        empty = question.partial(_placeholder_rows(meta, question.group_by, []))
        per_group = (len(pickle.dumps(partial, protocol=5)) - len(pickle.dumps(empty, protocol=5))) / len(labels)
        extra = int(per_group * (groups - len(labels)))
    return RegionReads(
        region,
        len(parts),
        None if csv else rows_bound,
        read_bytes,
        partial,
        extra,
        groups,
        tuple(notes),
    )


def _column_statistics(pq: Any, part: TablePart, column: str) -> tuple[Any, Any] | None:
    """(min, max) of ``column`` in the part's row group, from the Parquet footer; None when not recorded."""
    meta = pq.ParquetFile(resolve(part.where.region, part.where.path)).metadata
    if part.row_group is None or part.row_group >= meta.num_row_groups:
        return None
    group = meta.row_group(part.row_group)
    for j in range(group.num_columns):
        chunk = group.column(j)
        if chunk.path_in_schema == column and chunk.is_stats_set and chunk.statistics.has_min_max:
            return chunk.statistics.min, chunk.statistics.max
    return None


def _placeholder_rows(meta: pd.DataFrame, group_by: str | None, labels: Sequence[Any]) -> pd.DataFrame:
    """Rows with the table's columns and types and missing values (one per group label): a partial of them has the
    shape and pickled size of the real partial, whatever the values."""
    frame = meta.reindex(range(max(len(labels), 0)))
    if group_by:
        try:
            frame[group_by] = pd.Series(labels, dtype=meta[group_by].dtype)
        except (ValueError, TypeError):  # labels standing for values of a type they cannot take (text, dates)
            frame[group_by] = pd.Series(labels, dtype=object)
    return frame
