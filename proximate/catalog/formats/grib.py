"""GRIB editions 1 and 2 through cfgrib and ecCodes (the ``eccodeslib`` binary wheel).

A GRIB file may hold several hypercubes (levels of different types, different step types) that no single
Dataset can hold: each becomes a group named after what sets it apart ("isobaricInhPa", "surface/accum"), so
two ``t`` fields stay two variables.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proximate.catalog.formats.base import FormatHandler, Header
from proximate.catalog.formats.xarray_backed import add_dataset

#: cfgrib writes a ``.idx`` index beside the file unless told not to: never write into a region's tree.
NO_INDEX = {"indexpath": ""}


def import_cfgrib():
    """cfgrib, imported after the libraries its ecCodes would otherwise shadow (see :mod:`proximate.native`)."""
    from proximate.native import load_in_safe_order

    load_in_safe_order()
    try:
        import cfgrib
    except ImportError:
        from proximate.formats import UnsupportedFormatError

        raise UnsupportedFormatError("GRIB needs the grib extra: pip install 'proximate[grib]'", "grib") from None
    return cfgrib


class GribHandler(FormatHandler):
    name = "grib"

    def read_header(self, full: Path) -> tuple[Header, Callable[[], None]]:
        datasets = import_cfgrib().open_datasets(
            str(full), backend_kwargs=dict(NO_INDEX), decode_times=False, decode_timedelta=False, cache=False
        )
        if not datasets:
            raise ValueError(f"{full.name} holds no GRIB message ecCodes can decode")
        header = Header(attrs=dict(datasets[0].attrs), dims={})
        header.attrs.pop("history", None)  # cfgrib's own note with the time of reading: not the file's history
        names = _group_names(datasets) if len(datasets) > 1 else [""]
        for ds, group in zip(datasets, names, strict=True):
            add_dataset(ds, group, header)

        def close() -> None:
            for ds in datasets:
                ds.close()

        return header, close


def _group_names(datasets: list) -> list[str]:
    """A distinct group name per hypercube from its GRIB keys (level type, step type), numbered if still equal."""
    names = []
    for ds in datasets:
        first = next(iter(ds.data_vars.values()), None)
        attrs = first.attrs if first is not None else {}
        parts = [str(attrs[k]) for k in ("GRIB_typeOfLevel", "GRIB_stepType") if k in attrs]
        names.append("/".join(parts) or "fields")
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}/{seen[name]}")
    return out
