"""Secrets as a careless operator or a curious reader meets them: credentials in a catalog URL never shown, the
OpenSearch password taken from its own variable or file, and a sync with an SSE-C key at DEBUG that never logs
the key or the secret access key."""

from __future__ import annotations

import base64
import logging
import os

import pytest
from pydantic import SecretStr
from s3_fault_proxy import FaultProxy
from test_sync import BUCKET, MiB, options
from test_sync_real_s3 import data_files, expected, plain_bucket

from proximate.catalog import CatalogError, open_catalog
from proximate.catalog.settings import CatalogSettings
from proximate.redaction import redact_text, redact_url
from proximate.sync import sync
from proximate.testing.local_s3 import free_port

PASSWORD = "Hunter2-secret-PASSWORD"

# -- the catalog's credentials -------------------------------------------------------------------------------------


def test_credentials_in_the_catalog_url_move_out_of_it_and_are_never_shown():
    settings = CatalogSettings.from_env({"PROXIMATE_CATALOG": f"https://admin:{PASSWORD}@search.example:9200"})
    assert settings.opensearch_url == "https://search.example:9200"
    assert (settings.username, settings.password) == ("admin", SecretStr(PASSWORD))
    assert settings.password.get_secret_value() == PASSWORD  # still used to connect
    for shown in (settings.describe(), repr(settings), str(settings)):
        assert PASSWORD not in shown, shown
    assert settings.describe() == "opensearch: https://search.example:9200 (proximate-datasets)"
    # The block path too: a URL with credentials given as its opensearch_url field.
    block_like = CatalogSettings(backend="opensearch", opensearch_url=f"https://admin:{PASSWORD}@h:9200", index="i")
    assert (block_like.opensearch_url, block_like.username, block_like.password.get_secret_value()) == (
        "https://h:9200", "admin", PASSWORD,
    )  # fmt: skip


def test_the_catalog_password_comes_from_its_own_variable_or_file(tmp_path):
    env = {"PROXIMATE_CATALOG": "https://search.example:9200", "PROXIMATE_CATALOG_USERNAME": "proximate"}
    by_variable = CatalogSettings.from_env({**env, "PROXIMATE_CATALOG_PASSWORD": PASSWORD})
    assert (by_variable.username, by_variable.password.get_secret_value()) == ("proximate", PASSWORD)
    secret_file = tmp_path / "opensearch-password"
    secret_file.write_text(PASSWORD + "\n")
    by_file = CatalogSettings.from_env({**env, "PROXIMATE_CATALOG_PASSWORD_FILE": str(secret_file)})
    assert by_file.password.get_secret_value() == PASSWORD
    with pytest.raises(CatalogError, match=f"PROXIMATE_CATALOG_PASSWORD_FILE={tmp_path}/missing: cannot read it"):
        CatalogSettings.from_env({**env, "PROXIMATE_CATALOG_PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(CatalogError, match="set PROXIMATE_CATALOG_PASSWORD or PROXIMATE_CATALOG_PASSWORD_FILE"):
        CatalogSettings.from_env(
            {**env, "PROXIMATE_CATALOG_PASSWORD": "x", "PROXIMATE_CATALOG_PASSWORD_FILE": str(secret_file)}
        )


def test_a_catalog_error_names_the_server_but_not_its_credentials():
    url = f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(CatalogError) as failed:
        open_catalog("opensearch", opensearch_url=url, index="x")
    message = "".join(str(e) for e in (failed.value, failed.value.__cause__) if e is not None)
    assert "127.0.0.1" in str(failed.value)
    assert PASSWORD not in message and "admin" not in message, message


def test_redact_url_and_text_mask_credentials_and_keep_the_rest():
    assert redact_url(f"https://admin:{PASSWORD}@h:9200/p?q=1") == "https://***@h:9200/p?q=1"
    assert redact_url("s3://bucket/key@2") == "s3://bucket/key@2"
    line = "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, Signature=abcdef0123"
    assert redact_text(line).endswith("Signature=***")
    assert (
        redact_text("{'SSECustomerKey': b'\\x01\\x02\\'x', 'Bucket': 'b'}") == "{'SSECustomerKey': ***, 'Bucket': 'b'}"
    )


# -- botocore at DEBUG during a sync with an SSE-C key ---------------------------------------------------------------


def test_a_debug_log_of_an_sse_c_sync_shows_neither_the_key_nor_the_secret(s3, tmp_path, caplog):
    objects = {"p/c/small.bin": os.urandom(4000), "p/c/big.bin": os.urandom(2 * MiB)}
    plain_bucket(s3, objects)
    key = os.urandom(32)
    given = {**options("", s3), "s3_additional_kwargs": {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}}
    caplog.set_level(logging.DEBUG)
    with FaultProxy(s3["endpoint_url"]) as proxy:
        proxy.sse_c = {f"{BUCKET}/{k}": key for k in objects}
        given["client_kwargs"] = {"endpoint_url": proxy.url}
        result = sync(f"s3://{BUCKET}/p/", tmp_path / "root", storage_options=given, block_size=MiB)
    assert result.failed == [] and data_files(tmp_path / "root") == expected(objects)  # the key was used
    log = caplog.text
    # botocore did log the SSE-C requests at DEBUG: the test looked where the key used to show.
    assert "x-amz-server-side-encryption-customer-key" in log.lower() or "SSECustomerKey" in log, log[:2000]
    for form in (base64.b64encode(key).decode(), key.hex(), repr(key)[2:-1], s3["secret"]):
        assert form not in log, f"{form!r} is in the DEBUG log"
