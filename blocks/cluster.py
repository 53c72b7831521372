"""The ``RegionalCluster`` block: which multi-region Dask cluster a flow runs on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prefect.blocks.core import Block
from prefect_dask import DaskTaskRunner
from pydantic import Field, model_validator

from blocks.region import DOCS, LOGO, Region
from proximate.autoscale import RegionBounds, autoscaled, check_scaling, parse_bounds
from proximate.cluster import LocalRegionalCluster, RegionSpec, TLSFiles
from proximate.scheduler_plugin import DEFAULT_NO_WORKERS_TIMEOUT

LOCAL = "local"
#: The RegionalCluster block every flow runs on unless told otherwise.
DEFAULT_CLUSTER_BLOCK = "proximate-cluster"


class ClusterTaskRunner(DaskTaskRunner):
    """prefect-dask's DaskTaskRunner, able to connect to a scheduler that serves no dashboard.

    prefect-dask logs ``client.dashboard_link`` as soon as it has connected, and distributed's ``dashboard_link``
    raises ``KeyError('dashboard')`` for a scheduler without an HTTP server, which is proximate's default
    (``proximate.no_http``: no HTTP server unless a dashboard is asked for). The client is connected and kept by
    then: asked again, prefect-dask returns it without that line.
    """

    @property
    def client(self):
        try:
            return super().client
        except KeyError as exc:
            if exc.args != ("dashboard",):
                raise
            return super().client


class RegionalCluster(Block):
    """The multi-region Dask cluster: either the address of a running scheduler (production, optionally TLS),
    or 'local' to start a scheduler and per-region workers on this machine for the length of a flow run."""

    _block_type_name = "Proximate Regional Cluster"
    _logo_url = LOGO
    _documentation_url = DOCS

    address: str = Field(
        default=LOCAL,
        description="Scheduler address (tcp://host:port or tls://host:port), or 'local' to start a cluster.",
    )
    regions: list[str] = Field(
        default_factory=list,
        description="For 'local': names of the saved Region blocks whose roots the local workers serve.",
    )
    workers_per_region: int = Field(default=2, ge=1, description="For 'local': worker processes per region.")
    threads_per_worker: int = Field(default=1, ge=1, description="For 'local': threads per worker process.")
    no_workers_timeout: float = Field(
        default=DEFAULT_NO_WORKERS_TIMEOUT,
        gt=0,
        le=3600,
        description="For 'local': seconds a task may wait for a region without live workers before it errs.",
    )
    max_workers: int | None = Field(
        default=None,
        ge=1,
        description="For 'local': scale each region's workers on its own backlog up to this many (unset: a fixed "
        "workers_per_region).",
    )
    min_workers: int = Field(default=1, ge=0, description="For 'local' with max_workers: the fewest per region.")
    max_workers_per_region: dict[str, int] = Field(
        default_factory=dict, description="For 'local' with max_workers: region name to its own maximum."
    )
    min_workers_per_region: dict[str, int] = Field(
        default_factory=dict, description="For 'local' with max_workers: region name to its own minimum."
    )
    scale_down_after: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="For 'local' with max_workers: seconds a region must need fewer workers before one retires.",
    )
    tls_ca_file: str | None = Field(default=None, description="CA certificate file for a tls:// scheduler.")
    tls_cert: str | None = Field(default=None, description="Client certificate file for a tls:// scheduler.")
    tls_key: str | None = Field(default=None, description="Client private key file for a tls:// scheduler.")

    @model_validator(mode="after")
    def _consistent(self) -> RegionalCluster:
        if self.address != LOCAL and not self.address.startswith(("tcp://", "tls://")):
            raise ValueError(f"address must be 'local', tcp://... or tls://..., got {self.address!r}")
        tls = [self.tls_ca_file, self.tls_cert, self.tls_key]
        if any(tls) and not all(tls):
            raise ValueError("TLS needs tls_ca_file, tls_cert and tls_key together")
        if self.address.startswith("tls://") and not all(tls):
            raise ValueError("a tls:// scheduler needs tls_ca_file, tls_cert and tls_key")
        scaling = self.max_workers_per_region or self.min_workers_per_region
        if self.address != LOCAL and (self.max_workers is not None or scaling):
            raise ValueError(
                "max_workers scales a 'local' cluster; a running scheduler's regions scale with its own backend (ECS)"
            )
        if scaling and self.max_workers is None:
            raise ValueError("min/max_workers_per_region need max_workers")
        # the same check as `proximate cluster up`'s options, naming the fields
        check_scaling(
            min_workers=self.min_workers, max_workers=self.max_workers, scale_down_after=self.scale_down_after
        )
        if self.max_workers is not None:
            self.bounds([*self.max_workers_per_region, *self.min_workers_per_region])  # numbers; names when run
        return self

    def bounds(self, region_names: list[str]) -> dict[str, RegionBounds] | None:
        """Each region's scaling bounds, or ``None`` for fixed workers; refuses bad values naming them."""
        if self.max_workers is None:
            return None
        return parse_bounds(
            region_names,
            [str(self.min_workers), *(f"{r}={n}" for r, n in self.min_workers_per_region.items())],
            [str(self.max_workers), *(f"{r}={n}" for r, n in self.max_workers_per_region.items())],
        )

    def tls(self) -> TLSFiles | None:
        if self.tls_ca_file and self.tls_cert and self.tls_key:
            return TLSFiles(self.tls_ca_file, self.tls_cert, self.tls_key)
        return None

    @contextlib.contextmanager
    def task_runner(self, region_blocks: list[Region] | None = None) -> Iterator[DaskTaskRunner]:
        """A DaskTaskRunner (a :class:`ClusterTaskRunner`) on this cluster; for 'local', the cluster lives as long
        as the context."""
        tls = self.tls()
        client_kwargs = {"security": tls.security()} if tls else {}
        if self.address != LOCAL:
            yield ClusterTaskRunner(address=self.address, client_kwargs=client_kwargs)
            return
        blocks = region_blocks if region_blocks is not None else [Region.load(n) for n in self.regions]
        if not blocks:
            raise ValueError("a local RegionalCluster needs at least one Region")
        specs = [RegionSpec(b.name, Path(b.root)) for b in blocks]
        bounds = self.bounds([s.name for s in specs])  # before anything starts
        workers = self.workers_per_region if bounds is None else {r: b.minimum for r, b in bounds.items()}
        with LocalRegionalCluster(
            specs,
            workers_per_region=workers,
            threads_per_worker=self.threads_per_worker,
            no_workers_timeout=self.no_workers_timeout,
            tls=tls,
        ) as cluster:
            if bounds is None:
                yield ClusterTaskRunner(address=cluster.address, client_kwargs=client_kwargs)
                return
            with autoscaled(cluster, bounds, scale_down_after=self.scale_down_after):
                yield ClusterTaskRunner(address=cluster.address, client_kwargs=client_kwargs)
