"""What is particular to each backend: OpenSearch's explicit mapping, atomic alias swap and authentication
(through the CatalogConfig block), SQLite's file; and clear errors when either is unusable."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from catalog_records import sample_records
from conftest import free_port

from blocks.catalog import CatalogConfig
from proximate.catalog import CatalogError, CatalogQuery, open_catalog
from proximate.catalog.opensearch import MAPPING
from proximate.catalog.sqlite import SQLiteCatalog


def test_opensearch_index_has_the_explicit_mapping_behind_an_alias(opensearch_url):
    cat = open_catalog("opensearch", opensearch_url=opensearch_url, index="maps")
    (index,) = cat.client.indices.get_alias(name="maps")
    assert index.startswith("maps-") and index != "maps"
    props = cat.client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    for field in ("region", "variables", "standard_names", "path", "status"):
        assert props[field]["type"] == "keyword"
    assert props["time_start"]["type"] == props["time_end"]["type"] == "date"
    assert props["bbox"]["type"] == "geo_shape"
    assert props["size"]["type"] == "long"
    assert set(MAPPING["properties"]) <= set(props)


def test_opensearch_reindex_swaps_the_alias_and_drops_the_old_index(opensearch_url):
    cat = open_catalog("opensearch", opensearch_url=opensearch_url, index="swap")
    records = sample_records()
    cat.upsert(records[:5])
    (old,) = cat.client.indices.get_alias(name="swap")
    cat.reindex(records[5:])
    (new,) = cat.client.indices.get_alias(name="swap")
    assert new != old
    assert not cat.client.indices.exists(index=old)
    assert cat.count() == len(records) - 5
    # Documents carry deterministic ids: the record id, itself derived from region and path.
    doc = cat.client.get(index="swap", id=records[5].id)
    assert doc["_source"]["path"] == records[5].path


def test_opensearch_stores_crossing_boxes_as_two_halves(opensearch_url):
    """One geo_shape value of two halves: a real node refuses two values in one document (doc values)."""
    cat = open_catalog("opensearch", opensearch_url=opensearch_url, index="geo")
    pacific = next(r for r in sample_records() if r.path.startswith("pacific/"))
    assert cat.upsert([pacific]) == 1
    shape = cat.client.get(index="geo", id=pacific.id)["_source"]["bbox"]
    assert shape["type"] == "geometrycollection"
    halves = [g["coordinates"] for g in shape["geometries"]]
    assert halves == [[[150.0, 20.0], [180.0, -20.0]], [[-180.0, 20.0], [-150.0, -20.0]]]
    for west, east, hit in ((160, 170, True), (-170, -160, True), (-140, 140, False)):
        query = {"geo_shape": {"bbox": {"shape": {"type": "envelope", "coordinates": [[west, 5], [east, -5]]}}}}
        assert cat.client.count(index="geo", body={"query": query})["count"] == int(hit), (west, east)


def test_an_existing_index_under_the_alias_name_is_refused(opensearch_url):
    from opensearchpy import OpenSearch

    OpenSearch(hosts=[opensearch_url]).indices.create(index="taken")
    with pytest.raises(CatalogError, match="'taken'"):
        open_catalog("opensearch", opensearch_url=opensearch_url, index="taken")


def test_opensearch_down_gives_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CatalogError, match=f"OpenSearch catalog at {url} is unreachable"):
        CatalogConfig(backend="opensearch", opensearch_url=url).get_catalog()


def test_sqlite_corrupt_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "catalog.sqlite"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(CatalogError, match=str(path)):
        open_catalog("sqlite", sqlite_path=path)


def test_sqlite_is_the_default_and_persists_in_one_file(tmp_path):
    cfg = CatalogConfig(sqlite_path=str(tmp_path / "deep" / "dir" / "cat.sqlite"))
    records = sample_records()
    with cfg.get_catalog() as cat:
        assert isinstance(cat, SQLiteCatalog)
        cat.upsert(records)
    with cfg.get_catalog() as cat:  # reopened from the file
        assert cat.count() == len(records)
        assert cat.search(CatalogQuery(variable="tas")).total > 0


def test_sqlite_catalog_from_before_the_search_tuning_is_migrated_on_open(tmp_path):
    """A catalog file whose names rows lack the copied filter columns (and with the old bbox index) opens,
    gets them filled in, and answers combined searches exactly like a fresh one."""
    import sqlite3

    from proximate.catalog.sqlite import _NAME_COPIES

    records = sample_records()
    path = tmp_path / "old.sqlite"
    with SQLiteCatalog(path) as cat:
        cat.upsert(records)
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE old_names (rid INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, "
                   "PRIMARY KEY (kind, name, rid)) WITHOUT ROWID")  # fmt: skip
        db.execute("INSERT INTO old_names SELECT rid, kind, name FROM names")
        db.execute("DROP TABLE names")
        db.execute("ALTER TABLE old_names RENAME TO names")
        db.execute("CREATE INDEX names_rid ON names(rid)")
        db.execute("DROP INDEX datasets_box")
        db.execute("CREATE INDEX datasets_bbox ON datasets(south, north)")
    db.close()
    fresh = SQLiteCatalog(tmp_path / "fresh.sqlite")
    fresh.upsert(records)
    with SQLiteCatalog(path) as cat:
        columns = {row[1] for row in cat._db.execute("PRAGMA table_info(names)")}
        assert set(_NAME_COPIES) <= columns
        for q in (
            CatalogQuery(standard_name="air_temperature", min_size=150, sort="-size"),
            CatalogQuery(variable="uas", bbox=[175, 50, -175, 89]),
            CatalogQuery(variable="tas", region="a", time_start="1995-01-01T00:00:00", sort="time_start"),
        ):
            assert cat.search(q) == fresh.search(q)
            assert cat.search(q).total > 0
    fresh.close()


# -- authentication, seen on the wire ----------------------------------------------------------------------------


class _RecordingProxy(http.server.ThreadingHTTPServer):
    """Forwards to the OpenSearch node and keeps each request's Authorization header."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.auth: list[str | None] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                proxy.auth.append(self.headers.get("Authorization"))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                req = urllib.request.Request(proxy.target + self.path, data=body, method=self.command, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, data = resp.status, resp.read()
                except urllib.error.HTTPError as err:
                    status, data = err.code, err.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def proxy(opensearch_url) -> Iterator[_RecordingProxy]:
    server = _RecordingProxy(opensearch_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_basic_auth_from_the_block_secret(proxy):
    import base64

    cfg = CatalogConfig(backend="opensearch", opensearch_url=proxy.url, username="cat", password="s3cret-pw")
    assert "s3cret-pw" not in repr(cfg)
    with cfg.get_catalog() as cat:
        cat.upsert(sample_records()[:2])
        assert cat.count() == 2
    expected = "Basic " + base64.b64encode(b"cat:s3cret-pw").decode()
    assert proxy.auth and all(a == expected for a in proxy.auth)


def test_sigv4_signs_every_request(proxy):
    cfg = CatalogConfig(backend="opensearch", opensearch_url=proxy.url, aws_sigv4_region="eu-west-2")
    with cfg.get_catalog() as cat:
        cat.upsert(sample_records()[:1])
        assert cat.count() == 1
    assert proxy.auth
    for auth in proxy.auth:  # credentials from boto3's chain (the test environment's), region and service
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=testing/")
        assert "/eu-west-2/es/aws4_request" in auth
