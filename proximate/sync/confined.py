"""The sync's file-system access that never follows a symbolic link out of its root.

A region's root is written by the sync and read (and sometimes written) by others: a folder of it replaced by a
link, or a link planted where the sync keeps its state, must never make the sync write, truncate or delete a file
outside the root. So:

- the state folder ``.proximate-sync`` must be a real folder (:func:`state_folder`), and its files are opened with
  ``O_NOFOLLOW`` (:func:`open_state`, :func:`read_state`);
- deletes (and the checks before them) go through :class:`ConfinedRoot`, which walks a path's folders one by one
  from an open descriptor of the root, each opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to its parent, and
  then looks at and removes the file relative to its folder's descriptor: no component can be a link, and a
  folder swapped for a link between the check and the delete is not followed either. The folders a run walks
  stay open while the walk stays in them (keys come sorted), so a run opens each folder once, not once per file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from proximate.regions import RegionPathError
from proximate.sync.keys import STATE_DIR

#: Flags of every open of a folder under the root: a folder, never a link to one.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkRefusedError(RegionPathError):
    """A symbolic link where the sync keeps its state or its data: the sync does not follow it."""


def _link_error(path: Path, what: str) -> SymlinkRefusedError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return SymlinkRefusedError(f"{path} is a symbolic link{target}: {what}; the sync does not follow it")


def state_folder(root: str | os.PathLike[str], *, create: bool = True) -> Path:
    """The root's state folder (``.proximate-sync``), created if missing, refused if it is a link.

    Args:
        root: The sync's destination root (itself may be a link: the operator chose it).
        create: Create the folder when it is missing.

    Returns:
        The folder's path.

    Raises:
        SymlinkRefusedError: it is a symbolic link (the manifest, journal, locks and backlog would land wherever
            it points), or not a folder.

    Examples:
        >>> state_folder("/data/region-a")  # doctest: +SKIP
        PosixPath('/data/region-a/.proximate-sync')
    """
    folder = Path(root) / STATE_DIR
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        return folder
    if stat.S_ISLNK(mode):
        raise _link_error(folder, "the sync keeps its manifest, journal, locks and backlog only inside the root")
    if not stat.S_ISDIR(mode):
        raise SymlinkRefusedError(f"{folder} is not a folder: the sync keeps its state there; move it away")
    return folder


def open_state(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` a state file without following a link in its place.

    Raises:
        SymlinkRefusedError: ``path`` is a symbolic link (opening it would write or truncate its target).
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path, "the sync's state files are never links") from None
        raise


def read_state(path: Path) -> bytes | None:
    """A state file's bytes (``None`` when it does not exist), refusing a link in its place."""
    try:
        fd = open_state(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


class ConfinedRoot:
    """Look at and remove files below a root through folder descriptors, never through a link.

    Use as a context manager; keys are ``/``-separated paths relative to the root. Folders are opened once per
    stretch of keys in the same folder (walk the keys in sorted order to open each folder once).

    Args:
        root: The root (opened once, following it if it is a link: that is the operator's choice).

    Examples:
        >>> with ConfinedRoot("/data/region-a") as tree:  # doctest: +SKIP
        ...     tree.unlink("daily/tas_2024.nc")
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._fds: list[int] = []  # the root's, then one per folder of ``self._parts``
        self._parts: list[str] = []
        self._pruned: set[str] = set()  # folders to try to remove when the walk leaves them

    def __enter__(self) -> ConfinedRoot:
        self._fds = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._leave(0)
        os.close(self._fds.pop())

    def _leave(self, depth: int) -> None:
        """Close the folders below ``depth``, removing those a prune asked for if they are empty."""
        while len(self._parts) > depth:
            name = self._parts.pop()
            os.close(self._fds.pop())
            key = "/".join([*self._parts, name])
            if key in self._pruned:
                self._pruned.discard(key)
                try:
                    os.rmdir(name, dir_fd=self._fds[-1])
                except OSError:
                    continue
                if self._parts:
                    self._pruned.add("/".join(self._parts))

    def folder(self, rel: str) -> tuple[int, str]:
        """The descriptor of ``rel``'s folder and ``rel``'s last name.

        Raises:
            SymlinkRefusedError: a folder on the way is a symbolic link.
            FileNotFoundError, NotADirectoryError: a folder on the way is missing or is not a folder.
        """
        *parts, name = rel.split("/")
        same = 0
        while same < min(len(parts), len(self._parts)) and parts[same] == self._parts[same]:
            same += 1
        self._leave(same)
        for part in parts[same:]:
            try:
                fd = os.open(part, DIR_FLAGS, dir_fd=self._fds[-1])
            except OSError as exc:
                where = self.root.joinpath(*self._parts, part)
                if exc.errno == errno.ELOOP:
                    raise _link_error(where, f"a folder under {self.root} was replaced by a link") from None
                if exc.errno == errno.ENOTDIR and stat.S_ISLNK(os.lstat(part, dir_fd=self._fds[-1]).st_mode):
                    raise _link_error(where, f"a folder under {self.root} was replaced by a link") from None
                raise
            self._fds.append(fd)
            self._parts.append(part)
        return self._fds[-1], name

    def lstat(self, rel: str) -> os.stat_result | None:
        """``rel``'s own status (a link's, not its target's); ``None`` if it, or a real folder on its way, is
        missing.

        Raises:
            SymlinkRefusedError: a folder on the way is a symbolic link.
        """
        try:
            fd, name = self.folder(rel)
            return os.lstat(name, dir_fd=fd)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def unlink(self, rel: str, *, prune: bool = True) -> None:
        """Remove the file ``rel`` (a link itself, never its target); with ``prune``, its folders too once the walk
        leaves them empty.

        Raises:
            SymlinkRefusedError: a folder on the way is a symbolic link (nothing is removed).
        """
        fd, name = self.folder(rel)
        os.unlink(name, dir_fd=fd)
        if prune and self._parts:
            self._pruned.add("/".join(self._parts))
