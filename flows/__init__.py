"""Prefect flows: the entrypoints ``prefect.yaml`` deploys."""

from proximate.native import load_in_safe_order

# Flow processes open files with xarray, which lists its backends (cfgrib's among them, with the grib extra):
# SQLite and PROJ must be loaded before ecCodes can shadow them.
load_in_safe_order()
