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

The package's modules: :mod:`~proximate.tables.reading`, :mod:`~proximate.tables.joins`,
:mod:`~proximate.tables.partials` and :mod:`~proximate.tables.planning`; everything public is importable from here.
"""

# The derive language lives in proximate.expressions and its error in proximate.errors: re-exported here (the
# ``X as X`` form says so to linters) so that callers keep using ``tables.Derivations``, ``tables.MAX_...``.
from proximate.errors import TableInputError as TableInputError
from proximate.expressions import DT_METHODS as DT_METHODS
from proximate.expressions import DT_PROPERTIES as DT_PROPERTIES
from proximate.expressions import MAX_CONSTANT as MAX_CONSTANT
from proximate.expressions import MAX_DERIVED_COLUMNS as MAX_DERIVED_COLUMNS
from proximate.expressions import MAX_EXPONENT as MAX_EXPONENT
from proximate.expressions import MAX_EXPRESSION_CHARS as MAX_EXPRESSION_CHARS
from proximate.expressions import MAX_EXPRESSION_DEPTH as MAX_EXPRESSION_DEPTH
from proximate.expressions import MAX_EXPRESSION_NODES as MAX_EXPRESSION_NODES
from proximate.expressions import Derivations as Derivations
from proximate.expressions import derive_columns as derive_columns
from proximate.tables.joins import BROADCAST_BELOW_ENV as BROADCAST_BELOW_ENV
from proximate.tables.joins import DEFAULT_BROADCAST_BELOW_BYTES as DEFAULT_BROADCAST_BELOW_BYTES
from proximate.tables.joins import MergeChoice as MergeChoice
from proximate.tables.joins import check_reads as check_reads
from proximate.tables.joins import choose_merge as choose_merge
from proximate.tables.joins import merge as merge
from proximate.tables.joins import table_parts as table_parts
from proximate.tables.partials import GroupSums as GroupSums
from proximate.tables.partials import Moments as Moments
from proximate.tables.partials import NormalEquations as NormalEquations
from proximate.tables.partials import Reduced as Reduced
from proximate.tables.partials import TableQuestion as TableQuestion
from proximate.tables.partials import answer as answer
from proximate.tables.partials import combine as combine
from proximate.tables.partials import region_partial as region_partial
from proximate.tables.planning import PLAN_SAMPLE_GROUPS as PLAN_SAMPLE_GROUPS
from proximate.tables.planning import RegionReads as RegionReads
from proximate.tables.planning import plan_region as plan_region
from proximate.tables.reading import CSV_SAMPLE_ROWS as CSV_SAMPLE_ROWS
from proximate.tables.reading import CSV_SUFFIXES as CSV_SUFFIXES
from proximate.tables.reading import PARQUET_SUFFIXES as PARQUET_SUFFIXES
from proximate.tables.reading import TABLE_SUFFIXES as TABLE_SUFFIXES
from proximate.tables.reading import TablePart as TablePart
from proximate.tables.reading import csv_date_columns as csv_date_columns
from proximate.tables.reading import open_table as open_table
from proximate.tables.reading import parts_nbytes as parts_nbytes
from proximate.tables.reading import plan_table as plan_table
from proximate.tables.reading import read_csv as read_csv
from proximate.tables.reading import read_part as read_part
