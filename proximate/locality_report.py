"""What actually crossed regions: read from the workers' transfer logs and the scheduler's task stream.

Each worker logs every piece of data it sends (``transfer_outgoing_log``: to another worker, or to the
scheduler/client on gather). Attributing sender and receiver to regions gives measured bytes between regions,
with everything outside the regions counted as ``"client"``. Data the client itself uploads (scatter, values
embedded in a graph) is not in those logs and is not counted.

A transfer counts the bytes the worker wrote for it (the serialised data and Dask's message around it), not
Dask's in-memory estimate of the data (``dask.sizeof``, which says 80 B for a Prefect task state carrying
kilobytes). Its receiver is the requesting worker, or for a client's request (``who`` None) the region the
requesting process named in its connection's handshake (:class:`proximate.worker_plugin.TransferRequesters`):
a task's own client in a region gathering from that region stays in it; any other client (the flow's process,
the scheduler gathering for a client) is ``"client"``.

Beside the data, the report counts control traffic: what the scheduler's TCP connections to each region's
hosts carried (task messages, replies, heartbeats, the report's own questions), read from the kernel's counters
(:mod:`proximate.comm_bytes`), with TCP/IP/Ethernet headers, so that data plus control can be compared with
what the links themselves counted.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CLIENT = "client"


def _log_marks(dask_worker: Any) -> tuple[int, int]:
    """Where each worker's outgoing log stands now: (id of last entry, length)."""
    log = dask_worker.transfer_outgoing_log
    return (id(log[-1]) if log else 0, len(log))


def _log_since(mark: tuple[int, int] | None, dask_worker: Any) -> list[dict[str, Any]]:
    """Outgoing transfers logged after ``mark``: requesting worker, requester's region (a client's request, where
    it said one), bytes written and keys."""
    from proximate.worker_plugin import REQUESTER_KEY

    log = list(dask_worker.transfer_outgoing_log)
    if mark is None or mark[0] == 0:
        new = log
    else:
        for i in range(len(log) - 1, -1, -1):
            if id(log[i]) == mark[0]:
                new = log[i + 1 :]
                break
        else:
            new = log  # the mark rotated out of the deque: everything in it is newer
    # An in-process comm (a cluster of threads) writes no bytes and reports 1: Dask's estimate stands in.
    in_process = str(dask_worker.address).startswith("inproc://")
    return [
        {
            "who": e["who"],
            "requester": e.get(REQUESTER_KEY),
            "total": int(e["total"] if in_process or not e.get("compressed") else e["compressed"]),
            "keys": len(e["keys"]),
        }
        for e in new
    ]


@dataclass
class LocalityReport:
    """Measured data movement and task placement of a computation."""

    bytes_between: dict[tuple[str, str], int] = field(default_factory=dict)
    tasks_by_region: dict[str, int] = field(default_factory=dict)
    #: (task name, region it ran in, worker name) for every task that finished inside the block.
    tasks: list[tuple[str, str, str]] = field(default_factory=list)
    complete: bool = False
    #: Wall time of the block, seconds: the Dask compute time when the block holds one computation.
    seconds: float = 0.0
    #: Live workers per region over the block: (seconds since its start, count) at the start, at each change
    #: (an autoscaler's, a lost worker) and at the end. Empty on a scheduler without the proximate router.
    workers_by_region: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    #: Control traffic per region: bytes the scheduler's connections to the region's hosts carried, both ways,
    #: on the wire (payload, TLS included, plus each segment's headers), less the results gathered through the
    #: scheduler (data, in ``bytes_between``). Empty where the kernel's counters cannot be read (not Linux).
    control_bytes: dict[str, int] = field(default_factory=dict)
    #: The same, payload only (what Dask wrote and read, TLS records included).
    control_payload_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def cross_region_bytes(self) -> int:
        """Bytes between different regions, the client counting as a region."""
        return sum(n for (src, dst), n in self.bytes_between.items() if src != dst)

    @property
    def total_control_bytes(self) -> int:
        """Control traffic of every region together, on the wire."""
        return sum(self.control_bytes.values())

    def egress_cost(self, usd_per_gb: float = 0.02) -> float:
        """Estimated egress charge for the cross-region bytes at ``usd_per_gb`` (decimal GB, as AWS bills)."""
        return self.cross_region_bytes / 1e9 * usd_per_gb


def key_name(key: Any) -> str:
    """The name part of a Dask key (``("open_dataset-x-abc", 0, 1)`` -> ``"open_dataset-x-abc"``)."""
    return str(key[0]) if isinstance(key, tuple) and key else str(key)


def _regions_and_names(client: Any) -> tuple[dict[str, str], dict[str, str]]:
    from proximate.client import worker_regions

    info = client.scheduler_info(n_workers=-1)["workers"]
    return worker_regions(client), {addr: str(w.get("name", addr)) for addr, w in info.items()}


@contextlib.contextmanager
def locality(client: Any = None) -> Iterator[LocalityReport]:
    """Measure what the computations inside the block moved between regions and where their tasks ran.

    The report is filled in when the block exits.

    Args:
        client: The Dask client; the default one otherwise.

    Yields:
        A :class:`LocalityReport`, empty until the block exits.

    Examples:
        >>> with proximate.locality() as report:
        ...     error = error.compute()
        >>> report.cross_region_bytes, report.tasks_by_region, report.egress_cost(usd_per_gb=0.02)
    """
    from distributed import get_task_stream

    from proximate.client import client_context
    from proximate.comm_bytes import bytes_by_region
    from proximate.scheduler_plugin import worker_timeline

    report = LocalityReport()
    started = time.perf_counter()
    with client_context(client) as c:
        control_before = _scheduler_counters(c)  # first in, last out: the report's own questions count too
        regions, names = _regions_and_names(c)
        marks = c.run(_log_marks)
        at_start = c.run_on_scheduler(worker_timeline)
        with get_task_stream(client=c) as stream:
            yield report
        report.seconds = time.perf_counter() - started
        if at_start is not None:
            report.workers_by_region = _workers_over(
                at_start, c.run_on_scheduler(worker_timeline, since=at_start["now"])
            )
        later_regions, later_names = _regions_and_names(c)
        regions.update(later_regions)
        names.update(later_names)
        logs = _collect(c, marks)
        control_after = _scheduler_counters(c)
        control = bytes_by_region(control_before, control_after) if control_before and control_after else {}
    _fill(report, regions, names, logs, stream.data)
    # A client that does not gather from workers directly gathers through the scheduler: those results (sent by
    # a worker to no worker, ``who`` None, to a requester in no region) crossed the scheduler's connections and
    # are data, counted above. A task's own client in a region gathers directly, not through the scheduler.
    gathered: dict[str, int] = defaultdict(int)
    if not getattr(c, "direct_to_workers", False):
        for sender, entries in logs.items():
            gathered[regions.get(sender, CLIENT)] += sum(
                e["total"] for e in entries if e["who"] is None and not e["requester"]
            )
    report.control_bytes = {r: max(v["wire"] - gathered[r], 0) for r, v in sorted(control.items())}
    report.control_payload_bytes = {r: max(v["payload"] - gathered[r], 0) for r, v in sorted(control.items())}


def _scheduler_counters(client: Any) -> dict[str, Any] | None:
    """The scheduler's TCP counters (:func:`proximate.comm_bytes.scheduler_counters`), or None where it cannot
    run them: a plain Dask scheduler without proximate installed fails to unpickle the function, and the report
    then goes without control bytes rather than failing."""
    from proximate.comm_bytes import scheduler_counters

    try:
        return client.run_on_scheduler(scheduler_counters)
    except Exception:  # whatever the scheduler raised; data is still measured
        return None


def _workers_over(start: dict[str, Any], end: dict[str, Any]) -> dict[str, list[tuple[float, int]]]:
    """Each region's live workers at the start, at every change, and at the end (seconds since the start)."""
    t0 = start["now"]
    regions = sorted({*start["live"], *end["live"], *(r for _, counts in end["events"] for r in counts)})
    out: dict[str, list[tuple[float, int]]] = {r: [(0.0, start["live"].get(r, 0))] for r in regions}
    for t, counts in end["events"]:
        for region in regions:
            n = counts.get(region, 0)
            if n != out[region][-1][1]:
                out[region].append((round(t - t0, 3), n))
    for region in regions:
        out[region].append((round(end["now"] - t0, 3), end["live"].get(region, 0)))
    return out


def _collect(client: Any, marks: dict[str, tuple[int, int]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    # Only workers alive now: a worker that died since took its log with it, and asking its old address would
    # wait out the connect timeout (30 s by default) before failing.
    for addr in client.scheduler_info(n_workers=-1)["workers"]:
        with contextlib.suppress(OSError, KeyError, ValueError):  # it may still die in between
            # Workers that joined during the block (no mark): everything they logged is new.
            out.update(client.run(_log_since, marks.get(addr), workers=[addr]))
    return out


def _fill(
    report: LocalityReport,
    regions: dict[str, str],
    names: dict[str, str],
    logs: dict[str, list[dict[str, Any]]],
    stream: list[dict[str, Any]],
) -> None:
    between: dict[tuple[str, str], int] = defaultdict(int)
    for sender, entries in logs.items():
        src = regions.get(sender, CLIENT)
        for entry in entries:
            who = entry["who"]
            dst = regions.get(who, CLIENT) if who is not None else entry.get("requester") or CLIENT
            between[(src, dst)] += entry["total"]
    tasks = []
    for rec in stream:
        addr = rec.get("worker")
        tasks.append((key_name(rec.get("key")), regions.get(addr, CLIENT), names.get(addr, str(addr))))
    report.bytes_between = dict(between)
    report.tasks = tasks
    report.tasks_by_region = dict(Counter(r for _, r, _ in tasks))
    report.complete = True


def _mib(n: float) -> str:
    return f"{n / 2**20:,.3f} MiB"


def budget_markdown(report: LocalityReport, minimum: int, centralised: int, usd_per_gb: float = 0.02) -> str:
    """The run's locality as markdown: bytes between regions, then this run against the physical minimum and a
    centralised run, with egress estimates at ``usd_per_gb``."""
    rows = "\n".join(
        f"| {src} | {dst} | {n:,} |" for (src, dst), n in sorted(report.bytes_between.items()) if src != dst
    )
    measured = report.cross_region_bytes

    def versus(n: int) -> str:
        # Each row's own bytes against the physical minimum, so every ratio sits in the row it describes.
        return f"{n / minimum:,.2f}x" if minimum else "-"

    def cost(n: int) -> str:
        return f"${n / 1e9 * usd_per_gb:.6f}"

    return f"""# Data locality

| from | to | bytes |
| --- | --- | ---: |
{rows or "| - | - | 0 |"}

| | cross-region | against the minimum | egress at ${usd_per_gb}/GB |
| --- | ---: | ---: | ---: |
| this run (measured, worker transfer logs) | {_mib(measured)} | {versus(measured)} | {cost(measured)} |
| physical minimum | {_mib(minimum)} | 1.00x | {cost(minimum)} |
| centralised (client region reads every input) | {_mib(centralised)} | {versus(centralised)} | {cost(centralised)} |

A centralised run would move {centralised / max(measured, 1):,.0f}x the bytes this run moved.

Tasks per region: {", ".join(f"{r}: {n}" for r, n in sorted(report.tasks_by_region.items()))}
{control_markdown(report)}{workers_markdown(report)}"""


def workers_markdown(report: LocalityReport) -> str:
    """Workers per region over the run: at the start, fewest, most, at the end, and each change."""
    if not report.workers_by_region:
        return ""
    lines = ["", "| region | workers at start | fewest | most | at end | changes (s: workers) |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for region, points in sorted(report.workers_by_region.items()):
        counts = [n for _, n in points]
        changes = ", ".join(f"{t:.1f}: {n}" for t, n in points[1:-1]) or "none"
        lines.append(f"| {region} | {counts[0]} | {min(counts)} | {max(counts)} | {counts[-1]} | {changes} |")
    return "\n".join(lines) + "\n"


def control_markdown(report: LocalityReport) -> str:
    """Control traffic per region (scheduler <-> region) beside the data that left or entered it."""
    if not report.control_bytes:
        return ""
    lines = [
        "",
        "| region | data in + out (transfer logs) | control (scheduler <-> region, on the wire) |",
        "| --- | ---: | ---: |",
    ]
    for region, control in report.control_bytes.items():
        data = sum(n for (src, dst), n in report.bytes_between.items() if src != dst and region in (src, dst))
        lines.append(f"| {region} | {data:,} | {control:,} |")
    return "\n".join(lines) + "\n"
