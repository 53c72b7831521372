"""The ``CatalogConfig`` block: where the dataset catalog lives (embedded SQLite or OpenSearch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from blocks.region import DOCS, LOGO
from proximate.catalog.settings import DEFAULT_INDEX, DEFAULT_SQLITE_PATH, CatalogSettings

if TYPE_CHECKING:
    from proximate.catalog import Catalog


class CatalogConfig(Block):
    """The dataset catalog: an embedded SQLite file (the default, zero setup) or an OpenSearch cluster
    reached over HTTPS with basic auth or AWS SigV4."""

    _block_type_name = "Proximate Catalog"
    _logo_url = LOGO
    _documentation_url = DOCS

    backend: Literal["sqlite", "opensearch"] = Field(default="sqlite", description="Which catalog backend.")
    sqlite_path: str = Field(
        default=DEFAULT_SQLITE_PATH,
        description="For sqlite: the catalog database file (a relative path is taken from the flow's directory).",
    )
    opensearch_url: str | None = Field(default=None, description="For opensearch: https://host:port of the cluster.")
    index: str = Field(default=DEFAULT_INDEX, description="For opensearch: the alias searches go through.")
    username: str | None = Field(default=None, description="For opensearch basic auth: the user name.")
    password: SecretStr | None = Field(default=None, description="For opensearch basic auth: the password.")
    aws_sigv4_region: str | None = Field(
        default=None, description="For Amazon OpenSearch Service: sign requests with SigV4 for this AWS region."
    )
    verify_certs: bool = Field(default=True, description="For opensearch: verify the server's TLS certificate.")
    ca_certs: str | None = Field(default=None, description="For opensearch: CA bundle file to verify against.")

    @model_validator(mode="after")
    def _consistent(self) -> CatalogConfig:
        if self.backend == "opensearch" and not self.opensearch_url:
            raise ValueError("the opensearch backend needs opensearch_url")
        if self.username and self.aws_sigv4_region:
            raise ValueError("use basic auth or SigV4, not both")
        return self

    def settings(self) -> CatalogSettings:
        """The catalog this block names, resolved in this process (a relative SQLite path made absolute here)."""
        return CatalogSettings(
            backend=self.backend,
            sqlite_path=self.sqlite_path,
            opensearch_url=self.opensearch_url,
            index=self.index,
            username=self.username,
            password=self.password,
            aws_sigv4_region=self.aws_sigv4_region,
            verify_certs=self.verify_certs,
            ca_certs=self.ca_certs,
        )

    def get_catalog(self) -> Catalog:
        """The configured backend, connected."""
        return self.settings().open()
