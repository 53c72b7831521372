"""Native libraries that must load in a given order when GRIB support (the ``grib`` extra) is installed.

ecCodes' binary wheel (eccodeslib) preloads eckit's libraries into the process's *global* symbol scope, among them
its own copies of SQLite and PROJ. A library loaded after them binds to those copies instead of its own: Python's
``sqlite3`` then lacks ``RETURNING`` (the SQLite catalog fails), PROJ cannot open its database, and pyproj's PROJ
shares eckit's static objects, so the process aborts at exit ("double free or corruption"). Loaded first, both keep
their own. xarray lists its backends (cfgrib's among them) on the first ``open_dataset`` of a path, so a process
that may open files with xarray calls :func:`load_in_safe_order` before that.
"""

from __future__ import annotations


def load_in_safe_order() -> None:
    """Load Python's SQLite and pyproj's PROJ before anything can load ecCodes (a no-op once done)."""
    import sqlite3  # noqa: F401 - the order is the point

    import pyproj._context  # noqa: F401 - loads pyproj's own libproj
