"""Regions: their names, the Dask resource that marks their workers, and paths under their roots.

A dataset is addressed as a :class:`proximate.datasets.RegionPath`: a region and a path relative to that region's
root. Only a process *in* the region knows the root (the FSx mount in production, a folder here), so the path is
resolved where it is used: a task that lands in the wrong region fails loudly instead of reading whatever happens
to sit at the same absolute path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from proximate import config
from proximate.errors import ProximateInputError

#: Environment variables a regional worker is started with.
REGION_ENV = config.env_var("worker.region")
ROOT_ENV = config.env_var("worker.root")

#: Dask resource name prefix, as in dask-worker-pools: a worker of region R offers ``pool-R``.
POOL_PREFIX = "pool-"

_REGION_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class RegionError(ProximateInputError):
    """A region name or region configuration is unusable."""


class RegionPathError(ProximateInputError):
    """A region-relative path would escape its region's root."""


def validate_region_name(name: str) -> str:
    """Region names become Dask resource names and worker names: keep them DNS-label-like."""
    if not isinstance(name, str) or not _REGION_NAME.match(name):
        raise RegionError(
            f"invalid region name {name!r}: use lower-case letters, digits and '-' "
            "(1-63 characters, not starting or ending with '-'), e.g. 'eu-west-2'"
        )
    return name


def pool_resource(region: str) -> str:
    """The Dask resource that marks a worker of ``region``."""
    return POOL_PREFIX + validate_region_name(region)


def region_of_resource(resource: str) -> str | None:
    """Inverse of :func:`pool_resource`; ``None`` for resources that are not pools."""
    if resource.startswith(POOL_PREFIX):
        return resource[len(POOL_PREFIX) :]
    return None


def check_relative_path(path: str | os.PathLike[str]) -> PurePosixPath:
    """Refuse paths that could leave the root: absolute, ``..``, backslashes, NUL, empty."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise RegionPathError(f"region path must be text, got {type(text).__name__}")
    if text == "" or text.strip() == "":
        raise RegionPathError("region path is empty")
    if "\x00" in text:
        raise RegionPathError(f"region path {text!r} contains a NUL byte")
    if "\\" in text:
        raise RegionPathError(f"region path {text!r} contains a backslash")
    pure = PurePosixPath(text)
    if pure.is_absolute():
        raise RegionPathError(f"region path {text!r} is absolute; give it relative to the region root")
    if any(part == ".." for part in pure.parts):
        raise RegionPathError(f"region path {text!r} contains '..' and would escape the region root")
    return pure


def current_region() -> str | None:
    """The region of this process, if it is a regional worker."""
    return config.get_str("worker.region")


def local_root(region: str) -> Path:
    """This process's root for ``region``; fails unless this process belongs to that region."""
    here = current_region()
    root = config.get_str("worker.root")
    if here != region or not root:
        where = f"region {here!r}" if here else "a process outside every region"
        raise FileNotFoundError(
            f"data of region {region!r} is not reachable from {where}: "
            f"the task ran outside region {region!r} (is it pinned with pool({region!r})?)"
        )
    return Path(root)


def resolve(region: str, path: str | os.PathLike[str], *, must_exist: bool = True) -> Path:
    """Turn (region, relative path) into a local path, here, on a worker of that region."""
    rel = check_relative_path(path)
    try:
        root = local_root(region)
    except FileNotFoundError as exc:  # say which file, not only which region: a misrouted read names both
        raise FileNotFoundError(f"cannot read {str(rel)!r} of region {region!r}: {exc}") from None
    full = (root / rel).resolve()
    real_root = root.resolve()
    if full != real_root and real_root not in full.parents:
        # A symlink inside the root pointing outside it.
        raise RegionPathError(f"region path {region}:{rel} resolves outside the root of region {region!r}")
    if must_exist and not full.exists():
        raise FileNotFoundError(f"no file {str(rel)!r} in region {region!r} (root {root})")
    return full
