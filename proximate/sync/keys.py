"""Which object keys may become files under a region root.

An object store accepts keys a file system must never see: ``..`` segments, absolute paths, control bytes,
components longer than a file name may be. A key is mapped to a path only after every rule here passed, so a
hostile bucket cannot write outside the root, over the sync's own bookkeeping, or under an ambiguous name.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from proximate.regions import RegionPathError, check_relative_path

#: Folder under the destination root holding the manifest; never data, never synced or indexed.
STATE_DIR = ".proximate-sync"
#: Prefix of in-flight temporary files; the next run deletes leftovers, so no data file may carry it.
TEMP_PREFIX = ".proximate-tmp-"
#: Linux NAME_MAX and PATH_MAX, in bytes.
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4095


class HostileKeyError(RegionPathError):
    """An object key that must not become a file under the root."""


def safe_relative_path(rel: str) -> str:
    """Return ``rel`` unchanged if it is a safe, unambiguous path below the root; raise otherwise.

    Normalising is refused rather than applied (``a//b``, ``./a``): two keys must never land on one file.
    """
    try:
        pure = check_relative_path(rel)
    except RegionPathError as exc:
        raise HostileKeyError(str(exc)) from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel):
        raise HostileKeyError(f"key path {rel!r} contains control characters")
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:
        raise HostileKeyError(f"key path {rel!r} is not valid UTF-8") from None
    parts = rel.split("/")
    if rel.endswith("/"):
        raise HostileKeyError(f"key path {rel!r} ends with '/' (a folder marker, not a file)")
    if any(p in ("", ".") for p in parts) or str(pure) != rel:
        raise HostileKeyError(f"key path {rel!r} has empty or '.' segments; it would alias another path")
    if len(encoded) > MAX_PATH_BYTES:
        raise HostileKeyError(f"key path {rel[:80]!r}... is {len(encoded)} bytes, over the {MAX_PATH_BYTES}-byte limit")
    for part in parts:
        size = len(part.encode("utf-8"))
        if size > MAX_COMPONENT_BYTES:
            raise HostileKeyError(
                f"key path {rel[:80]!r}... has a {size}-byte component, over the {MAX_COMPONENT_BYTES}-byte limit"
            )
    if parts[0] == STATE_DIR:
        raise HostileKeyError(f"key path {rel!r} is inside the sync's own folder {STATE_DIR!r}")
    if any(p.startswith(TEMP_PREFIX) for p in parts):
        raise HostileKeyError(f"key path {rel!r} uses the reserved temporary-file prefix {TEMP_PREFIX!r}")
    return rel


def is_data_path(rel: str) -> bool:
    """False for the sync's own files (manifest, temporaries): indexers skip those."""
    parts = PurePosixPath(rel).parts
    return bool(parts) and parts[0] != STATE_DIR and not any(p.startswith(TEMP_PREFIX) for p in parts)
