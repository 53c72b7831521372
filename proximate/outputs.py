"""Writing results atomically: a failed run leaves no partial output, a successful one replaces the old.

Local paths: write beside the target under a temporary name, then rename (a directory for Zarr). ``s3://``:
NetCDF only, uploaded as one object (a PUT or a completed multipart upload is all-or-nothing); Zarr on S3 is
many objects and cannot appear atomically, so it is refused rather than half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import xarray as xr

from proximate.datasets import RegionPath


def result_path(folder: str, where: RegionPath, suffix: str = ".nc") -> str:
    """The file for one dataset's result in ``folder``: its region and path joined by ``__``, so results of
    datasets with the same path in two regions never overwrite each other."""
    return f"{folder.rstrip('/')}/{where.region}__{where.path.replace('/', '__')}{suffix}"


def output_format(target: str) -> str:
    return "zarr" if target.rstrip("/").endswith(".zarr") else "netcdf"


def write_result(obj: xr.Dataset | xr.DataArray, target: str, *, storage_options: dict[str, Any] | None = None) -> str:
    """Write ``obj`` (computed or lazy) to ``target`` atomically; returns the target."""
    ds = obj.to_dataset() if isinstance(obj, xr.DataArray) else obj
    fmt = output_format(target)
    if target.startswith("s3://"):
        if fmt == "zarr":
            raise ValueError(f"cannot write Zarr to {target} atomically; use a .nc output on S3")
        return _write_s3_netcdf(ds, target, storage_options or {})
    if "://" in target and not target.startswith("file://"):
        raise ValueError(f"unsupported output {target!r}: give a local path or an s3:// URL")
    path = Path(target.removeprefix("file://")).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if fmt == "zarr":
            ds.to_zarr(tmp, mode="w", consolidated=True)
            if path.exists():
                old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        else:
            ds.to_netcdf(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
    return str(path)


def _write_s3_netcdf(ds: xr.Dataset, target: str, storage_options: dict[str, Any]) -> str:
    import fsspec

    fs, _, (path,) = fsspec.get_fs_token_paths(target, storage_options=storage_options)
    with tempfile.TemporaryDirectory(prefix="proximate-out-") as tmpdir:
        local = Path(tmpdir) / "result.nc"
        ds.to_netcdf(local)
        fs.put_file(str(local), path)  # one object: visible whole or not at all
    return target


def write_json(obj: Any, target: str) -> str:
    """Write ``obj`` as JSON to a local path atomically (temporary name, fsync, rename); returns the path."""
    import json

    path = Path(target.removeprefix("file://")).expanduser()
    if "://" in target and not target.startswith("file://"):
        raise ValueError(f"unsupported output {target!r}: give a local path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)
