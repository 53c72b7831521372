"""Where results may go, and writing them atomically: a failed run leaves no partial output, a successful one
replaces the old.

Where: relative outputs under the results root (``..`` refused), absolute paths and ``s3://`` URLs only under
roots the operator allows (``PROXIMATE_OUTPUT_ROOTS``, empty by default), never through a symbolic link out of
those roots, never inside a region's data root (:class:`OutputPolicy`). What: an existing target is replaced only
if a flow wrote it, unless ``overwrite`` (:func:`check_replaceable`); every result carries the mark that says so.

Local paths: write beside the target under a temporary name, then rename (a directory for Zarr). ``s3://``:
NetCDF only, uploaded as one object (a PUT or a completed multipart upload is all-or-nothing); Zarr on S3 is
many objects and cannot appear atomically, so it is refused rather than half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from proximate import config
from proximate.datasets import RegionPath

#: Environment variable naming the folder relative ``output`` values go under.
RESULTS_ENV = config.env_var("results")
#: Environment variable naming the deployment's home (catalog, results), as for the catalog's default.
HOME_ENV = config.env_var("home")
#: Environment variable listing the absolute folders and ``s3://`` prefixes outputs may name (separated by commas,
#: as ``:`` is in every URL); empty by default: only the results root.
OUTPUT_ROOTS_ENV = config.env_var("output-roots")
#: What a result can be written as.
SUFFIXES = (".nc", ".zarr")
#: The mark of a result the flows wrote: a NetCDF global attribute, a JSON top-level key (see check_replaceable).
MARK = "proximate_result"
MARK_VALUE = "written by a proximate flow"
#: The marker file inside a Zarr store the flows wrote.
STORE_MARKER = ".proximate-result"
#: A JSON file larger than this is never taken for a result (it is not read to find out).
MAX_MARKED_JSON = 64 * 2**20


def results_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where results go unless an output says otherwise: ``PROXIMATE_RESULTS``, else ``results/`` under
    ``PROXIMATE_HOME``, else under the working directory; absolute, resolved in the calling process (the flow's),
    so a worker's temporary directory never receives them."""
    results = config.get_str("results", environ)
    if results:
        return Path(results).expanduser().absolute()
    return (Path(config.get_str("home", environ) or os.getcwd()).expanduser() / "results").absolute()


def _s3_prefix(url: str) -> str:
    """An ``s3://`` URL as a folder prefix (``s3://bucket/prefix/``), so ``s3://b/data`` never admits ``s3://b/data2``."""
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class OutputPolicy:
    """Where a run may write: its results root, the roots an operator allowed, never a region's data.

    Args:
        results_root: Where relative outputs go (:func:`results_root`); always allowed.
        allowed: Absolute local folders and ``s3://`` prefixes absolute outputs may name (``PROXIMATE_OUTPUT_ROOTS``;
            empty by default, so an absolute path outside the results root, or any ``s3://`` URL, is refused).
        forbidden: What no output may touch even when allowed, by what it is (e.g. ``"region a"`` -> its data root
            or its source bucket prefix).

    Examples:
        >>> policy = OutputPolicy.from_env({"PROXIMATE_RESULTS": "/srv/results"}, forbidden={"region a": "/data/a"})
        >>> policy.allowed
        ()
    """

    results_root: Path
    allowed: tuple[str, ...] = ()
    forbidden: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, forbidden: Mapping[str, str] | None = None
    ) -> OutputPolicy:
        """The policy of this process: its results root, ``PROXIMATE_OUTPUT_ROOTS`` (absolute folders and
        ``s3://`` prefixes, separated by commas) and, among the forbidden roots, this process's own region root if it
        has one.

        Raises:
            ParameterError: naming ``PROXIMATE_OUTPUT_ROOTS`` for an entry that is neither absolute nor ``s3://``.
        """
        from proximate.analysis import ParameterError

        allowed = []
        for entry in config.get_list("output-roots", environ):
            if entry.startswith("s3://"):
                allowed.append(_s3_prefix(entry))
            elif Path(entry).expanduser().is_absolute():
                allowed.append(str(Path(entry).expanduser()))
            else:
                raise ParameterError(OUTPUT_ROOTS_ENV, f"{entry!r} is neither an absolute folder nor an s3:// prefix")
        refused = dict(forbidden or {})
        root = config.get_str("worker.root", environ)
        if root:
            refused.setdefault(f"region {config.get_str('worker.region', environ) or '(this process)'}", root)
        return cls(results_root(environ), tuple(allowed), refused)

    # -- the checks ----------------------------------------------------------------------------------------------

    def check_s3(self, url: str, parameter: str) -> None:
        """Refuse an ``s3://`` output outside the allowed prefixes or inside a forbidden one."""
        from proximate.analysis import ParameterError

        for what, root in self.forbidden.items():
            if root.startswith("s3://") and url.startswith(_s3_prefix(root)):
                raise ParameterError(parameter, f"{url!r} is inside {what} ({root}): outputs never go there")
        if not any(url.startswith(prefix) for prefix in self.allowed if prefix.startswith("s3://")):
            raise ParameterError(parameter, f"{url!r}: s3:// outputs go only under the prefixes {OUTPUT_ROOTS_ENV}"
                                 f" allows ({self._allowed_text()})")  # fmt: skip

    def check_local(self, path: Path, parameter: str) -> Path:
        """Refuse a local output outside the results root and the allowed folders, one a symbolic link takes out of
        them, or one inside (or holding) a region's data root.

        Args:
            path: The output, absolute and without ``..`` (what :func:`resolve_output` made of it).
            parameter: The parameter's name, for the error.

        Returns:
            ``path`` with its symbolic links resolved (what the write really touches).
        """
        from proximate.analysis import ParameterError

        roots = [self.results_root, *(Path(a) for a in self.allowed if not a.startswith("s3://"))]
        base = next((root for root in roots if path == root or root in path.parents), None)
        if base is None:
            raise ParameterError(parameter, f"{str(path)!r} is outside the results root {self.results_root} and the"
                                 f" folders {OUTPUT_ROOTS_ENV} allows ({self._allowed_text()})")  # fmt: skip
        real, real_base = path.resolve(), base.resolve()
        if real != real_base and real_base not in real.parents:
            raise ParameterError(
                parameter, f"{str(path)!r} resolves to {real}, outside {base}, through a symbolic link: refused"
            )
        for what, root in self.forbidden.items():
            if root.startswith("s3://") or "://" in root:
                continue
            data = Path(root).expanduser().absolute().resolve()
            if real == data or data in real.parents or real in data.parents:
                raise ParameterError(
                    parameter, f"{str(path)!r} is inside (or holds) the data root of {what} ({root}): refused"
                )
        return real

    def _allowed_text(self) -> str:
        return ", ".join(self.allowed) or "none: it is empty"


def resolve_output(
    output: str,
    *,
    folder: bool = False,
    parameter: str = "output",
    environ: Mapping[str, str] | None = None,
    suffixes: tuple[str, ...] = SUFFIXES,
    policy: OutputPolicy | None = None,
    overwrite: bool = False,
) -> str:
    """Check an ``output`` parameter and make it absolute, before any work.

    A relative path goes under the results root and may not contain ``..``; an absolute one (``~`` expanded) or an
    ``s3://`` URL only under a root ``policy`` allows; a symbolic link may not take it out of its root; no output
    goes inside a region's data root. An existing target the flows did not write is refused unless ``overwrite``
    (see :func:`check_replaceable`).

    Args:
        output: A path (relative ones go under :func:`results_root`), ``file://`` path or ``s3://`` URL.
        folder: The output is a folder of per-dataset results (no suffix), not one file.
        parameter: The parameter's name, for the error.
        environ: The environment to read ``PROXIMATE_RESULTS``/``PROXIMATE_HOME``/``PROXIMATE_OUTPUT_ROOTS`` from
            (``os.environ``) when no ``policy`` is given.
        suffixes: The file suffixes the output may have (NetCDF and Zarr unless given; ``.json`` for tables,
            which are written locally only).
        policy: Where outputs may go (:meth:`OutputPolicy.from_env` of ``environ`` unless given).
        overwrite: Replace an existing target even if the flows did not write it.

    Returns:
        The target: an absolute local path, or the ``s3://`` URL unchanged.

    Raises:
        ParameterError: empty, an unsupported scheme, a suffix other than ``.nc``/``.zarr`` (or one on a folder),
            Zarr on S3 (which cannot be written atomically), ``..``, a root not allowed, a symbolic link leaving
            its root, a region's data, or an existing target the flows did not write (without ``overwrite``).

    Examples:
        >>> resolve_output("sub/x.nc", environ={"PROXIMATE_RESULTS": "/srv/results"})
        '/srv/results/sub/x.nc'
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
    policy = policy or OutputPolicy.from_env(environ)
    if text.startswith("s3://"):
        if ".." in text.split("/"):
            raise ParameterError(parameter, f"{output!r} contains '..'")
        policy.check_s3(text, parameter)
        return text
    raw = Path(text.removeprefix("file://"))
    if "\x00" in text:
        raise ParameterError(parameter, f"{output!r} contains a NUL byte")
    if ".." in raw.parts:
        raise ParameterError(parameter, f"{output!r} contains '..': outputs stay under their root")
    path = raw.expanduser()
    path = path if path.is_absolute() else policy.results_root / path
    policy.check_local(path, parameter)
    if not folder:
        check_replaceable(path, overwrite, parameter)
    return str(path)


def check_replaceable(path: Path, overwrite: bool, parameter: str = "output") -> None:
    """Refuse to replace what the flows did not write, unless ``overwrite``.

    The rule, the same for files and stores: nothing at ``path`` (not even a dangling link) is fine; a result the
    flows wrote is replaced (a NetCDF file whose global attribute, a JSON file whose top-level key, or a Zarr
    store whose marker file ``.proximate-result`` says so); anything else (an input someone put there, a folder, a
    symbolic link) only with ``overwrite=True``. Replacing is atomic either way: the old one stays whole until the
    new one is complete.

    Raises:
        ParameterError: naming ``parameter`` and the path.

    Examples:
        >>> check_replaceable(Path("/nonexistent/x.nc"), overwrite=False)
    """
    from proximate.analysis import ParameterError

    if overwrite or not os.path.lexists(path) or written_by_flows(path):
        return
    raise ParameterError(
        parameter,
        f"{str(path)!r} already exists and was not written by a proximate flow: refusing to replace it"
        " (pass overwrite=True to replace it, or choose another name)",
    )


def written_by_flows(path: Path) -> bool:
    """Whether ``path`` (not followed if a link) holds a result the flows wrote (see :func:`check_replaceable`)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return path.suffix == ".zarr" and stat.S_ISREG(_lstat_mode(path / STORE_MARKER))
    if not stat.S_ISREG(st.st_mode):
        return False
    try:
        if path.suffix == ".json":
            if st.st_size > MAX_MARKED_JSON:
                return False
            with open(path, "rb") as fh:
                data = json.loads(fh.read(MAX_MARKED_JSON))
            return isinstance(data, dict) and data.get(MARK) == MARK_VALUE
        import netCDF4

        with netCDF4.Dataset(path, "r") as nc:
            return getattr(nc, MARK, None) == MARK_VALUE
    except (OSError, ValueError, RuntimeError):  # not NetCDF, not JSON: not ours
        return False


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def result_path(folder: str, where: RegionPath, suffix: str = ".nc") -> str:
    """The file for one dataset's result in ``folder``: its region and path joined by ``__``, so results of
    datasets with the same path in two regions never overwrite each other."""
    return f"{folder.rstrip('/')}/{where.region}__{where.path.replace('/', '__')}{suffix}"


def output_format(target: str) -> str:
    return "zarr" if target.rstrip("/").endswith(".zarr") else "netcdf"


def write_result(
    obj: xr.Dataset | xr.DataArray,
    target: str,
    *,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    policy: OutputPolicy | None = None,
    parameter: str = "output",
) -> str:
    """Write ``obj`` (computed or lazy) to ``target`` atomically, marked as a result; returns the target.

    Args:
        obj: The result.
        target: From :func:`resolve_output` (or :func:`result_path`).
        storage_options: For an ``s3://`` target.
        overwrite: Replace an existing target the flows did not write.
        policy: Checked again here, just before writing: a link or a folder may have appeared since the run began.
        parameter: The parameter the target came from, for errors.

    Raises:
        ParameterError: the target is no longer allowed, or holds something the flows did not write.

    Examples:
        >>> write_result(xr.Dataset({"t": ("x", [1.0])}), "/srv/results/t.nc")  # doctest: +SKIP
        '/srv/results/t.nc'
    """
    ds = obj.to_dataset() if isinstance(obj, xr.DataArray) else obj
    ds = ds.copy(deep=False)
    ds.attrs[MARK] = MARK_VALUE
    fmt = output_format(target)
    if target.startswith("s3://"):
        if fmt == "zarr":
            raise ValueError(f"cannot write Zarr to {target} atomically; use a .nc output on S3")
        if policy is not None:
            policy.check_s3(target, parameter)
        return _write_s3_netcdf(ds, target, storage_options or {})
    if "://" in target and not target.startswith("file://"):
        raise ValueError(f"unsupported output {target!r}: give a local path or an s3:// URL")
    path = Path(target.removeprefix("file://")).expanduser()
    _check_before_write(path, overwrite, policy, parameter)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if fmt == "zarr":
            ds.to_zarr(tmp, mode="w", consolidated=True)
            (tmp / STORE_MARKER).write_text(MARK_VALUE + "\n")
            _check_before_write(path, overwrite, policy, parameter)  # the compute took a while: check again
            if os.path.lexists(path):
                old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
        else:
            ds.to_netcdf(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            _check_before_write(path, overwrite, policy, parameter)
            os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
    return str(path)


def _check_before_write(path: Path, overwrite: bool, policy: OutputPolicy | None, parameter: str) -> None:
    if policy is not None:
        policy.check_local(path, parameter)
    check_replaceable(path, overwrite, parameter)


def _remove(path: Path) -> None:
    """Remove a file, link or folder we made aside (a link itself, never what it points at)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_s3_netcdf(ds: xr.Dataset, target: str, storage_options: dict[str, Any]) -> str:
    import fsspec

    fs, _, (path,) = fsspec.get_fs_token_paths(target, storage_options=storage_options)
    with tempfile.TemporaryDirectory(prefix="proximate-out-") as tmpdir:
        local = Path(tmpdir) / "result.nc"
        ds.to_netcdf(local)
        fs.put_file(str(local), path)  # one object: visible whole or not at all
    return target


def write_json(
    obj: Any,
    target: str,
    *,
    overwrite: bool = False,
    policy: OutputPolicy | None = None,
    parameter: str = "output",
) -> str:
    """Write ``obj`` as JSON to a local path atomically (temporary name, fsync, rename); returns the path.

    A dict is written with the result mark (a top-level ``proximate_result`` key) beside its own keys, so a later
    run may replace it (see :func:`check_replaceable`); ``obj`` itself is not changed.

    Args:
        obj: What to write (JSON-serialisable).
        target: From :func:`resolve_output`.
        overwrite: Replace an existing target the flows did not write.
        policy: Checked again just before writing.
        parameter: The parameter the target came from, for errors.

    Raises:
        ParameterError: the target is no longer allowed, or holds something the flows did not write.

    Examples:
        >>> write_json({"n": 1}, "/srv/results/n.json")  # doctest: +SKIP
        '/srv/results/n.json'
    """
    path = Path(target.removeprefix("file://")).expanduser()
    if "://" in target and not target.startswith("file://"):
        raise ValueError(f"unsupported output {target!r}: give a local path")
    payload = {**obj, MARK: MARK_VALUE} if isinstance(obj, dict) else obj
    _check_before_write(path, overwrite, policy, parameter)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x") as fh:
            json.dump(payload, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _check_before_write(path, overwrite, policy, parameter)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)
