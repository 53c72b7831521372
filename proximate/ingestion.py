"""Where an ingestion run's bytes went: the locality report of a region's nightly sync and indexing.

The sync and the extraction run on the region's workers; only their results (counts, paths, catalog records)
come back to the flow's process. The report puts the bytes that stayed in the region (objects read from the
region's bucket into its file system) beside the bytes that left it (the pickled results the flow received),
and, on the testbed, beside what each link really carried.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proximate import config


def pickled_size(value: Any) -> int:
    """Bytes of ``value`` as Dask sends a task's result (pickle protocol 5, no compression)."""
    return len(pickle.dumps(value, protocol=5))


@dataclass
class IngestionReport:
    """One region's ingestion run, in bytes.

    Attributes:
        region: The region ingested.
        object_bytes: Object bytes the sync moved from the region's bucket into its file system (in the region).
        sync_result_bytes: The sync's result and index backlog as the flow received them.
        index_result_bytes: The extraction's records as the flow received them.
        records: Catalog records written.
        link_bytes: Per link and direction, what the testbed's links carried during the run (None elsewhere).
    """

    region: str
    object_bytes: int = 0
    sync_result_bytes: int = 0
    index_result_bytes: int = 0
    records: int = 0
    link_bytes: dict[str, dict[str, int]] | None = field(default=None)

    @property
    def left_region_bytes(self) -> int:
        """Result bytes that left the region for the flow's process (metadata only)."""
        return self.sync_result_bytes + self.index_result_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "object_bytes": self.object_bytes,
            "sync_result_bytes": self.sync_result_bytes,
            "index_result_bytes": self.index_result_bytes,
            "left_region_bytes": self.left_region_bytes,
            "records": self.records,
            "link_bytes": self.link_bytes,
        }

    def markdown(self) -> str:
        lines = [
            f"# Ingestion locality, region {self.region}",
            "",
            "| what | bytes | where |",
            "| --- | ---: | --- |",
            f"| objects synced (bucket -> file system) | {self.object_bytes:,} | inside {self.region} |",
            f"| sync result and index backlog | {self.sync_result_bytes:,} | {self.region} -> flow |",
            f"| catalog records ({self.records}) | {self.index_result_bytes:,} | {self.region} -> flow |",
        ]
        if self.link_bytes is not None:
            lines += ["", "## Link counters during the run (testbed)", "", "| link | direction | bytes |",
                      "| --- | --- | ---: |"]  # fmt: skip
            for link, directions in sorted(self.link_bytes.items()):
                lines += [f"| {link} | {d} | {n:,} |" for d, n in sorted(directions.items())]
            lines += [
                "",
                "Link bytes include the Dask and Prefect control traffic (task messages, heartbeats, task-run "
                "states, the Region block the workers load) and every header; object bytes are only on the links "
                "where they are listed.",
            ]
        return "\n".join(lines) + "\n"


def link_delta(
    before: Mapping[str, Mapping[str, int]] | None, after: Mapping[str, Mapping[str, int]] | None
) -> dict[str, dict[str, int]] | None:
    """Per link and direction, ``after - before``, with each link's ``total`` (None when either is: not on the
    testbed)."""
    if before is None or after is None:
        return None
    from proximate.testing.testbed.bed import Testbed

    return Testbed.bytes_delta(before, after)


def testbed_link_counters() -> dict[str, dict[str, int]] | None:
    """The testbed's link counters when this process runs in one (``PROXIMATE_TESTBED_STATE`` is set), else None."""
    if not config.get_str("testbed.state"):
        return None
    from proximate.testing.testbed.bed import link_counters

    return link_counters()
