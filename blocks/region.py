"""The ``Region`` block: where one region's data lives and where it syncs from."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field, SecretStr, field_validator

from proximate.regions import validate_region_name

DOCS = "https://github.com/proximate-project/proximate#configuration"
LOGO = "https://cdn.sanity.io/images/3ugk85nk/production/d74b16fe84ce626345adf235a47008fea2869a60-225x225.png"


class Region(Block):
    """A data region: its name (the Dask pool it maps to), the file system its workers read, and the object
    store prefix that the nightly sync mirrors into that file system."""

    _block_type_name = "Proximate Region"
    _logo_url = LOGO
    _documentation_url = DOCS

    name: str = Field(
        description="Region name, e.g. 'eu-west-2'; workers of this region offer the Dask resource pool-<name>."
    )
    root: str = Field(
        description="File-system root of the region's data as its workers see it (the FSx for Lustre mount)."
    )
    source_url: str | None = Field(
        default=None,
        description="fsspec URL the nightly sync mirrors into the root, e.g. 's3://bucket/prefix/'.",
    )
    aws_credentials: AwsCredentials | None = Field(
        default=None, description="Credentials for an s3:// source; omit to use the default AWS chain."
    )
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, a test server)."
    )
    requester_pays: bool = Field(
        default=False, description="The source bucket is requester-pays: this account pays for the listing and reads."
    )
    sse_customer_key: SecretStr | None = Field(
        default=None,
        description="The SSE-C key of the source's objects: 32 bytes in base64 (openssl rand -base64 32).",
    )
    nightly_cron: str | None = Field(
        default=None,
        description="When the region is ingested (sync, then index), as cron, e.g. '30 1 * * *'; empty: never on a"
        " schedule. `proximate deploy-nightly` turns it into the deployment nightly-<name>.",
    )
    nightly_timezone: str = Field(default="UTC", description="IANA timezone of nightly_cron, e.g. 'Europe/London'.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return validate_region_name(value)

    @field_validator("nightly_cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value:
            from prefect.client.schemas.schedules import CronSchedule

            CronSchedule(cron=value)  # raises ValueError naming the cron
        return value or None

    @field_validator("nightly_timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"nightly_timezone {value!r} is not an IANA timezone (e.g. 'Europe/London')") from None
        return value

    @field_validator("sse_customer_key")
    @classmethod
    def _valid_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                key = base64.b64decode(value.get_secret_value(), validate=True)
            except binascii.Error:
                key = b""
            if len(key) != 32:
                raise ValueError("sse_customer_key must be a 256-bit key in base64 (44 characters)")
        return value

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for ``source_url``; secrets come from the credentials block, never from here."""
        options: dict[str, Any] = {}
        if self.aws_credentials is not None:
            frozen = self.aws_credentials.get_boto3_session().get_credentials()
            if frozen is not None:
                frozen = frozen.get_frozen_credentials()
                options.update(key=frozen.access_key, secret=frozen.secret_key)
                if frozen.token:
                    options["token"] = frozen.token
            if self.aws_credentials.region_name:
                options.setdefault("client_kwargs", {})["region_name"] = self.aws_credentials.region_name
        if self.endpoint_url:
            options.setdefault("client_kwargs", {})["endpoint_url"] = self.endpoint_url
        if self.requester_pays:
            options["requester_pays"] = True
        if self.sse_customer_key is not None:
            key = base64.b64decode(self.sse_customer_key.get_secret_value())
            options["s3_additional_kwargs"] = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        return options
