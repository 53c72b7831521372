"""Table files of a region: their partitions (one per Parquet row group or CSV file), sized from their
metadata, read on a worker of the region, and opened as a lazy Dask DataFrame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from proximate.datasets import RegionPath
from proximate.regions import pool_resource, resolve

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".csv.gz")
TABLE_SUFFIXES = PARQUET_SUFFIXES + CSV_SUFFIXES


# -- opening ------------------------------------------------------------------------------------------------------


def _sum_of_columns(sizes: Sequence[tuple[str, int]], columns: Sequence[str] | None) -> int:
    """The sizes of ``columns`` (None: all) among ``(column, bytes)`` pairs, summed."""
    wanted = None if columns is None else set(columns)
    return sum(n for c, n in sizes if wanted is None or c in wanted)


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
            return _sum_of_columns(self.column_bytes, columns)
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
            return _sum_of_columns(self.column_memory, columns)
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
