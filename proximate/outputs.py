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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from proximate.datasets import RegionPath

#: Environment variable naming the folder relative ``output`` values go under.
RESULTS_ENV = "PROXIMATE_RESULTS"
#: Environment variable naming the deployment's home (catalog, results), as for the catalog's default.
HOME_ENV = "PROXIMATE_HOME"
#: What a result can be written as.
SUFFIXES = (".nc", ".zarr")


def results_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where results go unless an output says otherwise: ``PROXIMATE_RESULTS``, else ``results/`` under
    ``PROXIMATE_HOME``, else under the working directory; absolute, resolved in the calling process (the flow's),
    so a worker's temporary directory never receives them."""
    env = os.environ if environ is None else environ
    if env.get(RESULTS_ENV):
        return Path(env[RESULTS_ENV]).expanduser().absolute()
    return (Path(env.get(HOME_ENV) or os.getcwd()).expanduser() / "results").absolute()


def resolve_output(
    output: str,
    *,
    folder: bool = False,
    parameter: str = "output",
    environ: Mapping[str, str] | None = None,
    suffixes: tuple[str, ...] = SUFFIXES,
) -> str:
    """Check an ``output`` parameter and make it absolute, before any work.

    Args:
        output: A path (relative ones go under :func:`results_root`), ``file://`` path or ``s3://`` URL.
        folder: The output is a folder of per-dataset results (no suffix), not one file.
        parameter: The parameter's name, for the error.
        environ: The environment to read ``PROXIMATE_RESULTS``/``PROXIMATE_HOME`` from (``os.environ``).
        suffixes: The file suffixes the output may have (NetCDF and Zarr unless given; ``.json`` for tables,
            which are written locally only).

    Returns:
        The target: an absolute local path, or the ``s3://`` URL unchanged.

    Raises:
        ParameterError: empty, an unsupported scheme, a suffix other than ``.nc``/``.zarr`` (or one on a folder),
            or Zarr on S3 (which cannot be written atomically).
    """
    from proximate.analysis import ParameterError

    text = (output or "").strip()
    if not text:
        raise ParameterError(parameter, "is empty: give a file name (e.g. result.nc) or leave the default")
    if "://" in text and not text.startswith(("s3://", "file://")):
        raise ParameterError(parameter, f"{output!r} is not a local path or an s3:// URL")
    suffix = Path(text.rstrip("/")).suffix.lower()
    if folder:
        if text.startswith("s3://"):
            raise ParameterError(parameter, f"{output!r}: per-dataset results go to a local folder")
        if suffix in SUFFIXES:
            raise ParameterError(parameter, f"{output!r} is a folder for one file per dataset; drop {suffix!r}")
    elif suffix not in suffixes:
        wanted = " or ".join(suffixes) if suffixes != SUFFIXES else ".nc (NetCDF) or .zarr"
        raise ParameterError(parameter, f"{output!r} must end in {wanted}, not {suffix or 'nothing'!r}")
    elif text.startswith("s3://") and suffix not in SUFFIXES:
        raise ParameterError(parameter, f"{output!r}: a {suffix} result is written to a local path only")
    elif text.startswith("s3://") and suffix == ".zarr":
        raise ParameterError(parameter, f"{output!r}: Zarr cannot be written to S3 atomically; use .nc")
    if text.startswith("s3://"):
        return text
    path = Path(text.removeprefix("file://")).expanduser()
    return str(path if path.is_absolute() else results_root(environ) / path)


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
