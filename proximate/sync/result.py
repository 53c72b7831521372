"""What a sync run did, in a form the flow, the catalog indexer and a report can all read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SyncResult:
    """Counts and paths of one run. ``changed`` and ``deleted_paths`` are relative to the root, for
    ``index_region(region, changed=..., deleted=...)``; ``failed`` is ``[key, reason]`` pairs.

    ``cold`` names the objects skipped because they sit in an archive storage class unrestored (GLACIER,
    DEEP_ARCHIVE, an Intelligent-Tiering archive tier): not failures, they cannot be read until restored.
    ``size_only`` names the objects that landed checked by size alone, the store keeping no checksum that could
    be checked (an SSE-KMS or SSE-C object without an additional checksum: its ETag is not an MD5).
    ``delete_refused`` says why the deletes of this run were refused (too many files at once), if they were.
    """

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
    cold: list[str] = field(default_factory=list)
    size_only: list[str] = field(default_factory=list)
    delete_refused: str | None = None
    seconds: float = 0.0

    @property
    def modified(self) -> int:
        """Files that existed before and were rewritten because their object changed."""
        return self.transferred - self.new

    @property
    def skipped_cold(self) -> int:
        """Objects skipped because they are archived and not restored (see ``cold``)."""
        return len(self.cold)

    @property
    def ok(self) -> bool:
        """No object failed and no delete was refused (cold objects skipped do not count against it)."""
        return not self.failed and self.delete_refused is None

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
        self.cold.extend(other.cold)
        self.size_only.extend(other.size_only)
        self.delete_refused = self.delete_refused or other.delete_refused
        self.seconds += other.seconds
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(modified=self.modified, skipped_cold=self.skipped_cold, mib_per_s=round(self.mib_per_s, 3))
        return data

    def summary_markdown(self, title: str = "Sync") -> str:
        """A short report: counts, bytes, throughput and every failed key with its reason."""
        lines = [
            f"# {title}",
            "",
            f"Source `{self.source_url}` into `{self.dest_root}`.",
            "",
            "| new | changed | deleted | skipped | cold | size only | failed | bytes | seconds | MiB/s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {self.new} | {self.modified} | {self.deleted} | {self.skipped} | {self.skipped_cold} "
            f"| {len(self.size_only)} | {len(self.failed)} | {self.bytes_transferred} | {self.seconds:.2f} "
            f"| {self.mib_per_s:.1f} |",
        ]
        if self.delete_refused:
            lines += ["", "## Deletes refused", "", self.delete_refused]
        if self.failed:
            lines += ["", "## Failed", ""]
            lines += [f"- `{key!r}`: {reason}" for key, reason in self.failed[:200]]
            if len(self.failed) > 200:
                lines.append(f"- ... and {len(self.failed) - 200} more")
        listed = (("Skipped cold (archived, not restored)", self.cold), ("Checked by size only", self.size_only))
        for title, keys in listed:
            if keys:
                lines += ["", f"## {title}", ""]
                lines += [f"- `{key!r}`" for key in keys[:200]]
                if len(keys) > 200:
                    lines.append(f"- ... and {len(keys) - 200} more")
        return "\n".join(lines) + "\n"
