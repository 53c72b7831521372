"""OpenSearch catalog through opensearch-py.

Searches go through an alias; the index behind it has an explicit mapping. A full reindex fills a fresh
index and swaps the alias in one ``_aliases`` call, so readers never see a half-built catalog. User text
reaches OpenSearch only as the operand of a ``match`` query (data, not query syntax).
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from proximate.catalog.base import Catalog, CatalogError, Fingerprint, RecordsRejected, check_facet_fields
from proximate.catalog.geo import bbox_shapes
from proximate.catalog.query import (
    FACET_FIELDS,
    CatalogQuery,
    SearchResult,
    check_facet_size,
    empty_result,
    iso,
    search_text,
)
from proximate.catalog.records import DatasetRecord
from proximate.redaction import redact_url

if TYPE_CHECKING:
    from proximate.catalog.settings import CatalogSettings

MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "id": {"type": "keyword"},
        "region": {"type": "keyword"},
        "path": {"type": "keyword"},
        "format": {"type": "keyword"},
        "status": {"type": "keyword"},
        "variables": {"type": "keyword"},
        "standard_names": {"type": "keyword"},
        "text": {"type": "text"},
        "time_start": {"type": "date", "format": "strict_date_optional_time"},
        "time_end": {"type": "date", "format": "strict_date_optional_time"},
        "bbox": {"type": "geo_shape"},
        "size": {"type": "long"},
        "mtime_ns": {"type": "long"},
        "mtime_ms": {"type": "long"},
        "etag": {"type": "keyword"},
        "record": {"type": "object", "enabled": False},
    },
}

#: Sort field -> indexed field. Modification times sort by the millisecond in every backend (a long of
#: nanoseconds exceeds double precision, which some servers sort by).
SORT_COLUMNS = {"path": "path", "size": "size", "time_start": "time_start", "time_end": "time_end",
                "mtime_ns": "mtime_ms", "region": "region"}  # fmt: skip

SETTINGS: dict[str, Any] = {"index": {"number_of_shards": 1, "max_result_window": 10_000}}


def document_shape(bbox: Sequence[float]) -> dict[str, Any]:
    """A record's box as the one geo_shape value its document holds: the envelope (or point), or for a box
    crossing the antimeridian a geometry collection of its two halves.

    One value, not an array of the halves: OpenSearch 2.x keeps doc values for geo_shape fields and refuses
    a document with two values in one ("DocValuesField "bbox" appears more than once"), which every record
    crossing 180 degrees hit on a real node (the emulator the tests used before took the array).

    Examples:
        >>> document_shape([150, -20, -150, 20])["type"]
        'geometrycollection'
    """
    shapes = bbox_shapes(bbox)
    return shapes[0] if len(shapes) == 1 else {"type": "geometrycollection", "geometries": shapes}


def to_document(record: DatasetRecord) -> dict[str, Any]:
    """The indexed fields plus the whole record (stored, not indexed) to give it back on search."""
    return {
        "id": record.id,
        "region": record.region,
        "path": record.path,
        "format": record.format,
        "status": record.status,
        "variables": record.variable_names,
        "standard_names": record.standard_names,
        "text": search_text(record),
        "time_start": record.time_start,
        "time_end": record.time_end,
        "bbox": document_shape(record.bbox) if record.bbox else None,
        "size": record.size,
        "mtime_ns": record.mtime_ns,
        "mtime_ms": None if record.mtime_ns is None else record.mtime_ns // 1_000_000,
        "etag": record.etag,
        "record": record.model_dump(mode="json"),
    }


def build_query(query: CatalogQuery | None) -> dict[str, Any] | None:
    """The bool/filter query for a CatalogQuery; ``None`` if it can match nothing."""
    if query is None:
        return {"match_all": {}}
    must: list[dict[str, Any]] = []
    filters: list[dict[str, Any]] = []
    toks = query.text_tokens
    if toks is not None:
        if not toks:
            return None
        must.append({"match": {"text": {"query": " ".join(toks), "operator": "and"}}})
    for field, value in (
        ("variables", query.variable),
        ("standard_names", query.standard_name),
        ("region", query.region),
        ("status", query.status),
    ):
        if value is not None:
            filters.append({"term": {field: value}})
    size: dict[str, int] = {}
    if query.min_size is not None:
        size["gte"] = query.min_size
    if query.max_size is not None:
        size["lte"] = query.max_size
    if size:
        filters.append({"range": {"size": size}})
    if query.time_start is not None:
        filters.append({"range": {"time_end": {"gte": iso(query.time_start)}}})
    if query.time_end is not None:
        filters.append({"range": {"time_start": {"lte": iso(query.time_end)}}})
    if query.bbox is not None:
        parts = [{"geo_shape": {"bbox": {"shape": s, "relation": "intersects"}}} for s in bbox_shapes(query.bbox)]
        filters.append(parts[0] if len(parts) == 1 else {"bool": {"should": parts, "minimum_should_match": 1}})
    if not must and not filters:
        return {"match_all": {}}
    return {"bool": {"must": must, "filter": filters}}


def sort_spec(query: CatalogQuery) -> list[dict[str, Any]]:
    """The sort key, missing values last, then region and path to break ties. Sorting by path needs no
    third key (path, region is already total), and every key costs: osmem-server reads each one from the
    source of every hit, so three keys instead of two made a 17k-hit search about 50 % slower."""
    order = "desc" if query.descending else "asc"
    if query.sort_field == "path":  # never missing
        return [{"path": {"order": order}}, {"region": {"order": "asc"}}]
    return [
        {SORT_COLUMNS[query.sort_field]: {"order": order, "missing": "_last"}},
        {"region": {"order": "asc"}},
        {"path": {"order": "asc"}},
    ]


class OpenSearchCatalog(Catalog):
    """The catalog in OpenSearch, behind the alias ``index``."""

    #: Documents per bulk request (about 1.5 MB): each request becomes one segment, and osmem-server
    #: re-indexes segments of fewer than 1000 documents to merge them, which doubled its write cost.
    batch_size = 1000

    def __init__(self, client: Any, index: str = "proximate-datasets", *, url: str = "") -> None:
        self.client = client
        self.alias = index
        self.url = redact_url(url) or "OpenSearch"
        self._ensure()

    @classmethod
    def connect(cls, settings: CatalogSettings, *, timeout: float = 30.0) -> OpenSearchCatalog:
        """Connect to the cluster ``settings`` names, with basic auth, SigV4 (boto3's default credential chain) or
        nothing (credentials given inside the URL are already basic auth there, and never kept in the URL the
        catalog shows).

        Args:
            settings: An ``opensearch`` catalog's settings.
            timeout: Seconds one request may take.

        Returns:
            The catalog, its alias created if missing.

        Raises:
            CatalogError: no URL, or SigV4 without AWS credentials.
        """
        from opensearchpy import OpenSearch

        url = settings.opensearch_url
        if not url:
            raise CatalogError("the opensearch catalog backend needs opensearch_url")
        kwargs: dict[str, Any] = {"hosts": [url], "timeout": timeout, "max_retries": 2, "retry_on_timeout": True}
        if url.startswith("https://"):
            kwargs.update(use_ssl=True, verify_certs=settings.verify_certs, ssl_show_warn=settings.verify_certs)
            if settings.ca_certs:
                kwargs["ca_certs"] = settings.ca_certs
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else ""
            kwargs["http_auth"] = (settings.username, password)
        aws_sigv4_region = settings.aws_sigv4_region
        if aws_sigv4_region:
            import boto3
            from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection

            credentials = boto3.Session().get_credentials()
            if credentials is None:
                raise CatalogError(f"SigV4 for OpenSearch at {url}: no AWS credentials found")
            kwargs["http_auth"] = AWSV4SignerAuth(credentials, aws_sigv4_region, "es")
            kwargs["connection_class"] = RequestsHttpConnection
        return cls(OpenSearch(**kwargs), settings.index, url=url)

    def __repr__(self) -> str:
        return f"OpenSearchCatalog({self.url!r}, alias={self.alias!r})"

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import TransportError

        try:
            return fn(*args, **kwargs)
        except OSConnectionError as exc:
            raise CatalogError(f"OpenSearch catalog at {self.url} is unreachable ({what}): {exc}") from exc
        except TransportError as exc:
            raise CatalogError(f"OpenSearch catalog at {self.url} refused {what}: {exc}") from exc

    def _new_index(self) -> str:
        name = f"{self.alias}-{_dt.datetime.now(_dt.UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
        self._call("creating an index", self.client.indices.create, index=name,
                   body={"settings": SETTINGS, "mappings": MAPPING})  # fmt: skip
        return name

    def _indices(self) -> list[str]:
        if not self._call("reading aliases", self.client.indices.exists_alias, name=self.alias):
            return []
        return sorted(self._call("reading aliases", self.client.indices.get_alias, name=self.alias))

    def _ensure(self) -> None:
        indices = self._indices()
        if indices:
            self._check_mapping(indices)
            return
        if self._call("checking the index", self.client.indices.exists, index=self.alias):
            raise CatalogError(
                f"OpenSearch at {self.url} has an index named {self.alias!r}; the catalog needs that name as an "
                "alias (reindex into a new index and alias it, or choose another name)"
            )
        name = self._new_index()
        body = {"actions": [{"add": {"index": name, "alias": self.alias, "is_write_index": True}}]}
        self._call("creating the alias", self.client.indices.update_aliases, body=body)

    def _check_mapping(self, indices: Sequence[str]) -> None:
        """Refuse an index behind the alias whose mapping types a catalog field otherwise (an index made by
        hand or by another program): a real node would reject or silently mis-index every record (a ``size``
        of type text makes size ranges compare strings). Fields the index lacks (a catalog from before they
        were added) are added, which OpenSearch allows on a live index.

        Raises:
            CatalogError: Naming the index, the field, its type there and the type the catalog needs.
        """
        found = self._call("reading the mapping", self.client.indices.get_mapping, index=",".join(indices))
        for index in indices:
            props = found.get(index, {}).get("mappings", {}).get("properties", {})
            missing = {}
            for field, wanted in MAPPING["properties"].items():
                have = props.get(field)
                if have is None:
                    missing[field] = wanted
                elif have.get("type", "object") != wanted["type"]:
                    raise CatalogError(
                        f"OpenSearch catalog at {self.url}: index {index!r} (behind alias {self.alias!r}) maps "
                        f"field {field!r} as {have.get('type', 'object')!r}, the catalog needs {wanted['type']!r}; "
                        "nothing was written (reindex into a new index, or choose another alias)"
                    )
            if missing:
                self._call("adding fields to the mapping", self.client.indices.put_mapping, index=index,
                           body={"properties": missing})  # fmt: skip

    def _bulk(self, actions: Iterable[dict[str, Any]]) -> tuple[int, dict[str, str]]:
        """Send ``actions`` in bulk requests; returns how many succeeded and, per refused document id, the
        node's reason (a delete of a missing document is no refusal). Every item is tried: one refused
        document never holds back the others."""
        from opensearchpy import helpers

        ok, errors = self._call(
            "a bulk write", helpers.bulk, self.client, actions, chunk_size=self.batch_size, raise_on_error=False,
            max_retries=2,
        )  # fmt: skip
        rejected = {}
        for error in errors:
            ((op, item),) = error.items()
            if op == "delete" and item.get("status") == 404:
                continue
            reason = item.get("error", {})
            if isinstance(reason, dict):
                reason = f"{reason.get('type')}: {reason.get('reason')}"
            rejected[str(item.get("_id"))] = f"status {item.get('status')}, {reason}"
        return ok, rejected

    def _raise_rejected(self, rejected: dict[str, str], what: str) -> None:
        if rejected:
            first_id, first = next(iter(rejected.items()))
            raise RecordsRejected(
                f"OpenSearch catalog at {self.url} refused {len(rejected)} record(s) of {what} (the others were "
                f"written); first: {first_id}: {first}",
                rejected,
            )

    def _refresh(self, index: str | None = None) -> None:
        self._call("a refresh", self.client.indices.refresh, index=index or self.alias)

    # -- writes ------------------------------------------------------------------------------------------------
    def _index_actions(self, records: Iterable[DatasetRecord], index: str) -> Iterator[dict[str, Any]]:
        for rec in records:
            yield {"_op_type": "index", "_index": index, "_id": rec.id, "_source": to_document(rec)}

    def upsert(self, records: Iterable[DatasetRecord]) -> int:
        """Index ``records`` (by id), then refresh so they are searchable.

        Raises:
            RecordsRejected: The node refused some of them (the others are written and visible).
        """
        n, rejected = self._bulk(self._index_actions(records, self.alias))
        self._refresh()
        self._raise_rejected(rejected, "a bulk write")
        return n

    def delete(self, ids: Iterable[str]) -> int:
        actions = [{"_op_type": "delete", "_index": self.alias, "_id": i} for i in ids]
        if not actions:
            return 0
        n, rejected = self._bulk(actions)
        self._refresh()
        self._raise_rejected(rejected, "a bulk delete")
        return n

    def reindex(self, records: Iterable[DatasetRecord]) -> int:
        """Fill a new index, then move the alias onto it in one atomic ``_aliases`` call; drop the old."""
        old = self._indices()
        new = self._new_index()
        try:
            n, rejected = self._bulk(self._index_actions(records, new))
            self._raise_rejected(rejected, "a reindex (the old index stays in place)")
            self._refresh(new)
        except BaseException:
            self._call("dropping a failed reindex", self.client.indices.delete, index=new)
            raise
        actions: list[dict[str, Any]] = [{"remove": {"index": i, "alias": self.alias}} for i in old]
        actions.append({"add": {"index": new, "alias": self.alias, "is_write_index": True}})
        self._call("swapping the alias", self.client.indices.update_aliases, body={"actions": actions})
        for i in old:
            self._call("dropping the old index", self.client.indices.delete, index=i)
        return n

    # -- reads -------------------------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self._call("a count", self.client.count, index=self.alias)["count"])

    def get_many(self, ids: Sequence[str]) -> dict[str, DatasetRecord]:
        out: dict[str, DatasetRecord] = {}
        ids = list(ids)
        for i in range(0, len(ids), 1000):
            body = {"ids": ids[i : i + 1000]}
            res = self._call("a multi-get", self.client.mget, index=self.alias, body=body, _source=["record"])
            for doc in res["docs"]:
                if doc.get("found"):
                    rec = DatasetRecord.model_validate(doc["_source"]["record"])
                    out[rec.id] = rec
        return out

    def fingerprints(self, region: str) -> dict[str, Fingerprint]:
        from opensearchpy import helpers

        query = {"query": {"term": {"region": region}}, "_source": ["path", "size", "mtime_ns", "etag", "status"]}
        hits = self._call("a scan", lambda: list(helpers.scan(self.client, index=self.alias, query=query, size=2000)))
        out = {}
        for hit in hits:
            s = hit["_source"]
            out[s["path"]] = Fingerprint(s.get("size"), s.get("mtime_ns"), s.get("etag"), s.get("status", "ok"))
        return out

    def search(self, query: CatalogQuery) -> SearchResult:
        q = build_query(query)
        if q is None:
            return empty_result(query)
        body = {
            "query": q,
            "from": query.offset,
            "size": query.page_size,
            "sort": sort_spec(query),
            "track_total_hits": True,
            "_source": ["record"],
        }
        res = self._call("a search", self.client.search, index=self.alias, body=body)
        records = [DatasetRecord.model_validate(h["_source"]["record"]) for h in res["hits"]["hits"]]
        total = res["hits"]["total"]
        total = total["value"] if isinstance(total, dict) else int(total)
        return SearchResult(total=total, page=query.page, page_size=query.page_size, records=records)

    def facets(
        self, query: CatalogQuery | None = None, fields: Sequence[str] = FACET_FIELDS, size: int = 50
    ) -> dict[str, dict[str, int]]:
        fields, size = check_facet_fields(fields), check_facet_size(size)
        q = build_query(query)
        if q is None:
            return {f: {} for f in fields}
        aggs = {
            f: {"terms": {"field": f, "size": size, "order": [{"_count": "desc"}, {"_key": "asc"}]}} for f in fields
        }
        res = self._call(
            "a facet count", self.client.search, index=self.alias, body={"query": q, "size": 0, "aggs": aggs}
        )
        return {f: {str(b["key"]): int(b["doc_count"]) for b in res["aggregations"][f]["buckets"]} for f in fields}

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close:
            close()
