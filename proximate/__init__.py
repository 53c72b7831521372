"""proximate: run xarray/Dask work in the region that holds the data.

Kept cheap to import: the public helpers load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_from_catalog"]

_LAZY = {"open_from_catalog": "proximate.catalog"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'proximate' has no attribute {name!r}")
