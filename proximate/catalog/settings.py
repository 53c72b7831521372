"""Which catalog a run uses: :class:`CatalogSettings`, decided once in the process that starts the run.

A relative SQLite path is made absolute when the settings are made, in that process: passed on to a task that
runs elsewhere (a Dask worker's temporary working directory), it still names the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from proximate import config
from proximate.catalog.errors import CatalogError
from proximate.redaction import redact_url, split_credentials

if TYPE_CHECKING:
    from proximate.catalog.base import Catalog

#: Where the default catalog lives, relative to the working directory (PROXIMATE_HOME for deployments).
DEFAULT_SQLITE_PATH = "catalog/proximate.sqlite"
#: The OpenSearch alias searches go through, unless configured.
DEFAULT_INDEX = "proximate-datasets"
#: Environment variable naming the default catalog: a SQLite file path or an http(s):// OpenSearch URL
#: (``proximate.catalog.location``).
CATALOG_ENV = config.env_var("catalog.location")
#: Environment variables with the OpenSearch basic-auth credentials, kept out of the URL (which is shown in logs
#: and artifacts); the password may instead be in a file (a mounted secret) named by ``..._PASSWORD_FILE``.
USERNAME_ENV = config.env_var("catalog.username")
PASSWORD_ENV = config.env_var("catalog.password")
PASSWORD_FILE_ENV = config.env_var("catalog.password-file")


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
        if self.opensearch_url:
            # Credentials inside the URL (accepted for compatibility) move to the fields, so that the URL this
            # object holds, shows and passes on never carries them; explicit fields win.
            bare, username, password = split_credentials(self.opensearch_url)
            object.__setattr__(self, "opensearch_url", bare)
            if self.username is None and username is not None:
                object.__setattr__(self, "username", username)
            if self.password is None and password is not None:
                object.__setattr__(self, "password", SecretStr(password))
        if isinstance(self.password, str):
            object.__setattr__(self, "password", SecretStr(self.password))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, location: str | None = None) -> CatalogSettings:
        """The default catalog: ``PROXIMATE_CATALOG`` (a SQLite file or an OpenSearch URL), else
        :data:`DEFAULT_SQLITE_PATH` under the working directory; for OpenSearch, basic-auth credentials from
        ``PROXIMATE_CATALOG_USERNAME`` and ``PROXIMATE_CATALOG_PASSWORD`` (or ``PROXIMATE_CATALOG_PASSWORD_FILE``).
        Each variable may instead be set as its ``proximate.catalog.*`` key (:mod:`proximate.config`).

        Args:
            environ: Where to read the variables; ``os.environ`` when omitted.
            location: The catalog to use instead of ``PROXIMATE_CATALOG`` (a command's ``--catalog``); the
                credentials still come from the settings.

        Returns:
            The settings.

        Raises:
            CatalogError: a password file that cannot be read, or both a password and a password file.

        Examples:
            >>> s = CatalogSettings.from_env({"PROXIMATE_CATALOG": "https://search.example:9200",
            ...                               "PROXIMATE_CATALOG_USERNAME": "proximate",
            ...                               "PROXIMATE_CATALOG_PASSWORD": "hunter22"})
            >>> s.describe(), s.username, s.password
            ('opensearch: https://search.example:9200 (proximate-datasets)', 'proximate', SecretStr('**********'))
        """
        where = location or config.get_str("catalog.location", environ) or DEFAULT_SQLITE_PATH
        if not where.startswith(("http://", "https://")):
            return cls(backend="sqlite", sqlite_path=where)
        password = config.get_str("catalog.password", environ)
        password_file = config.get_str("catalog.password-file", environ)
        if password and password_file:
            raise CatalogError(f"set {PASSWORD_ENV} or {PASSWORD_FILE_ENV}, not both")
        if password_file:
            try:
                password = Path(password_file).read_text().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                why = getattr(exc, "strerror", None) or exc
                raise CatalogError(f"{PASSWORD_FILE_ENV}={password_file}: cannot read it ({why})") from None
        return cls(
            backend="opensearch",
            opensearch_url=where,
            username=config.get_str("catalog.username", environ),
            password=SecretStr(password) if password else None,
        )

    def describe(self) -> str:
        """Where the catalog is, for logs and artifacts (never a user name or password)."""
        if self.backend == "sqlite":
            return f"sqlite: {self.sqlite_path}"
        return f"opensearch: {redact_url(self.opensearch_url)} ({self.index})"

    def open(self) -> Catalog:
        """The backend, connected; close it (or use it as a context manager) when done.

        Raises:
            CatalogError: an unknown backend, or opensearch without a URL.
        """
        if self.backend == "sqlite":
            from proximate.catalog.sqlite import SQLiteCatalog

            return SQLiteCatalog(Path(self.sqlite_path))
        if self.backend == "opensearch":
            from proximate.catalog.opensearch import OpenSearchCatalog

            return OpenSearchCatalog.connect(self)
        raise CatalogError(f"unknown catalog backend {self.backend!r}: use 'sqlite' or 'opensearch'")
