"""proximate's errors: the :class:`ProximateError` base, and the errors that cross process boundaries (defined here
so clients can unpickle what the scheduler raises).

Every error proximate raises on purpose (bad input, a part that failed and says which) derives from
:class:`ProximateError` as well as from the built-in class it always was (``ValueError``, ``RuntimeError``,
``OSError``), so ``except ValueError`` keeps catching it. The CLI prints such an error as one line and exits with
its :attr:`~ProximateError.exit_code`; anything else is a bug and gets a traceback.
"""

from __future__ import annotations


class ProximateError(Exception):
    """Base of every error proximate raises on purpose; its message names the thing that is wrong.

    Attributes:
        exit_code: The ``proximate`` command's exit status when this error ends it: 1 (something failed), or 2
            (bad input: :class:`ProximateInputError`).

    Examples:
        >>> class StoreDownError(ProximateError, RuntimeError):
        ...     pass
        >>> StoreDownError("s3://bucket: connection refused").exit_code
        1
    """

    exit_code: int = 1


class ProximateInputError(ProximateError, ValueError):
    """Bad input (an argument, a parameter, a file given by name): exit status 2, as argparse uses.

    Examples:
        >>> ProximateInputError("--sse-c-key-file k: no such file").exit_code
        2
    """

    exit_code = 2


class TableInputError(ProximateInputError):
    """A table workload cannot run as asked (a missing column, an expression not allowed, no rows...).

    Raised on workers and in the sandbox's children as well as on the client, hence defined here.

    Examples:
        >>> TableInputError("derived column 'x': 'a +' is not an expression").exit_code
        2
    """


class CrossRegionReadError(ProximateInputError):
    """One task would read files of several regions: no region can run it, so it is refused, never misrouted.

    Raised on the scheduler's behalf (the task fails with it before reading anything) and on the client by
    :func:`proximate.tables.merge` and :func:`proximate.plan` before anything is submitted.

    Examples:
        >>> str(CrossRegionReadError("merge", ("a", "b"), "merge-1f2e"))[:59]
        "merge reads data of regions a, b in one task ('merge-1f2e')"
    """

    def __init__(self, operation: str, regions: tuple[str, ...], key: str = "", hint: str = "") -> None:
        super().__init__(operation, regions, key, hint)
        self.operation = operation
        self.regions = tuple(regions)
        self.key = key
        self.hint = hint

    def __str__(self) -> str:
        task = f" ({self.key!r})" if self.key else ""
        hint = self.hint or (
            "no region can run it; give each side more than one partition (or use proximate.tables.merge) so that "
            "each read is a task of its own"
        )
        return f"{self.operation} reads data of regions {', '.join(self.regions)} in one task{task}: {hint}"


class RegionUnavailableError(ProximateError, RuntimeError):
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


class RegionLinkError(ProximateError, RuntimeError):
    """A task needs data from another region whose workers its own workers cannot reach, though both regions
    still reach the scheduler: the direct path between them is broken (Dask moves data only worker to worker,
    nothing relays it through the scheduler)."""

    def __init__(
        self,
        region: str,
        peer_region: str,
        key: str,
        seconds: float,
        worker: str = "",
        peer: str = "",
    ) -> None:
        super().__init__(region, peer_region, key, seconds, worker, peer)
        self.region = region
        self.peer_region = peer_region
        self.key = key
        self.seconds = seconds
        self.worker = worker
        self.peer = peer

    @property
    def link(self) -> str:
        """The broken path, named by its two regions in sorted order (the testbed's link name for them)."""
        return "-".join(sorted((self.region, self.peer_region)))

    def __str__(self) -> str:
        return (
            f"link {self.link} broken: region {self.region!r} cannot fetch data from region "
            f"{self.peer_region!r} (worker {self.worker} -> {self.peer}: every transfer failed for "
            f"{self.seconds:.0f} s) although both regions reach the scheduler; task {self.key!r} needs data "
            f"held only in {self.peer_region!r}. Restore the path between the regions, then resubmit"
        )
