"""The format-neutral view of a dataset's header, and the base class every format handler implements.

A handler turns one file (or store) into a :class:`Header`: global attributes, dimensions and variables, each
variable with its attributes, layout and a ``read`` that loads its (coordinate) values on demand. The extractor
(``proximate.catalog.extract``) only ever sees headers, so a new format is one new handler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

#: Coordinates with more values than this are sampled (:func:`read_limited`), whatever their dimensions.
MAX_COORD_VALUES = 4_000_000
#: Coordinates stored in more chunks than this are sampled too: each chunk is a file (Zarr) or a read.
MAX_CHUNKS_READ = 4096
#: Blocks a sampled 1-D coordinate is read in.
SAMPLE_BLOCKS = 64
#: Attributes kept per object (the file, a group, a variable); the rest are counted in a warning.
MAX_ATTRS = 200


@dataclass
class Var:
    """One variable of a header. ``group`` is its group path ("" at the root, "forecast/surface" below)."""

    attrs: dict[str, Any]
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    chunks: list[int] | None
    read: Callable[[], np.ndarray]
    numeric: bool
    group: str = ""
    #: Reads rows ``[slice]`` of the first dimension in full (``read`` samples huge 2-D coordinates); ``None``:
    #: the handler only reads whole variables.
    read_rows: Callable[[slice], np.ndarray] | None = None

    def read_block(self, rows: slice) -> np.ndarray | None:
        """Rows of the first dimension, every value of them; ``None`` if this handler can only sample them."""
        if self.read_rows is not None:
            return self.read_rows(rows)
        values = self.read()
        return values[rows] if values.shape == self.shape else None


@dataclass
class Header:
    """A dataset's header. Variables below the root are keyed ``group/name``; ``warnings`` collects what the
    handler had to skip (an attribute it could not decode) so the record can say so."""

    attrs: dict[str, Any]
    dims: dict[str, int]
    variables: dict[str, Var] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def lookup(self, var: Var, name: str) -> Var | None:
        """The variable an attribute of ``var`` names: CF searches the variable's own group, then its parents."""
        group = var.group
        while True:
            found = self.variables.get(qualified(group, name))
            if found is not None or not group:
                return found
            group = group.rpartition("/")[0]


def qualified(group: str, name: str) -> str:
    """A variable's or dimension's catalog name: its group path, then its own name."""
    return f"{group}/{name}" if group else name


class FormatHandler:
    """Reads one format's header. A handler implements:

    - ``name``: the record's ``format`` value (``"netcdf"``, ``"grib"``...);
    - ``read_header(full)``: a :class:`Header` and a ``close`` callable (called once the extractor is done with
      the header's ``read`` functions); raise with a message naming the file and what is wrong with it;
    - ``time_variables_are_decoded`` (optional): ``True`` if the header's time coordinates are already CF
      numbers with ``units`` ("hours since ..."), as every handler here produces them.
    """

    name: ClassVar[str] = ""

    def read_header(self, full: Path) -> tuple[Header, Callable[[], None]]:
        raise NotImplementedError


def decode(raw: Any, attrs: dict[str, Any]) -> np.ndarray:
    """Raw coordinate values as float64 with fill/missing values as NaN, then scale and offset (CF order)."""
    if isinstance(raw, np.ma.MaskedArray):
        arr = np.ma.filled(raw.astype(np.float64), np.nan)
    else:  # the usual case (reads are raw): skip the masked-array machinery, same values
        arr = np.array(raw, dtype=np.float64)
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            for fv in np.atleast_1d(np.asarray(attrs[key])).ravel():
                with contextlib.suppress(TypeError, ValueError):
                    arr[arr == float(fv)] = np.nan
    with contextlib.suppress(TypeError, ValueError):
        if "scale_factor" in attrs:
            arr = arr * float(np.asarray(attrs["scale_factor"]).ravel()[0])
        if "add_offset" in attrs:
            arr = arr + float(np.asarray(attrs["add_offset"]).ravel()[0])
    return arr


def read_limited(var: Any, read_all: Callable[[Any], Any] | None = None, chunks: Any = None) -> Any:
    """All of a coordinate, unless reading it all would cost too much: more than :data:`MAX_COORD_VALUES` values
    or :data:`MAX_CHUNKS_READ` chunks (a 716-byte NetCDF can declare 5e8 latitudes, a 220-byte Zarr 1e8 one-value
    chunks). Then a sample:

    - 1-D: :data:`SAMPLE_BLOCKS` contiguous blocks spread over the axis, the first and last among them (so a
      monotonic axis, the usual case, keeps its exact extremes);
    - 2-D: a strided sample plus its edges (where the extremes of a smooth curvilinear grid lie, except at a
      pole inside the grid, which the sample still catches), the edges strided too when their chunks are many;
    - more dimensions: a strided sample.

    Args:
        var: The variable (netCDF4 or zarr array: anything with ``shape`` and numpy indexing).
        read_all: How to read it whole (default ``var[...]``).
        chunks: Its chunk shape; ``None`` when contiguous (one chunk).

    Returns:
        The values, or the sample (flat; its size tells it from the whole).

    Examples:
        >>> read_limited(np.arange(10.0)).tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    """
    shape = tuple(int(n) for n in var.shape)
    chunk_shape = _chunk_shape(shape, chunks)
    if 0 in shape or (_size(shape) <= MAX_COORD_VALUES and n_chunks(shape, chunk_shape) <= MAX_CHUNKS_READ):
        return read_all(var) if read_all is not None else var[...]
    if len(shape) == 1:
        return _blocks(var, shape[0], chunk_shape[0])
    step = max(1, int(np.ceil((_size(shape) / MAX_COORD_VALUES) ** (1 / len(shape)))))
    # A (1, 5e8) grid is not square: the values a step gives are bounded, not the step (with slack for rounding).
    while (
        _strided_chunks(shape, chunk_shape, step) > MAX_CHUNKS_READ // 2
        or _strided_values(shape, step) > MAX_COORD_VALUES * 1.05
    ):
        step *= 2
    parts = [np.ma.ravel(var[(slice(None, None, step),) * len(shape)])]
    if len(shape) == 2:
        ny, nx = shape
        cy, cx = chunk_shape
        full_edges = 2 * (-(-nx // cx) + -(-ny // cy)) <= MAX_CHUNKS_READ // 2 and 2 * (nx + ny) <= MAX_COORD_VALUES
        edge = slice(None) if full_edges else slice(None, None, step)
        parts += [np.ma.ravel(var[0, edge]), np.ma.ravel(var[-1, edge]), np.ma.ravel(var[edge, 0])]
        parts += [np.ma.ravel(var[edge, -1])]
    return np.ma.concatenate(parts)


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _chunk_shape(shape: tuple[int, ...], chunks: Any) -> tuple[int, ...]:
    if not isinstance(chunks, (list, tuple)) or len(chunks) != len(shape):
        return tuple(max(1, n) for n in shape)  # contiguous: one chunk
    return tuple(max(1, int(c)) for c in chunks)


def n_chunks(shape: tuple[int, ...], chunks: Any) -> int:
    """How many chunks a variable of ``shape`` stored in ``chunks`` has (1 when contiguous).

    Args:
        shape: The variable's shape.
        chunks: Its chunk shape, or ``None``.

    Returns:
        The number of chunks.

    Examples:
        >>> n_chunks((100_000_000,), [1])
        100000000
    """
    chunk_shape = _chunk_shape(tuple(shape), chunks)
    return int(np.prod([-(-n // c) for n, c in zip(shape, chunk_shape, strict=True)], dtype=np.int64))


def _strided_chunks(shape: tuple[int, ...], chunks: tuple[int, ...], step: int) -> int:
    """Chunks a ``[::step, ::step...]`` read touches."""
    per_dim = [min(-(-n // c), -(-n // step)) for n, c in zip(shape, chunks, strict=True)]
    return int(np.prod(per_dim, dtype=np.int64))


def _strided_values(shape: tuple[int, ...], step: int) -> int:
    """Values a ``[::step, ::step...]`` read returns."""
    return int(np.prod([-(-n // step) for n in shape], dtype=np.int64))


def _blocks(var: Any, n: int, chunk: int) -> Any:
    """:data:`SAMPLE_BLOCKS` contiguous blocks of a 1-D variable, first and last included, within both caps."""
    per_block_chunks = max(1, MAX_CHUNKS_READ // SAMPLE_BLOCKS - 1)  # a block may straddle one chunk more
    length = max(1, min(MAX_COORD_VALUES // SAMPLE_BLOCKS, per_block_chunks * chunk, n))
    starts = sorted({int(s) for s in np.linspace(0, n - length, SAMPLE_BLOCKS)})
    return np.ma.concatenate([np.ma.ravel(var[s : s + length]) for s in starts])


def capped_attrs(attrs: dict[str, Any], where: str, warnings: list[str]) -> dict[str, Any]:
    """The first :data:`MAX_ATTRS` of ``attrs``; a warning counts the rest (20,000 attributes would make a 20 MB
    record).

    Args:
        attrs: The attributes, in the file's order.
        where: The object they belong to, for the warning.
        warnings: Where the warning goes.

    Returns:
        The attributes kept.

    Examples:
        >>> len(capped_attrs({str(i): i for i in range(1000)}, "the file", []))
        200
    """
    if len(attrs) <= MAX_ATTRS:
        return attrs
    warnings.append(f"{where} has {len(attrs)} attributes: the first {MAX_ATTRS} kept")
    return dict(list(attrs.items())[:MAX_ATTRS])


def safe_attrs(names: Any, get: Callable[[str], Any], where: str, warnings: list[str]) -> dict[str, Any]:
    """Every attribute ``get`` can decode, up to :data:`MAX_ATTRS`; one it cannot (a compound or otherwise exotic
    type) is left out with a warning naming it, instead of failing the whole file."""
    out: dict[str, Any] = {}
    names = list(names)
    if len(names) > MAX_ATTRS:
        warnings.append(f"{where} has {len(names)} attributes: the first {MAX_ATTRS} kept")
        names = names[:MAX_ATTRS]
    for name in names:
        try:
            out[name] = get(name)
        except Exception as exc:
            warnings.append(f"attribute {name!r} of {where} cannot be read ({type(exc).__name__}: {exc}): skipped")
    return out
