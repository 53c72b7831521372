"""What a plan holds (:class:`EgressPlan`: bytes between places, tasks by region, bounds, cost) and how it
reads as Markdown beside what was measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proximate.locality_report import CLIENT

#: USD per decimal GB moved, by ``(from, to)``; ``"*"`` matches any region. The defaults are the usual public cloud
#: list prices: data between two regions of one provider about 0.02, data out to the internet (the client) 0.09.
DEFAULT_PRICES: dict[tuple[str, str], float] = {("*", CLIENT): 0.09, ("*", "*"): 0.02}


class EgressBudgetError(RuntimeError):
    """A computation's predicted cross-region traffic exceeds its budget; nothing was submitted."""

    def __init__(self, plan: EgressPlan, budget: str, predicted: str) -> None:
        super().__init__(budget, predicted)
        self.plan = plan
        self.budget = budget
        self.predicted = predicted

    def __str__(self) -> str:
        biggest = self.plan.biggest_crossing()
        where = (
            f"; the biggest crossing is {biggest.name!r}: {_size(biggest.nbytes)} from {biggest.source!r} to "
            f"{biggest.destination!r}"
            if biggest is not None
            else ""
        )
        return f"egress budget exceeded, nothing submitted: predicted {self.predicted}, budget {self.budget}{where}"


@dataclass(frozen=True)
class Crossing:
    """Data of one name (a Dask layer, e.g. ``'open_dataset-air_temperature-…'``) moving between two places."""

    name: str
    source: str
    destination: str
    nbytes: int


@dataclass
class EgressPlan:
    """What a computation is predicted to move between regions, before it runs."""

    #: Predicted bytes from one region to another (or to ``"client"``), by ``(from, to)``.
    bytes_between: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Tasks the plan places in each region (after culling to what the outputs need).
    tasks_by_region: dict[str, int] = field(default_factory=dict)
    #: Every crossing by data name and direction.
    crossings: list[Crossing] = field(default_factory=list)
    #: Tasks no pinned data reaches: they may run anywhere, so what they move is not predicted.
    unplaced_tasks: int = 0
    #: Tasks whose output size is unknown (not a Dask array chunk): counted as 0 bytes.
    unsized_tasks: int = 0
    #: Bytes of the outputs (what the client receives).
    result_bytes: int = 0
    #: Bytes read in place, by region, where the data's metadata says (Parquet row groups' column sizes): what
    #: stays in its region, and what a centralised run would move instead.
    read_bytes: dict[str, int] = field(default_factory=dict)
    #: Where a size depends on the data (a shuffle's destinations, a group count, a filter): what the plan assumed.
    #: A plan with notes gives an upper bound in ``bytes_between``, not a guess.
    bounds: list[str] = field(default_factory=list)
    #: As ``bytes_between``, with the expected value where it gives an upper bound (a shuffle: each output
    #: partition lands on one worker of the cluster, evenly); equal to ``bytes_between`` when ``bounds`` is empty.
    expected_bytes_between: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def cross_region_bytes(self) -> int:
        """Predicted bytes between different places, the client counting as one (as in the locality report)."""
        return sum(n for (src, dst), n in self.bytes_between.items() if src != dst)

    @property
    def expected_cross_region_bytes(self) -> int:
        """The expected bytes between different places: ``cross_region_bytes`` with a shuffle's expected crossing
        instead of its upper bound."""
        between = self.expected_bytes_between if self.bounds else self.bytes_between
        return sum(n for (src, dst), n in between.items() if src != dst)

    @property
    def exact(self) -> bool:
        """True when every task was placed and sized and no size depends on the data: neither a lower bound nor an
        upper one."""
        return not self.unplaced_tasks and not self.unsized_tasks and not self.bounds

    def cost(self, prices: Mapping[tuple[str, str], float] | None = None) -> float:
        """Predicted charge in USD for the bytes crossing, at ``prices`` per decimal GB.

        Args:
            prices: USD per GB by ``(from, to)``; ``"*"`` matches any place. Looked up exact pair first, then
                ``(from, "*")``, ``("*", to)``, ``("*", "*")``; entries given override :data:`DEFAULT_PRICES`.

        Returns:
            The sum over crossings of GB times price.

        Examples:
            >>> EgressPlan(bytes_between={("a", "b"): 10**9}).cost()
            0.02
            >>> EgressPlan(bytes_between={("a", "b"): 10**9}).cost({("a", "b"): 0.01})
            0.01
        """
        table = {**DEFAULT_PRICES, **(prices or {})}
        total = 0.0
        for (src, dst), n in self.bytes_between.items():
            if src == dst:
                continue
            for pair in ((src, dst), (src, "*"), ("*", dst), ("*", "*")):
                if pair in table:
                    total += n / 1e9 * table[pair]
                    break
        return total

    def biggest_crossing(self) -> Crossing | None:
        """The largest movement of one named piece of data between two places, or None when nothing crosses.

        On a tie, a crossing between two regions is named before the result's way to the client: it is the one a
        change of placement or of the computation can avoid.
        """
        return max(self.crossings, key=lambda c: (c.nbytes, c.destination != CLIENT, c.name), default=None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for artifacts and logs)."""
        biggest = self.biggest_crossing()
        return {
            "cross_region_bytes": self.cross_region_bytes,
            "bytes_between": {f"{s}->{d}": n for (s, d), n in sorted(self.bytes_between.items())},
            "tasks_by_region": dict(sorted(self.tasks_by_region.items())),
            "result_bytes": self.result_bytes,
            "cost_usd": self.cost(),
            "biggest_crossing": None if biggest is None else vars(biggest),
            "unplaced_tasks": self.unplaced_tasks,
            "unsized_tasks": self.unsized_tasks,
            "read_bytes": dict(sorted(self.read_bytes.items())),
            "bounds": list(self.bounds),
            "expected_cross_region_bytes": self.expected_cross_region_bytes,
            "expected_bytes_between": {f"{s}->{d}": n for (s, d), n in sorted(self.expected_bytes_between.items())},
        }


def _size(nbytes: int) -> str:
    return f"{nbytes:,} bytes ({nbytes / 2**20:.2f} MiB)"


def plan_markdown(egress: EgressPlan, measured: Any = None) -> str:
    """The plan as a Markdown table, with what was measured beside it when a locality report is given.

    Args:
        egress: The plan.
        measured: The :class:`~proximate.locality_report.LocalityReport` of the run, or None for a dry run.

    Returns:
        Markdown: one row per direction (from, to) with predicted and, if given, measured bytes.

    Examples:
        >>> print(plan_markdown(EgressPlan(bytes_between={("a", "client"): 8})).splitlines()[2])
        | a | client | 8 |
    """
    pairs = set(egress.bytes_between)
    if measured is not None:
        pairs |= set(measured.bytes_between)
    pairs = {p for p in pairs if p[0] != p[1]}
    head = "| from | to | predicted bytes |" + (" measured bytes |" if measured is not None else "")
    rule = "|---|---|---:|" + ("---:|" if measured is not None else "")
    rows = [head, rule]
    for src, dst in sorted(pairs):
        row = f"| {src} | {dst} | {egress.bytes_between.get((src, dst), 0):,} |"
        if measured is not None:
            row += f" {measured.bytes_between.get((src, dst), 0):,} |"
        rows.append(row)
    total = f"| **total** | | **{egress.cross_region_bytes:,}** |"
    if measured is not None:
        total += f" **{measured.cross_region_bytes:,}** |"
    rows.append(total)
    biggest = egress.biggest_crossing()
    notes = [f"Predicted cost at default prices: ${egress.cost():.6f}."]
    if egress.read_bytes:
        reads = ", ".join(f"{r}: {n:,}" for r, n in sorted(egress.read_bytes.items()))
        notes.append(f"Bytes read in place (a centralised run would move them): {reads}.")
    if egress.bounds:
        notes.append(
            "An upper bound, as sizes depend on the data: "
            + "; ".join(egress.bounds)
            + f". Expected in total: {egress.expected_cross_region_bytes:,} bytes."
        )
    if biggest is not None:
        notes.append(
            f"Biggest crossing: `{biggest.name}`, {_size(biggest.nbytes)} from {biggest.source} to "
            f"{biggest.destination}."
        )
    if egress.unsized_tasks or egress.unplaced_tasks:
        notes.append(
            ("Besides, not counted" if egress.bounds else "A lower bound")
            + f": {egress.unsized_tasks} task(s) of unknown size and {egress.unplaced_tasks} task(s) "
            "not derived from pinned data (0 bytes each)."
        )
    return "\n".join(rows) + "\n\n" + " ".join(notes) + "\n"
