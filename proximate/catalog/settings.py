"""Which catalog a run uses: :class:`CatalogSettings`, decided once in the process that starts the run.

A relative SQLite path is made absolute when the settings are made, in that process: passed on to a task that
runs elsewhere (a Dask worker's temporary working directory), it still names the same file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

if TYPE_CHECKING:
    from proximate.catalog.base import Catalog

#: Where the default catalog lives, relative to the working directory (PROXIMATE_HOME for deployments).
DEFAULT_SQLITE_PATH = "catalog/proximate.sqlite"
#: The OpenSearch alias searches go through, unless configured.
DEFAULT_INDEX = "proximate-datasets"
#: Environment variable naming the default catalog: a SQLite file path or an http(s):// OpenSearch URL.
CATALOG_ENV = "PROXIMATE_CATALOG"


@dataclass(frozen=True)
class CatalogSettings:
    """A catalog backend and how to reach it (the ``CatalogConfig`` block's fields, resolved)."""

    backend: Literal["sqlite", "opensearch"] = "sqlite"
    #: For sqlite: the database file, absolute.
    sqlite_path: str = DEFAULT_SQLITE_PATH
    opensearch_url: str | None = None
    index: str = DEFAULT_INDEX
    username: str | None = None
    password: SecretStr | None = None
    aws_sigv4_region: str | None = None
    verify_certs: bool = True
    ca_certs: str | None = None

    def __post_init__(self) -> None:
        if self.backend == "sqlite":
            object.__setattr__(self, "sqlite_path", str(Path(self.sqlite_path).expanduser().absolute()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatalogSettings:
        """The default catalog: ``PROXIMATE_CATALOG`` (a SQLite file or an OpenSearch URL), else
        :data:`DEFAULT_SQLITE_PATH` under the working directory."""
        where = (os.environ if environ is None else environ).get(CATALOG_ENV) or DEFAULT_SQLITE_PATH
        if where.startswith(("http://", "https://")):
            return cls(backend="opensearch", opensearch_url=where)
        return cls(backend="sqlite", sqlite_path=where)

    def describe(self) -> str:
        """Where the catalog is, for logs and artifacts (never the password)."""
        if self.backend == "sqlite":
            return f"sqlite: {self.sqlite_path}"
        return f"opensearch: {self.opensearch_url} ({self.index})"

    def open(self) -> Catalog:
        """The backend, connected; close it (or use it as a context manager) when done."""
        from proximate.catalog import open_catalog

        return open_catalog(
            self.backend,
            sqlite_path=self.sqlite_path,
            opensearch_url=self.opensearch_url,
            index=self.index,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            aws_sigv4_region=self.aws_sigv4_region,
            verify_certs=self.verify_certs,
            ca_certs=self.ca_certs,
        )
