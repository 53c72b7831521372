"""What kind of dataset sits at a path, told by its content (never its name), and its size and modification time.

Shared by the reader (``proximate.io``) and the catalog's extractor. A file's first bytes decide: NetCDF classic
(``CDF``), HDF5 (its signature at 0 or after a user block of 512, 1024, 2048... bytes, as the HDF5 library
looks for it), GRIB (also behind a WMO bulletin heading, as ecCodes finds it), TIFF/GeoTIFF; HDF4 and UM PP /
fieldsfiles are recognised but not supported, so their catalog record can say exactly that.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Literal

from proximate.errors import ProximateInputError

#: Bytes in which GRIB is looked for behind a WMO bulletin heading: the heading is a line or two (about 40 bytes),
#: so this bounds the scan of a file that is not GRIB while leaving room for a long one.
WMO_SCAN_BYTES = 4096
#: A WMO abbreviated heading (Manual on the GTS, WMO-No. 386) at the start of a file: optionally the FTP file
#: format's 8-digit message length and 2-digit format identifier, the starting line (SOH, CR CR LF, channel
#: sequence number), then ``T1T2A1A2ii CCCC YYGGgg [BBB]`` and the end of its line. Line ends are CR CR LF on
#: the GTS; copies of bulletins often have plain LF.
WMO_HEADING = re.compile(
    rb"\A(?:\d{8}\d{2})?(?:\x01\r*\n)?(?:\d{3,5}\r*\n)?[A-Z]{4}\d{2} [A-Z]{4} \d{6}(?: [A-Z]{3})?[ \t]*\r*\n"
)
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata", ".zarray")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Formats proximate reads (extracts and opens).
SUPPORTED = ("netcdf", "zarr", "grib", "geotiff", "parquet", "csv")
#: Formats recognised by their content but not read, with the name a user knows them by.
UNSUPPORTED = {"hdf4": "HDF4", "um-pp": "UM PP / fieldsfile"}

Format = Literal["netcdf", "zarr", "grib", "geotiff", "parquet", "csv"]


class UnsupportedFormatError(ProximateInputError):
    """A file proximate recognises (or not) but cannot read; ``kind`` is its format name or ``"unknown"``."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def is_zarr_store(full: Path) -> bool:
    return full.is_dir() and any((full / m).exists() for m in ZARR_MARKERS)


def _hdf5_user_block(fh) -> int | None:
    """Offset of the HDF5 superblock (0 or a power of two from 512 on), or ``None`` if the file is not HDF5."""
    offset = 0
    size = os.fstat(fh.fileno()).st_size
    while offset + 8 <= size:
        fh.seek(offset)
        if fh.read(8) == HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _sniff(head: bytes) -> str | None:
    """The format a file's first bytes announce, ``None`` if they announce none we know."""
    if head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02", b"\x05"):
        return "netcdf"
    if head[:4] == b"GRIB":
        return "grib"
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF and BigTIFF, either byte order
        return "geotiff"
    if head[:4] == b"\x0e\x03\x13\x01":
        return "hdf4"
    # UM PP: a Fortran record of the 64-word (256-byte) or 64-bit (512-byte) lookup header; a fieldsfile starts
    # with its fixed-length header's data-set format version 20.
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") or head[:8] == b"\x00\x00\x00\x00\x00\x00\x00\x14":
        return "um-pp"
    return None


def detect_format(full: Path) -> str:
    """The format of the dataset at ``full`` from its content: one of :data:`SUPPORTED`, a key of
    :data:`UNSUPPORTED`, ``"empty"`` or ``"unknown"``. A FIFO, socket or device is refused before it is opened
    (opening a FIFO for reading blocks until a writer comes): :class:`proximate.confine.NotRegularFileError`."""
    from proximate.confine import check_regular

    mode = os.stat(full).st_mode
    if stat.S_ISDIR(mode):
        return "zarr" if is_zarr_store(full) else "unknown"
    check_regular(full, full.name, mode)
    with open(full, "rb") as fh:
        head = fh.read(8)
        if not head:
            return "empty"
        kind = _sniff(head)
        if kind is None and _grib_behind_wmo_heading(fh):
            kind = "grib"
        if kind is None and _hdf5_user_block(fh) is not None:
            kind = "netcdf"
        if kind is None and _looks_like_csv(fh):
            kind = "csv"
    return kind or "unknown"


def _grib_behind_wmo_heading(fh) -> bool:
    """Whether the file is GRIB sent as WMO bulletins: a WMO abbreviated heading, then ``GRIB`` within the first
    :data:`WMO_SCAN_BYTES` bytes. ecCodes (and so cfgrib) scans for the messages itself and skips the headings;
    the scan is bounded, and needs the heading, so that a text file that merely mentions GRIB is not taken for
    it."""
    fh.seek(0)
    head = fh.read(WMO_SCAN_BYTES)
    heading = WMO_HEADING.match(head)
    return heading is not None and head.find(b"GRIB", heading.end()) >= 0


def _looks_like_csv(fh) -> bool:
    """Text whose first lines are comma-separated with the same number (at least two) of fields each, the first
    line a header of names: what a CSV table looks like (a README or a log does not)."""
    import csv
    import io

    fh.seek(0)
    try:
        text = fh.read(64 * 1024).decode("utf-8")
    except UnicodeDecodeError:
        return False
    lines = text.splitlines()[:20]
    if len(lines) < 2 or "\x00" in text:
        return False
    rows = list(csv.reader(io.StringIO("\n".join(lines[:-1] if len(lines) == 20 else lines))))
    widths = {len(r) for r in rows if r}
    return len(widths) == 1 and widths.pop() >= 2 and all(c.strip() and not _is_number(c) for c in rows[0])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def dataset_format(full: Path) -> Format:
    """The supported format of the dataset at ``full``; :class:`UnsupportedFormatError` saying why otherwise."""
    kind = detect_format(full)
    if kind in SUPPORTED:
        return kind  # type: ignore[return-value]
    if kind in UNSUPPORTED:
        raise UnsupportedFormatError(f"format not supported: {full.name} is {UNSUPPORTED[kind]}", kind)
    if kind == "empty":
        raise UnsupportedFormatError(f"{full.name} is empty (0 bytes)", kind)
    if full.is_dir():
        raise UnsupportedFormatError(f"{full} is a directory but not a Zarr store", kind)
    with open(full, "rb") as fh:
        magic = fh.read(8)
    raise UnsupportedFormatError(
        f"format not recognised: {full.name} is none of NetCDF, HDF5, Zarr, GRIB, GeoTIFF, Parquet, CSV"
        f" (starts with {magic!r})",
        kind,
    )


def stat_dataset(full: Path) -> tuple[int, int]:
    """(size in bytes, modification time in ns): a Zarr store's are the sum and the latest of its files."""
    if not full.is_dir():
        st = full.stat()
        return st.st_size, st.st_mtime_ns
    size, mtime = 0, full.stat().st_mtime_ns
    for dirpath, _dirs, files in os.walk(full):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return size, mtime


def fingerprint(full: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) as the index compares them: :func:`stat_dataset`'s, or, for a path that cannot be
    followed (a symlink loop, a dangling link, a store with one), the entry's own (``lstat``); ``None`` if
    nothing is there any more. The listing and an error record use the same, so a hostile path is not
    extracted again every night.

    Args:
        full: The dataset's path.

    Returns:
        The fingerprint, or ``None``.

    Examples:
        >>> fingerprint(Path("/nonexistent")) is None
        True
    """
    try:
        return stat_dataset(full)
    except OSError:
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns
