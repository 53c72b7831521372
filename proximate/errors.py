"""Errors that cross process boundaries: defined here so clients can unpickle what the scheduler raises."""

from __future__ import annotations


class RegionUnavailableError(RuntimeError):
    """A task needs a region that has no live worker (for longer than the bound), or that does not exist."""

    def __init__(self, region: str, key: str, timeout: float, known: tuple[str, ...] | None = None) -> None:
        super().__init__(region, key, timeout, known)
        self.region = region
        self.key = key
        self.timeout = timeout
        self.known = known

    def __str__(self) -> str:
        if self.known is not None:
            return (
                f"unknown region {self.region!r}: task {self.key!r} is pinned to it, but this cluster has "
                f"regions {', '.join(self.known) or '(none)'}"
            )
        return (
            f"region {self.region!r} has no live workers: task {self.key!r} waited {self.timeout:g} s for a "
            f"worker with resource 'pool-{self.region}' (start one with "
            f"`proximate worker --region {self.region} ...`)"
        )
