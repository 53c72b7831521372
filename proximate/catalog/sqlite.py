"""Embedded SQLite catalog: the zero-setup default, one database file.

Free text goes through FTS5 (each user token becomes a quoted phrase, so no FTS syntax reaches MATCH), names
through an indexed side table, the bbox through four plain numeric columns with the antimeridian handled in
SQL; everything else is a bound parameter.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from proximate.catalog.base import Catalog, CatalogError, Fingerprint, check_facet_fields
from proximate.catalog.query import FACET_FIELDS, CatalogQuery, SearchResult, empty_result, iso, search_text
from proximate.metadata import DatasetRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    region TEXT,
    path TEXT NOT NULL,
    format TEXT,
    status TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    etag TEXT,
    time_start TEXT,
    time_end TEXT,
    west REAL, south REAL, east REAL, north REAL
);
-- The full records live apart so that filters scan a narrow table.
CREATE TABLE IF NOT EXISTS records (
    rid INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS datasets_region_path ON datasets(region, path);
CREATE INDEX IF NOT EXISTS datasets_path ON datasets(path, region);
CREATE INDEX IF NOT EXISTS datasets_size ON datasets(size);
CREATE INDEX IF NOT EXISTS datasets_bbox ON datasets(south, north);
CREATE INDEX IF NOT EXISTS datasets_time ON datasets(time_start, time_end);
CREATE INDEX IF NOT EXISTS datasets_region_time ON datasets(region, time_end, time_start);
CREATE INDEX IF NOT EXISTS datasets_time_end ON datasets(time_end);
CREATE INDEX IF NOT EXISTS datasets_mtime ON datasets(mtime_ns);
CREATE TABLE IF NOT EXISTS names (
    rid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (kind, name, rid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS names_rid ON names(rid);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(text, tokenize = "unicode61 remove_diacritics 0");
"""

#: Facet name -> (kind in the names table) or column.
_NAME_KINDS = {"variables": "v", "standard_names": "s"}
_COLUMNS = {"region", "format", "status"}


def _fts_match(tokens: list[str]) -> str:
    """All tokens, each a quoted phrase (tokens hold only letters and digits, so quoting is total)."""
    return " ".join('"' + t.replace('"', '""') + '"' for t in tokens)


def _where(query: CatalogQuery | None) -> tuple[str, list[Any]] | None:
    """SQL condition and parameters; ``None`` if the query can match nothing."""
    if query is None:
        return "1", []
    conds: list[str] = []
    params: list[Any] = []
    toks = query.text_tokens
    if toks is not None:
        if not toks:
            return None
        conds.append("d.rid IN (SELECT rowid FROM fts WHERE fts MATCH ?)")
        params.append(_fts_match(toks))
    for kind, value in (("v", query.variable), ("s", query.standard_name)):
        if value is not None:
            conds.append("d.rid IN (SELECT rid FROM names WHERE kind = ? AND name = ?)")
            params += [kind, value]
    for column, value in (("region", query.region), ("status", query.status)):
        if value is not None:
            conds.append(f"d.{column} = ?")
            params.append(value)
    if query.min_size is not None:
        conds.append("d.size >= ?")
        params.append(query.min_size)
    if query.max_size is not None:
        conds.append("d.size <= ?")
        params.append(query.max_size)
    if query.time_start is not None:
        conds.append("d.time_end >= ?")
        params.append(iso(query.time_start))
    if query.time_end is not None:
        conds.append("d.time_start <= ?")
        params.append(iso(query.time_end))
    if query.bbox is not None:
        qw, qs, qe, qn = query.bbox
        conds.append("d.south <= ? AND d.north >= ?")
        params += [qn, qs]
        if qw <= qe:  # plain query box: plain records overlap it, or a crossing record reaches into it
            conds.append(
                "((d.west <= d.east AND d.west <= ? AND d.east >= ?)"
                " OR (d.west > d.east AND (d.west <= ? OR d.east >= ?)))"
            )
            params += [qe, qw, qe, qw]
        else:  # crossing query box: crossing records always meet it at 180°
            conds.append("(d.west > d.east OR d.east >= ? OR d.west <= ?)")
            params += [qw, qe]
    return (" AND ".join(conds) or "1"), params


class SQLiteCatalog(Catalog):
    """The catalog in one SQLite file (created with its folder on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB: the filter columns of 100k+ records stay hot
            self._db.execute("PRAGMA mmap_size=268435456")
            self._db.executescript(SCHEMA)
            self._analyzed_at = self._written = self._db.execute("SELECT count(*) FROM datasets").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise CatalogError(f"SQLite catalog {self.path} is not usable: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteCatalog({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes ------------------------------------------------------------------------------------------------
    def _write(self, records: Iterable[DatasetRecord]) -> int:
        n = 0
        for rec in records:
            bbox = rec.bbox or [None, None, None, None]
            row = (
                rec.id, rec.region, rec.path, rec.format, rec.status, rec.size, rec.mtime_ns, rec.etag,
                rec.time_start, rec.time_end, *bbox,
            )  # fmt: skip
            (rid,) = self._db.execute(
                """INSERT INTO datasets (id, region, path, format, status, size, mtime_ns, etag, time_start,
                       time_end, west, south, east, north) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(id) DO UPDATE SET region=excluded.region, path=excluded.path,
                       format=excluded.format, status=excluded.status, size=excluded.size,
                       mtime_ns=excluded.mtime_ns, etag=excluded.etag, time_start=excluded.time_start,
                       time_end=excluded.time_end, west=excluded.west, south=excluded.south, east=excluded.east,
                       north=excluded.north
                   RETURNING rid""",
                row,
            ).fetchone()
            self._db.execute("INSERT OR REPLACE INTO records (rid, record) VALUES (?, ?)", (rid, rec.model_dump_json()))
            self._db.execute("DELETE FROM names WHERE rid = ?", (rid,))
            self._db.executemany(
                "INSERT OR IGNORE INTO names (rid, kind, name) VALUES (?, ?, ?)",
                [(rid, "v", v) for v in rec.variable_names] + [(rid, "s", s) for s in rec.standard_names],
            )
            self._db.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
            self._db.execute("INSERT INTO fts (rowid, text) VALUES (?, ?)", (rid, search_text(rec)))
            n += 1
        return n

    def upsert(self, records: Iterable[DatasetRecord]) -> int:
        with self._lock:
            with self._db:
                self._db.execute("BEGIN")
                n = self._write(records)
            self._written += n
            if self._written >= self._analyzed_at * 2 + 1000:  # the planner needs fresh statistics after growth
                self._analyze()
            return n

    def _analyze(self) -> None:
        self._db.execute("ANALYZE")
        self._analyzed_at = self._written = self.count()

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        n = 0
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for record_id in ids:
                row = self._db.execute("DELETE FROM datasets WHERE id = ? RETURNING rid", (record_id,)).fetchone()
                if row:
                    self._db.execute("DELETE FROM names WHERE rid = ?", row)
                    self._db.execute("DELETE FROM fts WHERE rowid = ?", row)
                    self._db.execute("DELETE FROM records WHERE rid = ?", row)
                    n += 1
        return n

    def reindex(self, records: Iterable[DatasetRecord]) -> int:
        """One transaction: readers see the old catalog until the new one is complete."""
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for table in ("datasets", "names", "fts", "records"):
                    self._db.execute(f"DELETE FROM {table}")
                n = self._write(records)
            self._analyze()
            return n

    # -- reads -------------------------------------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM datasets").fetchone()[0]

    def get_many(self, ids: Sequence[str]) -> dict[str, DatasetRecord]:
        out: dict[str, DatasetRecord] = {}
        ids = list(ids)
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT r.record FROM datasets d JOIN records r ON r.rid = d.rid WHERE d.id IN ({marks})"
                for (text,) in self._db.execute(sql, chunk):
                    rec = DatasetRecord.model_validate_json(text)
                    out[rec.id] = rec
        return out

    def fingerprints(self, region: str) -> dict[str, Fingerprint]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path, size, mtime_ns, etag, status FROM datasets WHERE region = ?", (region,)
            ).fetchall()
        return {p: Fingerprint(s, m, e, st) for p, s, m, e, st in rows}

    def search(self, query: CatalogQuery) -> SearchResult:
        where = _where(query)
        if where is None:
            return empty_result(query)
        cond, params = where
        # Modification times sort by the millisecond, as in every backend.
        column = "(d.mtime_ns / 1000000)" if query.sort_field == "mtime_ns" else f"d.{query.sort_field}"
        order = "DESC" if query.descending else "ASC"
        # Missing values last; path is never missing, and leaving out the test lets its index give the order.
        nulls = "" if query.sort_field == "path" else f"{column} IS NULL, "
        sql = (
            f"SELECT d.rid FROM datasets d WHERE {cond} "
            f"ORDER BY {nulls}{column} {order}, d.region, d.path LIMIT ? OFFSET ?"
        )
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM datasets d WHERE {cond}", params).fetchone()[0]
            rids = [rid for (rid,) in self._db.execute(sql, [*params, query.page_size, query.offset])]
            marks = ",".join("?" * len(rids))
            texts = dict(self._db.execute(f"SELECT rid, record FROM records WHERE rid IN ({marks})", rids))
        records = [DatasetRecord.model_validate(json.loads(texts[rid])) for rid in rids]
        return SearchResult(total=total, page=query.page, page_size=query.page_size, records=records)

    def facets(
        self, query: CatalogQuery | None = None, fields: Sequence[str] = FACET_FIELDS, size: int = 50
    ) -> dict[str, dict[str, int]]:
        fields = check_facet_fields(fields)
        where = _where(query)
        if where is None:
            return {f: {} for f in fields}
        cond, params = where
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for f in fields:
                if f in _NAME_KINDS:
                    sql = (
                        "SELECT n.name, count(*) AS c FROM names n JOIN datasets d ON d.rid = n.rid "
                        f"WHERE n.kind = ? AND {cond} GROUP BY n.name ORDER BY c DESC, n.name LIMIT ?"
                    )
                    rows = self._db.execute(sql, [_NAME_KINDS[f], *params, size]).fetchall()
                else:
                    sql = (
                        f"SELECT d.{f}, count(*) AS c FROM datasets d WHERE {cond} AND d.{f} IS NOT NULL "
                        f"GROUP BY d.{f} ORDER BY c DESC, d.{f} LIMIT ?"
                    )
                    rows = self._db.execute(sql, [*params, size]).fetchall()
                out[f] = {str(k): int(c) for k, c in rows}
        return out
