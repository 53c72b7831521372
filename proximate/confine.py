"""Reads stay inside the dataset they open: what a file or store may point at, checked before any byte is read.

A region's files arrive by sync from any bucket, so their content is untrusted. HDF5 (hence NetCDF-4) can make a
variable's bytes come from elsewhere: *external storage* (raw data in any named file, ``/etc/passwd`` or
``/proc/self/environ`` included), *external links* (an object of another file) and *virtual datasets* (a view
over other files' datasets). The HDF5 library follows all three as soon as the variable is read, and netCDF-C
follows external links when it opens the file. :func:`check_hdf5_references` refuses a file that uses any of them
to reach outside itself; a virtual dataset over its own file (source ``"."``) stays allowed.

A Zarr store is a folder: a chunk or metadata file inside it may be a symlink to another region's chunk or to
any file. :class:`ConfinedLocalStore` resolves each key it reads and refuses one that leaves the store or is not
a regular file (a FIFO would block the reader forever).

Both the reader (:mod:`proximate.io`) and the catalog's extractor use these checks, so a hostile file is refused
the same way by ``open_dataset`` and by a night's indexing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from zarr.storage import LocalStore

from proximate.regions import RegionPathError


class ExternalReferenceError(RegionPathError):
    """A dataset points outside itself (HDF5 external storage, link or virtual source; a Zarr key's symlink).

    Carries ``dataset`` (the file or store, as shown to the user) and ``target`` (what it points at).
    """

    def __init__(self, dataset: str, kind: str, target: str, where: str = "") -> None:
        self.dataset, self.kind, self.target, self.where = dataset, kind, target, where
        at = f" (object {where!r})" if where else ""
        super().__init__(f"{dataset}: {kind}{at} points at {target!r}, outside the dataset: refused")

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised on a worker and re-raised on the client: pickled with its fields, not its message.
        return type(self), (self.dataset, self.kind, self.target, self.where)


# -- HDF5 / NetCDF-4 ------------------------------------------------------------------------------------------


def is_hdf5(full: Path) -> bool:
    """Whether ``full`` is an HDF5 file (its signature at 0 or after a user block)."""
    from proximate.formats import _hdf5_user_block

    with open(full, "rb") as fh:
        return _hdf5_user_block(fh) is not None


def check_hdf5_references(full: Path, shown: str | None = None) -> None:
    """Refuse an HDF5 file whose objects read bytes from outside it.

    Walks every link of the file without following any (h5py's ``visititems_links``), so an external link is
    seen as a link and never opened; every dataset's creation properties tell its external storage and virtual
    sources.

    Args:
        full: The file, on this machine.
        shown: How to name it in the error (the region-relative path); ``full`` by default.

    Raises:
        ExternalReferenceError: Naming the file, the kind of reference, the object and its target.

    Examples:
        >>> check_hdf5_references(Path("/data/a/tas.nc"), "a:tas.nc")  # doctest: +SKIP
    """
    import h5py

    name = shown or str(full)
    with h5py.File(full, "r") as f:
        found: list[ExternalReferenceError] = []

        def visit(path: str, link: Any) -> None:
            if found:
                return
            if isinstance(link, h5py.ExternalLink):
                found.append(ExternalReferenceError(name, "HDF5 external link", f"{link.filename}:{link.path}", path))
                return
            if not isinstance(link, h5py.HardLink):
                return  # a soft link names an object of this file, visited through its hard link
            obj = f.get(path)
            if isinstance(obj, h5py.Dataset):
                problem = _dataset_reference(obj)
                if problem is not None:
                    found.append(ExternalReferenceError(name, problem[0], problem[1], path))

        f.visititems_links(visit)
        if found:
            raise found[0]


def _dataset_reference(ds: Any) -> tuple[str, str] | None:
    """(kind, target) of the first reference out of the file that dataset ``ds`` makes, ``None`` if none."""
    plist = ds.id.get_create_plist()
    count = plist.get_external_count()
    if count:
        target = plist.get_external(0)[0]
        return "HDF5 external storage", target.decode("utf-8", "replace") if isinstance(target, bytes) else str(target)
    if ds.is_virtual:
        for source in ds.virtual_sources():
            if source.file_name != ".":
                return "HDF5 virtual dataset source", f"{source.file_name}:{source.dset_name}"
    return None


def check_netcdf_file(full: Path, shown: str | None = None) -> None:
    """:func:`check_hdf5_references` for a NetCDF-4/HDF5 file; nothing to check for classic NetCDF.

    Args:
        full: The file.
        shown: Its name in errors.

    Raises:
        ExternalReferenceError: See :func:`check_hdf5_references`.
        NotRegularFileError: ``full`` is a FIFO, socket or device.

    Examples:
        >>> check_netcdf_file(Path("/data/a/classic.nc"))  # doctest: +SKIP
    """
    check_regular(full, shown)  # a file swapped for a FIFO since it was opened first would block the open below
    if is_hdf5(full):
        check_hdf5_references(full, shown)


# -- regular files ----------------------------------------------------------------------------------------------

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


class NotRegularFileError(ValueError):
    """A dataset path names a FIFO, socket or device: reading it could block forever or never end."""


def check_regular(full: Path, shown: str | None = None, mode: int | None = None) -> None:
    """Refuse what is neither a regular file nor a directory (before anything opens it: ``open`` on a FIFO blocks).

    Args:
        full: The path (symlinks followed).
        shown: Its name in the error.
        mode: Its ``st_mode`` if already known.

    Raises:
        NotRegularFileError: Naming the path and what it is.

    Examples:
        >>> check_regular(Path("/data/a/pipe.nc"), "a:pipe.nc")  # doctest: +SKIP
        Traceback (most recent call last):
        NotRegularFileError: a:pipe.nc is a FIFO (named pipe), not a regular file: refused
    """
    mode = os.stat(full).st_mode if mode is None else mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    raise NotRegularFileError(f"{shown or full} is {kind}, not a regular file: refused")


# -- Zarr -----------------------------------------------------------------------------------------------------


class ConfinedLocalStore(LocalStore):
    """A read-only :class:`zarr.storage.LocalStore` whose every read resolves its key first: a key that is (or
    passes through) a symlink leaving the store, or that names a FIFO or device, is refused.

    Examples:
        >>> zarr.open_group(ConfinedLocalStore("/data/a/t.zarr", read_only=True), mode="r")  # doctest: +SKIP
    """

    def _checked(self, key: str) -> None:
        root = Path(self.root)
        path = root / key
        try:
            real_root = root.resolve(strict=True)
            real = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise ExternalReferenceError(str(root), "Zarr key", f"{key} ({exc})") from None
        if real != real_root and real_root not in real.parents:
            raise ExternalReferenceError(str(root), f"Zarr key {key!r}", str(real))
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            return  # a missing chunk is the fill value; zarr says so itself
        check_regular(real, f"{root}/{key}", mode)

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        self._checked(key)
        return await super().get(key, prototype, byte_range)

    def get_sync(self, key: str, *, prototype: Any = None, byte_range: Any = None) -> Any:
        self._checked(key)
        return super().get_sync(key, prototype=prototype, byte_range=byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
        key_ranges = list(key_ranges)
        for key, _range in key_ranges:
            self._checked(key)
        return await super().get_partial_values(prototype, key_ranges)

    def with_read_only(self, read_only: bool = False) -> ConfinedLocalStore:
        return type(self)(self.root, read_only=read_only)
