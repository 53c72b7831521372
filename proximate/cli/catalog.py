"""``proximate catalog export-stac``: the dataset catalog as a static STAC catalog."""

from __future__ import annotations

import argparse
from typing import Any

from proximate.cli.common import add_command


def register(subparsers: Any) -> None:
    """Add ``catalog`` to ``subparsers`` (the ``proximate`` parser's), ``run`` its function."""
    catalog = subparsers.add_parser("catalog", help="the dataset catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    add_command(
        catalog_sub,
        "export-stac",
        run_export_stac,
        help="write the catalog as a static STAC catalog (one collection per region) into DIR",
        description="Every record as a STAC Item (footprint, time span, the file as region:path, status and reason), "
        "one Collection per region, under DIR/catalog.json; the catalog is PROXIMATE_CATALOG's unless --catalog.",
        arguments={
            "dir": "the directory to write (created; existing files of the same names replaced)",
            "--catalog": "a SQLite file or an OpenSearch URL (default: PROXIMATE_CATALOG)",
        },
    )


def run_export_stac(args: argparse.Namespace) -> int:
    """Write the catalog (``--catalog``, else ``PROXIMATE_CATALOG``'s) as STAC under ``args.dir``; print its path.

    Args:
        args: the parsed ``catalog export-stac`` arguments.

    Returns:
        0.
    """
    from proximate.catalog import CatalogSettings
    from proximate.catalog.stac import export_stac

    # --catalog replaces only the URL: the credentials variables (PROXIMATE_CATALOG_USERNAME...) still apply.
    with CatalogSettings.from_env(location=args.catalog).open() as catalog:
        path = export_stac(catalog, args.dir)
    print(path)
    return 0
