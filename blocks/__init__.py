"""Prefect Blocks: typed, saved configuration. ``prefect block register -m blocks`` registers them all."""

from blocks.catalog import CatalogConfig
from blocks.cluster import RegionalCluster
from blocks.region import Region

__all__ = ["CatalogConfig", "Region", "RegionalCluster"]
