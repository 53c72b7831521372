"""Know the bill before the run: predicted cross-region bytes of a Dask computation, and budgets that refuse.

:func:`plan` walks a collection's graph on the client, before anything is submitted. Each task pinned to a region
(``pool-<region>`` resource annotations: what :func:`proximate.open_dataset` and :func:`proximate.pool` create)
keeps its region, and a task that reads a region's file (a table read) is placed there first, as the router does;
every derived task is placed, in topological order, by the router's own rule
(:func:`proximate.placement.choose_pool`: the region holding most of its input bytes) on predicted sizes, which
is where the router re-pins it once the real sizes are measured. A task's size is its chunk's shape times its
dtype's item size, read from the array layer that produced it. Every input that crosses from one region to
another is counted once per (input, destination region), and every output goes to the client.

:func:`compute` and :func:`egress_budget` refuse a computation whose plan exceeds a budget with
:class:`EgressBudgetError` before any task reaches the scheduler.

Tables: a partition read by :func:`proximate.tables.open_table` is sized from its Parquet row group's column
chunks (uncompressed, the columns it reads) or its CSV file's size, before any row is read (``read_bytes`` of
the plan, by region); what DataFrame operations derive from it has no predicted size, except what enters a shuffle
(a P2P or task-based merge, ``set_index``, ``groupby(split_out=...)``): each shuffle input is sized by the rows
in memory of the reads it derives from (each read once), and the shuffle's crossing is predicted from where those
bytes are and how many workers each region has (:func:`expected_shuffle_cross_bytes`). Where the outputs land
depends on the data, so the plan counts the upper bound (every shuffled byte leaves its region) in
``bytes_between`` and ``bounds``, and the expected value in ``expected_bytes_between``.

Limits (stated in the plan as ``unsized_tasks``/``unplaced_tasks``): tasks whose layer is not a Dask array or a
table read (DataFrame operations, delayed) have no predicted size and count as 0 bytes; tasks derived only from
unpinned data have no region and never count as crossing; Dask moves an input once per *worker* that needs it, so
the measurement may exceed the plan when several workers of a region fetch the same piece. Where a size depends on
the data (a group count, a filter) and the plan can bound it, ``bounds`` says so and the bytes are that bound.

The package's modules: :mod:`~proximate.egress.plans`, :mod:`~proximate.egress.planner` and
:mod:`~proximate.egress.budget`; everything public is importable from here.
"""

from proximate.egress.budget import check_budget as check_budget
from proximate.egress.budget import compute as compute
from proximate.egress.budget import egress_budget as egress_budget
from proximate.egress.planner import SHUFFLE_INPUT_PREFIXES as SHUFFLE_INPUT_PREFIXES
from proximate.egress.planner import expected_shuffle_cross_bytes as expected_shuffle_cross_bytes
from proximate.egress.planner import plan as plan
from proximate.egress.planner import shuffle_crossings as shuffle_crossings
from proximate.egress.plans import DEFAULT_PRICES as DEFAULT_PRICES
from proximate.egress.plans import Crossing as Crossing
from proximate.egress.plans import EgressBudgetError as EgressBudgetError
from proximate.egress.plans import EgressPlan as EgressPlan
from proximate.egress.plans import plan_markdown as plan_markdown
