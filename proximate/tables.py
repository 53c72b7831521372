"""Tables in regions: Parquet and CSV files opened on a region's workers, reduced there to small partials.

``open_table(region, path)`` returns a lazy Dask DataFrame whose partitions are read on a worker of the region
(one partition per Parquet row group, or per CSV file); each partition resolves its path on the worker that reads
it, so a misrouted read fails naming region and path. dask-expr drops task annotations; the scheduler's router pins
each read task by the ``TablePart`` (and so the ``RegionPath``) among its arguments instead, so that tables of
several regions combine in one graph (:func:`merge` chooses a broadcast or a shuffle between them).

The workloads never bring rows out of a region: each region reduces its rows to partials that combine exactly
(counts, sums, sums of squares, minima and maxima; per group counts and sums; the normal-equation pieces XᵀX and
Xᵀy of a least-squares fit), and only those cross. Derived columns come from :func:`derive_columns`, a small
expression language checked before any work (column arithmetic and a few ``.dt`` accessors, never Python), defined
in :mod:`proximate.expressions` and re-exported here.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from proximate import config
from proximate.datasets import RegionPath
from proximate.errors import TableInputError

# The derive language moved to proximate.expressions (#31) and its error to proximate.errors: re-exported here
# (the ``X as X`` form says so to linters) so that callers keep using ``tables.Derivations``, ``tables.MAX_...``.
from proximate.expressions import DT_METHODS as DT_METHODS
from proximate.expressions import DT_PROPERTIES as DT_PROPERTIES
from proximate.expressions import MAX_CONSTANT as MAX_CONSTANT
from proximate.expressions import MAX_DERIVED_COLUMNS as MAX_DERIVED_COLUMNS
from proximate.expressions import MAX_EXPONENT as MAX_EXPONENT
from proximate.expressions import MAX_EXPRESSION_CHARS as MAX_EXPRESSION_CHARS
from proximate.expressions import MAX_EXPRESSION_DEPTH as MAX_EXPRESSION_DEPTH
from proximate.expressions import MAX_EXPRESSION_NODES as MAX_EXPRESSION_NODES
from proximate.expressions import Derivations
from proximate.expressions import derive_columns as derive_columns
from proximate.regions import pool_resource, resolve
from proximate.sandbox import LimitExceeded, Limits, run_bounded

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".csv.gz")
TABLE_SUFFIXES = PARQUET_SUFFIXES + CSV_SUFFIXES


# -- opening ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TablePart:
    """One partition of a table: a file of the dataset (a row group of it, for Parquet)."""

    where: RegionPath
    row_group: int | None = None
    #: For CSV: the columns to parse as datetimes (text columns whose sample is all ISO 8601 datetimes).
    dates: tuple[str, ...] = ()
    #: Rows of the part, from the Parquet footer; None for CSV (known only once parsed).
    rows: int | None = None
    #: Uncompressed bytes of each column chunk of the row group, from the Parquet footer; empty for CSV.
    column_bytes: tuple[tuple[str, int], ...] = ()
    #: Bytes of the CSV file (None for Parquet).
    file_bytes: int | None = None
    #: Estimated in-memory bytes of each column chunk of the row group, from the Parquet footer (the rule of
    #: :func:`parts_nbytes`); empty for CSV.
    column_memory: tuple[tuple[str, int], ...] = ()

    def read_bytes(self, columns: Sequence[str] | None = None) -> int | None:
        """What reading ``columns`` (None: every column) of this part takes, before anything is read: the
        uncompressed column chunks of its row group (Parquet metadata), or the file's size for CSV (text is about
        as big as the values it parses to); None when not recorded.

        Examples:
            >>> part = TablePart(RegionPath("a", "t.parquet"), 0, rows=2, column_bytes=(("x", 16), ("y", 24)))
            >>> part.read_bytes(), part.read_bytes(["x"])
            (40, 16)
        """
        if self.column_bytes:
            wanted = None if columns is None else set(columns)
            return sum(n for c, n in self.column_bytes if wanted is None or c in wanted)
        return self.file_bytes

    def memory_bytes(self, columns: Sequence[str] | None = None) -> int | None:
        """What ``columns`` (None: every column) of this part take in memory once read, before anything is read:
        rows times width for fixed-width columns (whose Parquet encoding may have shrunk them far below it), the
        uncompressed column chunks otherwise; :meth:`read_bytes` when not recorded (CSV).

        Examples:
            >>> part = TablePart(RegionPath("a", "t.parquet"), 0, rows=2, column_memory=(("x", 16), ("y", 24)))
            >>> part.memory_bytes(), part.memory_bytes(["y"])
            (40, 24)
        """
        if self.column_memory:
            wanted = None if columns is None else set(columns)
            return sum(n for c, n in self.column_memory if wanted is None or c in wanted)
        return self.read_bytes(columns)


def _files(where: RegionPath) -> list[RegionPath]:
    """The table's files: the file itself, or every table file under a directory (a partitioned dataset)."""
    full = resolve(where.region, where.path)
    if not full.is_dir():
        return [where]
    found = []
    for dirpath, dirs, files in os.walk(full):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if name.lower().endswith(TABLE_SUFFIXES) and not name.startswith((".", "_")):
                rel = os.path.relpath(os.path.join(dirpath, name), full)
                found.append(RegionPath(where.region, f"{where.path}/{rel}"))
    if not found:
        raise FileNotFoundError(f"no Parquet or CSV files in {where}")
    return found


def _is_parquet(where: RegionPath) -> bool:
    return where.path.lower().endswith(PARQUET_SUFFIXES)


def plan_table(where: RegionPath) -> tuple[list[TablePart], pd.DataFrame]:
    """Worker-side: the partitions of a table and an empty frame with its columns and dtypes."""
    import pyarrow.parquet as pq

    parts: list[TablePart] = []
    meta = None
    for file in _files(where):
        if _is_parquet(file):
            pf = pq.ParquetFile(resolve(file.region, file.path))
            parts += _parquet_parts(file, pf)
            if meta is None:
                meta = pf.schema_arrow.empty_table().to_pandas()
        else:
            full = resolve(file.region, file.path)
            dates = csv_date_columns(full)
            parts.append(TablePart(file, dates=dates, file_bytes=os.path.getsize(full)))
            if meta is None:
                meta = read_csv(full, dates=dates, nrows=0)
    return parts, meta


def parts_nbytes(parts: Sequence[TablePart]) -> int:
    """Worker-side, in the parts' region: their estimated size in memory from the files' metadata, no row read.

    A Parquet row group counts rows times the width of each fixed-width column, plus the uncompressed size of each
    variable-width (text, binary, nested) column chunk (Parquet's own uncompressed size undercounts fixed-width
    columns that dictionary or run-length encoding shrank, such as a key of few values); a CSV file its size.

    Args:
        parts: Partitions of tables of this worker's region.

    Returns:
        Their estimated bytes in memory.

    Examples:
        >>> client.submit(parts_nbytes, table_parts(stations), resources={"pool-b": 0}).result()  # doctest: +SKIP
        320000
    """
    import pyarrow.parquet as pq

    total = 0
    files: dict[RegionPath, Any] = {}
    for part in parts:
        full = resolve(part.where.region, part.where.path)
        if part.row_group is None:
            total += full.stat().st_size
            continue
        if part.where not in files:
            files[part.where] = pq.ParquetFile(full)
        if files[part.where].num_row_groups:
            total += _row_group_nbytes(files[part.where], part.row_group)
    return total


def _row_group_nbytes(pf: Any, row_group: int) -> int:
    return sum(n for _, n in _column_memory(pf, row_group))


def _column_memory(pf: Any, row_group: int) -> tuple[tuple[str, int], ...]:
    """Each column chunk of a row group with its estimated bytes in memory (see :func:`parts_nbytes`)."""
    meta = pf.metadata.row_group(row_group)
    schema = pf.schema_arrow
    out = []
    for i in range(meta.num_columns):
        chunk = meta.column(i)
        name = chunk.path_in_schema.split(".")[0]
        field = schema.field(name) if name in schema.names else None
        try:
            width = field.type.bit_width // 8 if field is not None else 0
        except ValueError:  # not fixed-width
            width = 0
        out.append((name, int(meta.num_rows * width if width else chunk.total_uncompressed_size)))
    return tuple(out)


def _parquet_parts(file: RegionPath, pf: Any) -> list[TablePart]:
    """One part per row group, each with its rows and column sizes from the file's footer (what an egress plan
    sizes reads by, before any row is read)."""
    meta = pf.metadata
    if meta.num_row_groups == 0:
        return [TablePart(file, 0, rows=0)]
    parts = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        sizes = tuple(
            (group.column(j).path_in_schema, int(group.column(j).total_uncompressed_size))
            for j in range(group.num_columns)
        )
        parts.append(
            TablePart(file, i, rows=int(group.num_rows), column_bytes=sizes, column_memory=_column_memory(pf, i))
        )
    return parts


#: Rows of a CSV file whose text columns decide which of them are datetimes.
CSV_SAMPLE_ROWS = 100


def csv_date_columns(full: os.PathLike[str] | str) -> tuple[str, ...]:
    """The columns of a CSV file whose first :data:`CSV_SAMPLE_ROWS` values are all ISO 8601 datetimes: the one
    rule the reader and the catalog share, so a column the catalog calls a time is read as one."""
    sample = pd.read_csv(full, nrows=CSV_SAMPLE_ROWS)
    return tuple(c for c in sample.columns if _all_datetimes(sample[c]))


def read_csv(
    full: os.PathLike[str] | str,
    *,
    dates: Sequence[str],
    usecols: Sequence[str] | None = None,
    nrows: int | None = None,
) -> pd.DataFrame:
    """A CSV file (or its ``usecols``) with its ``dates`` columns as datetimes."""
    frame = pd.read_csv(full, usecols=list(usecols) if usecols else None, nrows=nrows)
    present = {c: "datetime64[ns]" for c in dates if c in frame.columns}
    return frame.astype(present) if present else frame


def _all_datetimes(values: pd.Series) -> bool:
    """Whether a CSV column's sample is text that parses as ISO 8601 datetimes throughout."""
    if pd.api.types.is_numeric_dtype(values) or values.isna().all():
        return False
    try:
        pd.to_datetime(values.dropna(), format="ISO8601")
    except (ValueError, TypeError):
        return False
    return True


def read_part(part: TablePart, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Worker-side: read one partition, resolving its path here (fails loudly outside the table's region)."""
    from proximate.io import note_read

    full = resolve(part.where.region, part.where.path)
    note_read(part.where)
    if part.row_group is None:
        return read_csv(full, dates=part.dates, usecols=columns)
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(full)
    if pf.num_row_groups == 0:
        return pf.schema_arrow.empty_table().to_pandas()
    return pf.read_row_group(part.row_group, columns=list(columns) if columns else None).to_pandas()


def open_table(where: RegionPath | str, path: str | None = None, *, client: Any = None, persist: bool = False) -> Any:
    """Open a Parquet or CSV table (a file, or a folder of them) lazily, its partitions read in its region.

    Args:
        where: A :class:`~proximate.datasets.RegionPath`, or the region's name with ``path``.
        path: The table's path under the region's root, when ``where`` is a region name.
        client: The Dask client; the default one (or, inside a task, a worker client) otherwise.
        persist: Read the whole table into the memory of the region's workers now (pinned there), so that
            repeated queries while exploring cost no reads.

    Returns:
        A ``dask.dataframe.DataFrame`` (lazy unless persisted). Its reads run in the table's region whatever the
        graph combines it with (the router pins them by the file they read); derived tasks follow their bytes.

    Examples:
        >>> trips = proximate.open_table("gcp", "trips/yellow_tripdata.parquet")
        >>> by_vendor = proximate.compute(trips.groupby("VendorID").trip_distance.mean(), region="gcp")
    """
    import dask.dataframe as dd

    from proximate.client import client_context, require_region

    if not isinstance(where, RegionPath):
        if path is None:
            raise TypeError("open_table takes a RegionPath, or a region name and a path")
        where = RegionPath(where, path)
    with client_context(client) as c:
        require_region(c, where.region)
        future = c.submit(plan_table, where, pure=False, resources={pool_resource(where.region): 0})
        parts, meta = future.result()
        frame = dd.from_map(read_part, parts, meta=meta, label=f"read-table-{where.region}", enforce_metadata=False)
        if not persist:
            return frame
        from distributed import futures_of, wait

        frame = c.persist(frame, resources={pool_resource(where.region): 0})
        wait(futures_of(frame))  # in memory when this returns, so the first query already costs no reads
        return frame


# -- joins across regions -------------------------------------------------------------------------------------


#: Environment variable overriding :data:`DEFAULT_BROADCAST_BELOW_BYTES` (``proximate.tables.broadcast-below-bytes``).
BROADCAST_BELOW_ENV = config.env_var("tables.broadcast-below-bytes")
#: A side of a merge whose tables' estimated in-memory size is below this is broadcast into the other side's region
#: (it crosses once, whole); above it, both sides are shuffled. A shuffle between two regions moves about half of
#: each side across (each output partition lands on one worker of either region), so a broadcast is cheaper while
#: the small side is under about half the large side's size; this bound also keeps the broadcast side in the memory
#: of one worker of the other region.
DEFAULT_BROADCAST_BELOW_BYTES = int(config.default("tables.broadcast-below-bytes"))


@dataclass(frozen=True)
class MergeChoice:
    """How :func:`merge` joins two frames, and why.

    ``strategy`` is ``"broadcast"`` (the small side, as one partition, crosses once into the large side's region
    and is joined there partition by partition), ``"shuffle"`` (both sides hash-partitioned by the key, P2P or
    task-based; outputs spread over the workers of every region) or ``"local"`` (both sides in one region, or
    no region: whatever Dask does, nothing crosses between regions).
    """

    strategy: str
    #: Which side is broadcast ("left" or "right"), for a broadcast.
    small_side: str | None
    #: The regions each side's tables live in.
    left_regions: tuple[str, ...]
    right_regions: tuple[str, ...]
    #: Estimated in-memory bytes of each side's tables (Parquet metadata; CSV file sizes), 0 when unknown.
    left_bytes: int
    right_bytes: int
    reason: str

    def shuffle_cross_bytes(self, workers_by_region: dict[str, int]) -> int:
        """Expected bytes a shuffle of both sides moves between regions: each output partition lands on one worker
        of the cluster, evenly, so the rows of a side in region R stay there with the share of R's workers and
        cross otherwise.

        Args:
            workers_by_region: Live workers per region (``proximate.client.worker_regions`` counted).

        Returns:
            The expected cross-region bytes of the shuffle (not of the result's way to the client).

        Examples:
            >>> MergeChoice("shuffle", None, ("a",), ("b",), 1000, 600, "").shuffle_cross_bytes({"a": 2, "b": 2})
            800
        """
        from proximate.egress import expected_shuffle_cross_bytes  # the one rule, shared with proximate.plan

        by_region: dict[str, float] = {}
        for regions, nbytes in ((self.left_regions, self.left_bytes), (self.right_regions, self.right_bytes)):
            for region in regions:  # a side spread over several regions: its bytes by region unknown here, even
                by_region[region] = by_region.get(region, 0.0) + nbytes / len(regions)
        return expected_shuffle_cross_bytes(by_region, workers_by_region)

    @property
    def predicted_cross_bytes(self) -> int | None:
        """Bytes a broadcast moves between regions (the small side, once); None for a shuffle (about half of each
        side, depending on where Dask places the outputs) and 0 for a local merge."""
        if self.strategy == "broadcast":
            return self.left_bytes if self.small_side == "left" else self.right_bytes
        return 0 if self.strategy == "local" else None


def table_parts(frame: Any) -> list[TablePart]:
    """The table partitions a Dask collection reads (from its graph's tasks), each once.

    Args:
        frame: A Dask collection (a DataFrame of :func:`open_table`, or anything derived from one).

    Returns:
        The :class:`TablePart` of every partition it reads.

    Examples:
        >>> {part.where.region for part in table_parts(dd.concat([obs_a, obs_b]))}  # doctest: +SKIP
        {'a', 'b'}
    """
    from dask._task_spec import convert_legacy_graph

    from proximate.placement import find_in_spec

    graph = convert_legacy_graph(dict(frame.__dask_graph__()))
    return list(dict.fromkeys(p for task in graph.values() for p in find_in_spec(task, TablePart)))


def choose_merge(
    left: Any, right: Any, *, how: str = "inner", broadcast_below_bytes: int | None = None, client: Any = None
) -> MergeChoice:
    """Decide how :func:`merge` joins ``left`` and ``right`` (nothing is computed).

    Args:
        left: A Dask DataFrame.
        right: A Dask DataFrame.
        how: ``"inner"``, ``"left"``, ``"right"`` or ``"outer"``, as pandas.
        broadcast_below_bytes: The threshold (default :data:`DEFAULT_BROADCAST_BELOW_BYTES`, or the environment's
            ``PROXIMATE_BROADCAST_BELOW_BYTES``).
        client: The Dask client (the default one otherwise): each side's Parquet footers are read in its region
            (:func:`parts_nbytes`, one small task per region), the client cannot see the files.

    Returns:
        The :class:`MergeChoice`.

    Examples:
        >>> choice = choose_merge(observations, stations)  # doctest: +SKIP
        >>> choice.strategy, choice.small_side, choice.predicted_cross_bytes  # doctest: +SKIP
        ('broadcast', 'right', 48000)
    """
    if broadcast_below_bytes is None:
        setting = config.get_float("tables.broadcast-below-bytes")
        broadcast_below_bytes = DEFAULT_BROADCAST_BELOW_BYTES if setting is None else int(setting)
    from proximate.client import client_context

    sides = {}
    with client_context(client) as c:
        for name, frame in (("left", left), ("right", right)):
            by_region: dict[str, list[TablePart]] = {}
            for part in table_parts(frame):
                by_region.setdefault(part.where.region, []).append(part)
            sizes = [  # the parts name their region's files: the router runs each sizing there
                c.submit(parts_nbytes, parts, pure=False, resources={pool_resource(region): 0})
                for region, parts in sorted(by_region.items())
            ]
            sides[name] = (tuple(sorted(by_region)), sum(c.gather(sizes)))
    (left_regions, left_bytes), (right_regions, right_bytes) = sides["left"], sides["right"]

    def choice(strategy: str, small: str | None, reason: str) -> MergeChoice:
        return MergeChoice(strategy, small, left_regions, right_regions, left_bytes, right_bytes, reason)

    if len(set(left_regions) | set(right_regions)) <= 1:
        return choice("local", None, "both sides read one region (or none): nothing crosses between regions")
    # A side may be broadcast only if the join keeps none of its unmatched rows (they would repeat per partition).
    candidates = [
        (nbytes, side)
        for side, nbytes, regions, keeps_unmatched in (
            ("left", left_bytes, left_regions, how in ("left", "outer")),
            ("right", right_bytes, right_regions, how in ("right", "outer")),
        )
        if not keeps_unmatched and len(regions) == 1 and nbytes
    ]
    small = min(candidates, default=None)
    if small is not None and small[0] < broadcast_below_bytes:
        other = right_bytes if small[1] == "left" else left_bytes
        if small[0] <= other:
            return choice(
                "broadcast", small[1], f"the {small[1]} side ({small[0]:,} B) is below {broadcast_below_bytes:,} B"
            )
    return choice(
        "shuffle",
        None,
        f"no side of a {how!r} join is both broadcastable and below {broadcast_below_bytes:,} B "
        f"(left {left_bytes:,} B, right {right_bytes:,} B)",
    )


def merge(
    left: Any,
    right: Any,
    *,
    on: str | Sequence[str] | None = None,
    how: str = "inner",
    shuffle_method: str | None = None,
    broadcast_below_bytes: int | None = None,
    client: Any = None,
    **kwargs: Any,
) -> tuple[Any, MergeChoice]:
    """Join two tables that may live in different regions, moving as little as possible between them.

    When one side is small (below ``broadcast_below_bytes``, estimated from the Parquet metadata without reading
    rows) and the join keeps none of its unmatched rows, it is made one partition and broadcast: it crosses once
    into the large side's region, where every partition of the large side is joined with it (the router places
    each join task where most of its input bytes are: with the large partition). Otherwise both sides are shuffled
    (``shuffle_method``: ``"p2p"`` or ``"tasks"``), which moves about half of each side between regions.

    Args:
        left: A Dask DataFrame (e.g. from :func:`open_table`).
        right: A Dask DataFrame.
        on: The key column(s), as pandas.
        how: ``"inner"``, ``"left"``, ``"right"`` or ``"outer"``.
        shuffle_method: For a shuffle: ``"p2p"`` or ``"tasks"`` (Dask's default otherwise).
        broadcast_below_bytes: See :func:`choose_merge`.
        client: The Dask client (see :func:`choose_merge`).
        **kwargs: Passed to ``DataFrame.merge`` (``suffixes``, ``left_on``...).

    Returns:
        The lazy joined DataFrame, and the :class:`MergeChoice` saying which join it is and why.

    Raises:
        CrossRegionReadError: The join would read both regions' files in one task (a side that is not a table of
            one region, built so that Dask fuses it with the other side's reads); nothing was submitted.

    Examples:
        >>> obs = proximate.open_table("a", "observations.parquet")  # doctest: +SKIP
        >>> stations = proximate.open_table("b", "stations.parquet")  # doctest: +SKIP
        >>> joined, choice = proximate.tables.merge(obs, stations, on="station")  # doctest: +SKIP
        >>> choice.strategy  # doctest: +SKIP
        'broadcast'
    """
    choice = choose_merge(left, right, how=how, broadcast_below_bytes=broadcast_below_bytes, client=client)
    if choice.strategy == "broadcast":
        if choice.small_side == "left":
            left = _moved_once(left, choice.right_regions[0], choice.left_bytes)
        else:
            right = _moved_once(right, choice.left_regions[0], choice.right_bytes)
        joined = left.merge(right, on=on, how=how, broadcast=True, **kwargs)
    elif choice.strategy == "shuffle" and left.npartitions == right.npartitions == 1 and choice.left_regions:
        # Two one-partition sides (an outer join of two small tables): Dask joins them in one blockwise task, which
        # its optimiser may fuse with both reads (``frame.optimize()`` does): a task no region can run. The smaller
        # side moves once instead.
        if choice.left_bytes <= choice.right_bytes:
            left = _moved_once(left, choice.right_regions[0], choice.left_bytes)
        else:
            right = _moved_once(right, choice.left_regions[0], choice.right_bytes)
        joined = left.merge(right, on=on, how=how, **kwargs)
    else:
        joined = left.merge(right, on=on, how=how, shuffle_method=shuffle_method, **kwargs)
    check_reads(joined, "merge")
    return joined, choice


def _arrive(frame: pd.DataFrame, destination: Any) -> pd.DataFrame:
    """The task that brings a broadcast side into ``destination`` (an ``InRegion``, which places it there)."""
    return frame


def _moved_once(frame: Any, region: str, nbytes: int) -> Any:
    """``frame`` as one partition held in ``region``: one task there fetches it across once, and every join task
    of the region then finds it in the region (otherwise each worker of the region running a join task would
    fetch it across on its own, and a join task would run where the larger of its two inputs is, which for a small
    side bigger than a partition of the large side is the wrong region).

    The step is a delayed task of its own (not a partition function, which Dask would fuse with the read of the
    other region into one task that no region can run)."""
    import dask
    import dask.dataframe as dd

    from proximate.placement import InRegion

    (whole,) = frame.repartition(npartitions=1).to_delayed()
    return dd.from_delayed([dask.delayed(_arrive, pure=True)(whole, InRegion(region, nbytes))], meta=frame._meta)


def check_reads(frame: Any, operation: str) -> None:
    """Refuse a collection in which one task would read files of several regions (before anything runs).

    Checks the graph as ``compute`` and as ``optimize``/``persist`` build it (Dask optimises them differently:
    ``optimize`` fuses a one-partition join with both of its reads).

    Args:
        frame: A Dask collection.
        operation: What it is, for the error ("merge", "concat"...).

    Raises:
        CrossRegionReadError: Names the operation, the regions and the task.

    Examples:
        >>> check_reads(dd.from_map(read_both, [(part_of_a, part_of_b)]), "read_both")  # doctest: +SKIP
        Traceback (most recent call last):
        CrossRegionReadError: read_both reads data of regions a, b in one task ...
    """
    from dask._expr import FinalizeCompute
    from dask._task_spec import convert_legacy_graph
    from dask.base import collections_to_expr

    from proximate.errors import CrossRegionReadError
    from proximate.placement import regions_read

    expr = collections_to_expr([frame])
    for submitted in (FinalizeCompute(expr).optimize(), expr.optimize()):
        for key, task in convert_legacy_graph(dict(submitted.__dask_graph__())).items():
            regions = regions_read(task)
            if len(regions) > 1:
                raise CrossRegionReadError(operation, tuple(sorted(regions)), str(key))


# -- partials -----------------------------------------------------------------------------------------------------


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
