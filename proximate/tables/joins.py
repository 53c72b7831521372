"""Tables of several regions in one graph: a merge chosen as a broadcast of the smaller side or a shuffle, and
the check that no single task reads two regions' files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from proximate import config
from proximate.regions import pool_resource
from proximate.tables.reading import TablePart, parts_nbytes

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
