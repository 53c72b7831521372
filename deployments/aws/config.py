"""The operator's YAML config of a production deployment on AWS, checked before anything is synthesized.

Everything the stacks need comes from this file (no AWS lookups), so ``synth`` runs without credentials and two
syntheses of one file give the same templates.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The commercial AWS regions (from the AWS general reference). A region missing here is refused: a typo such as
# ``us-east1`` would otherwise only fail at deploy time, after the other regions' stacks were created.
AWS_REGIONS = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2",
        "af-south-1",
        "ap-east-1", "ap-east-2", "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
        "ap-southeast-4", "ap-southeast-5", "ap-southeast-7", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        "ca-central-1", "ca-west-1",
        "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2", "eu-west-3", "eu-south-1", "eu-south-2",
        "eu-north-1",
        "il-central-1", "me-south-1", "me-central-1", "mx-central-1", "sa-east-1",
    }
)  # fmt: skip

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# AWS's published Lustre throughputs for PERSISTENT_2, in MB/s per TiB of storage.
_FSX_THROUGHPUTS = (125, 250, 500, 1000)


class ConfigError(ValueError):
    """A deployment config that cannot be synthesized; the message names the region and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Site(_Strict):
    """What the client and the worker regions share: where they run and their network."""

    aws_region: str
    cidr: ipaddress.IPv4Network
    # Explicit zones: a lookup would need credentials, and not every region has an "a" and a "b" zone.
    availability_zones: tuple[str, ...] = ()

    @field_validator("aws_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value not in AWS_REGIONS:
            raise ValueError(f"unknown AWS region {value!r}")
        return value

    @field_validator("cidr", mode="before")
    @classmethod
    def _strict_cidr(cls, value):
        try:
            network = ipaddress.IPv4Network(str(value), strict=True)
        except ValueError as exc:
            raise ValueError(f"not an IPv4 network in CIDR notation: {value!r} ({exc})") from None
        if not network.is_private:
            raise ValueError(f"{value} is not a private range (RFC 1918)")
        if not 16 <= network.prefixlen <= 24:
            raise ValueError(f"{value}: a VPC's CIDR must be a /16 to a /24")
        return network

    @model_validator(mode="after")
    def _zones_in_region(self):
        for zone in self.availability_zones:
            if not (zone.startswith(self.aws_region) and len(zone) == len(self.aws_region) + 1):
                raise ValueError(f"availability zone {zone!r} is not a zone of {self.aws_region}")
        return self

    @property
    def zones(self) -> list[str]:
        """The zones the VPC spans: the configured ones, or the region's ``a`` and ``b``."""
        return list(self.availability_zones) or [f"{self.aws_region}a", f"{self.aws_region}b"]


class RegionConfig(_Site):
    """One worker region: its data, its file system and its workers."""

    source_url: str
    min_workers: int = Field(1, ge=0)
    max_workers: int = Field(8, ge=1)
    instance_type: str = "m6i.xlarge"
    threads_per_worker: int = Field(4, ge=1)
    worker_memory_mib: int = Field(14336, ge=512)
    fsx_storage_gib: int = 1200
    fsx_throughput_mbps_per_tib: int = 125
    # How the bucket reaches /fsx. "link": a data repository association imports it (objects load on first read;
    # with auto_import, new and changed objects appear as they land). "sync": no association; the nightly sync
    # (`nightly_cron`, UTC, on the region's Region block) mirrors it with its manifest and run lock (flock).
    ingest: Literal["link", "sync"] = "link"
    auto_import: bool = True
    nightly_cron: str | None = None

    @field_validator("source_url")
    @classmethod
    def _s3_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/([^\s]*/)?", value):
            raise ValueError(f"{value!r} is not s3://bucket/ or s3://bucket/prefix/ (ending in /)")
        return value

    @field_validator("fsx_storage_gib")
    @classmethod
    def _lustre_size(cls, value: int) -> int:
        # PERSISTENT_2 storage comes in 1.2 TiB and then 2.4 TiB steps.
        if value != 1200 and (value < 2400 or value % 2400):
            raise ValueError(f"{value}: FSx for Lustre PERSISTENT_2 takes 1200 or a multiple of 2400 GiB")
        return value

    @field_validator("fsx_throughput_mbps_per_tib")
    @classmethod
    def _lustre_throughput(cls, value: int) -> int:
        if value not in _FSX_THROUGHPUTS:
            raise ValueError(f"{value}: PERSISTENT_2 throughput is one of {_FSX_THROUGHPUTS} MB/s per TiB")
        return value

    @model_validator(mode="after")
    def _nightly_only_for_sync(self):
        if self.ingest == "sync" and not self.nightly_cron:
            raise ValueError("ingest 'sync' needs nightly_cron (when the nightly sync runs)")
        if self.ingest == "link" and self.nightly_cron:
            # the sync would rewrite what the association imports, at the same paths
            raise ValueError("nightly_cron is for ingest 'sync'; with 'link' the association imports the bucket")
        return self

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) is greater than max_workers ({self.max_workers})")
        return self

    @property
    def bucket(self) -> str:
        """The source bucket's name."""
        return self.source_url[len("s3://") :].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The source prefix inside the bucket ("" for the whole bucket, else ending in ``/``)."""
        return self.source_url[len("s3://") :].split("/", 1)[1]


class PrefectConfig(_Strict):
    """Where the flows' API lives: a self-hosted server on ECS with RDS PostgreSQL, or Prefect Cloud."""

    mode: Literal["self-hosted", "cloud"] = "self-hosted"
    # Prefect Cloud: the workspace's API URL, and the Secrets Manager secret (in the client region) holding the key.
    api_url: str | None = None
    api_key_secret_name: str | None = None
    work_pool: str = "proximate-ecs"
    database_instance_type: str = "t4g.small"

    @model_validator(mode="after")
    def _cloud_needs_api(self):
        if self.mode == "cloud" and not (self.api_url and self.api_key_secret_name):
            raise ValueError("mode 'cloud' needs api_url and api_key_secret_name")
        return self


class ClientConfig(_Site):
    """The client region: the scheduler, the autoscaler, the catalog and Prefect."""

    scheduler_cpu: int = 2048
    scheduler_memory_mib: int = 8192
    catalog_instance_type: str = "r6g.large.search"
    catalog_instance_count: int = Field(2, ge=1)
    catalog_volume_gib: int = Field(100, ge=10)


class DeploymentConfig(_Strict):
    """The whole deployment, as the operator's YAML file gives it."""

    name: str = "proximate"
    # The AWS account every stack deploys into (cross-region references need it spelled out).
    account: str = Field(pattern=r"^\d{12}$")
    # The image every service runs; ``{aws_region}`` is replaced by each stack's region (one ECR replica each).
    image: str
    scheduler_port: int = 8786
    # Ports workers and nannies listen on, for the security groups. `proximate worker` has no --worker-port or
    # --nanny-port yet, so they bind port 0 and the kernel picks from its ephemeral range (Linux: 32768-60999).
    worker_ports: tuple[int, int] = (32768, 60999)
    client: ClientConfig
    regions: dict[str, RegionConfig]
    prefect: PrefectConfig = PrefectConfig()
    log_retention_days: int = 30

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r}: lower-case letters, digits and '-', starting with a letter")
        return value

    @field_validator("regions")
    @classmethod
    def _region_names(cls, value: dict[str, RegionConfig]) -> dict[str, RegionConfig]:
        if not value:
            raise ValueError("at least one worker region is needed")
        for name in value:
            if not _NAME.match(name) or name == "client":
                raise ValueError(f"region name {name!r}: lower-case letters, digits and '-' (and not 'client')")
        return value

    @model_validator(mode="after")
    def _networks(self):
        sites: list[tuple[str, _Site]] = [("client", self.client), *self.regions.items()]
        for i, (name_a, a) in enumerate(sites):
            for name_b, b in sites[i + 1 :]:
                if a.aws_region == b.aws_region and a.cidr == b.cidr:
                    raise ValueError(
                        f"regions {name_a!r} and {name_b!r} are both {a.aws_region} with cidr {a.cidr}: "
                        "one VPC cannot be two regions"
                    )
                if a.cidr.overlaps(b.cidr):
                    raise ValueError(
                        f"cidr of region {name_a!r} ({a.cidr}) overlaps cidr of region {name_b!r} ({b.cidr}): "
                        "peered VPCs need disjoint ranges"
                    )
        low, high = self.worker_ports
        if not 1024 <= low < high <= 65535 or self.scheduler_port in range(low, high + 1):
            raise ValueError(f"worker_ports {self.worker_ports}: a range above 1023 without scheduler_port")
        return self

    def image_in(self, aws_region: str) -> str:
        """The image URI a stack in ``aws_region`` pulls."""
        return self.image.replace("{aws_region}", aws_region)


def _location(loc: tuple) -> str:
    """``('regions', 'era5', 'min_workers')`` as "region 'era5', field 'min_workers'"."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "regions":
        where = f"region {parts[1]!r}"
        rest = [p for p in parts[2:] if not p.startswith("function-")]
        return f"{where}, field {'.'.join(rest)!r}" if rest else where
    if parts and parts[0] == "client":
        rest = parts[1:]
        return f"region 'client', field {'.'.join(rest)!r}" if rest else "region 'client'"
    return f"field {'.'.join(parts)!r}" if parts else "the config"


def parse_config(data: dict, source: str = "config") -> DeploymentConfig:
    """Check a parsed config and return it as models.

    Args:
        data: the YAML document as Python objects.
        source: what to call it in errors (the file name).

    Returns:
        The checked config.

    Raises:
        ConfigError: naming the region and field of every problem found.

    Examples:
        >>> cfg = parse_config({"account": "123456789012", "image": "img:1",
        ...     "client": {"aws_region": "eu-west-2", "cidr": "10.0.0.0/16"},
        ...     "regions": {"era5": {"aws_region": "us-east-1", "cidr": "10.1.0.0/16",
        ...                          "source_url": "s3://bucket/era5/"}}})
        >>> cfg.regions["era5"].prefix
        'era5/'
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top, got {type(data).__name__}")
    try:
        return DeploymentConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                message = "missing (required)"
            lines.append(f"{_location(error['loc'])}: {message}")
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def load_config(path: str | Path) -> DeploymentConfig:
    """Read and check an operator's YAML config.

    Args:
        path: the YAML file.

    Returns:
        The checked config.

    Raises:
        ConfigError: the file is missing, not YAML, or a value is refused (region and field named).

    Examples:
        >>> load_config("deployments/aws/example.yaml").client.aws_region
        'eu-west-2'
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {exc}") from None
    return parse_config(data, str(path))
