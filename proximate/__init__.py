"""proximate: run xarray/Dask work in the region that holds the data.

The names below are imported lazily so that ``import proximate`` stays cheap on schedulers and workers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "pool": "proximate.pools",
    "propagate_pools": "proximate.pools",
    "compute": "proximate.egress",
    "plan": "proximate.egress",
    "egress_budget": "proximate.egress",
    "EgressPlan": "proximate.egress",
    "EgressBudgetError": "proximate.egress",
    "open_dataset": "proximate.io",
    "open_table": "proximate.tables",
    "locality": "proximate.locality_report",
    "LocalityReport": "proximate.locality_report",
    "LocalRegionalCluster": "proximate.cluster",
    "RegionLinkError": "proximate.errors",
    "RegionUnavailableError": "proximate.errors",
    "open_from_catalog": "proximate.catalog",
    "RegionPath": "proximate.datasets",
    "CatalogId": "proximate.datasets",
    "parse_reference": "proximate.datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'proximate' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
