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

#: 2-D auxiliary coordinates bigger than this are read with a stride (plus their full edges).
MAX_COORD_VALUES = 4_000_000


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


def read_limited(var: Any, read_all: Callable[[Any], Any] | None = None) -> Any:
    """All of a coordinate, unless it is huge: then a strided sample plus its full edges (where the extremes
    of a smooth curvilinear grid lie, except at a pole inside the grid, which the sample still catches)."""
    shape = tuple(var.shape)
    if int(np.prod(shape, dtype=np.int64)) <= MAX_COORD_VALUES or len(shape) != 2:
        return read_all(var) if read_all is not None else var[...]
    ny, nx = shape
    step = int(np.ceil(np.sqrt(ny * nx / MAX_COORD_VALUES)))
    parts = [np.ma.ravel(var[::step, ::step]), np.ma.ravel(var[0, :]), np.ma.ravel(var[-1, :])]
    parts += [np.ma.ravel(var[:, 0]), np.ma.ravel(var[:, -1])]
    return np.ma.concatenate(parts)


def safe_attrs(names: Any, get: Callable[[str], Any], where: str, warnings: list[str]) -> dict[str, Any]:
    """Every attribute ``get`` can decode; one it cannot (a compound or otherwise exotic type) is left out with a
    warning naming it, instead of failing the whole file."""
    out: dict[str, Any] = {}
    for name in names:
        try:
            out[name] = get(name)
        except Exception as exc:
            warnings.append(f"attribute {name!r} of {where} cannot be read ({type(exc).__name__}: {exc}): skipped")
    return out
