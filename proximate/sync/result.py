"""What a sync run did, in a form the flow, the catalog indexer and a report can all read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SyncResult:
    """Counts and paths of one run. ``changed`` and ``deleted_paths`` are relative to the root, for
    ``index_region(region, changed=..., deleted=...)``; ``failed`` is ``[key, reason]`` pairs."""

    source_url: str
    dest_root: str
    listed: int = 0
    transferred: int = 0
    bytes_transferred: int = 0
    new: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: list[list[str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted_paths: list[str] = field(default_factory=list)
    temp_files_removed: int = 0
    seconds: float = 0.0

    @property
    def modified(self) -> int:
        """Files that existed before and were rewritten because their object changed."""
        return self.transferred - self.new

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def mib_per_s(self) -> float:
        return self.bytes_transferred / 2**20 / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: SyncResult) -> SyncResult:
        """Add a later step's (or batch's) counts and lists to this one; returns self."""
        for name in ("transferred", "bytes_transferred", "new", "skipped", "deleted", "temp_files_removed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.listed = max(self.listed, other.listed)
        self.failed.extend(other.failed)
        self.changed.extend(other.changed)
        self.deleted_paths.extend(other.deleted_paths)
        self.seconds += other.seconds
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(modified=self.modified, mib_per_s=round(self.mib_per_s, 3))
        return data

    def summary_markdown(self, title: str = "Sync") -> str:
        """A short report: counts, bytes, throughput and every failed key with its reason."""
        lines = [
            f"# {title}",
            "",
            f"Source `{self.source_url}` into `{self.dest_root}`.",
            "",
            "| new | changed | deleted | skipped | failed | bytes | seconds | MiB/s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {self.new} | {self.modified} | {self.deleted} | {self.skipped} | {len(self.failed)} "
            f"| {self.bytes_transferred} | {self.seconds:.2f} | {self.mib_per_s:.1f} |",
        ]
        if self.failed:
            lines += ["", "## Failed", ""]
            lines += [f"- `{key!r}`: {reason}" for key, reason in self.failed[:200]]
            if len(self.failed) > 200:
                lines.append(f"- ... and {len(self.failed) - 200} more")
        return "\n".join(lines) + "\n"
