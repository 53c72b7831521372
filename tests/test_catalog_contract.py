"""The catalog contract: one suite, every backend (as stac-fastapi's Elasticsearch and OpenSearch backends
share theirs). SQLite on a temp file and a real OpenSearch node (tests/conftest.py). Expected answers come from
the brute-force reference in ``catalog_records``."""

from __future__ import annotations

import pytest
from catalog_records import make_record, matches, sample_records

from proximate.catalog import CatalogQuery, open_catalog
from proximate.catalog.records import record_id

BACKENDS = ["sqlite", "opensearch"]


@pytest.fixture(params=BACKENDS)
def catalog(request, tmp_path):
    if request.param == "sqlite":
        cat = open_catalog("sqlite", sqlite_path=tmp_path / "catalog" / "c.sqlite")
    else:
        url = request.getfixturevalue("opensearch_url")
        cat = open_catalog("opensearch", opensearch_url=url, index="test-datasets")
    try:
        yield cat
    finally:
        cat.close()


@pytest.fixture
def loaded(catalog):
    records = sample_records()
    assert catalog.upsert(records) == len(records)
    return catalog, records


def expected_paths(records, **q) -> list[str]:
    return sorted(r.path for r in records if matches(r, **q))


def found_paths(catalog, **q) -> list[str]:
    res = catalog.search(CatalogQuery(page_size=1000, **q))
    assert res.total == len(res.records)
    return sorted(r.path for r in res.records)


def test_upsert_get_roundtrip_and_replace_by_id(loaded):
    catalog, records = loaded
    assert catalog.count() == len(records)
    for rec in records[:3]:
        assert catalog.get(rec.id) == rec
    assert catalog.get("no-such-id") is None
    changed = records[0].model_copy(update={"title": "Renamed", "size": 123})
    catalog.upsert([changed])
    assert catalog.count() == len(records)
    assert catalog.get(changed.id) == changed
    assert catalog.get_many([records[1].id, "nope"]) == {records[1].id: records[1]}


@pytest.mark.parametrize(
    "q",
    [
        {"variable": "tas"},
        {"variable": "pr"},
        {"variable": "time"},  # a coordinate, not a data variable
        {"standard_name": "sea_surface_temperature"},
        {"standard_name": "eastward_wind", "region": "b"},
        {"region": "a"},
        {"status": "error"},
        {"min_size": 1000, "max_size": 8000},
        {"max_size": 0},
    ],
)
def test_filters_by_name_region_status_and_size(loaded, q):
    catalog, records = loaded
    assert found_paths(catalog, **q) == expected_paths(records, **q)


@pytest.mark.parametrize(
    "text",
    ["temperature", "Air TEMPERATURE", "surface temperature pacific", "hadley centre", "precipitation_flux",
     "HDF error", "station", "nonexistentword", "bulk 7"],
)  # fmt: skip
def test_free_text_over_names_and_attributes(loaded, text):
    catalog, records = loaded
    assert found_paths(catalog, text=text) == expected_paths(records, text=text)


@pytest.mark.parametrize("text", ['") OR 1=1 --', "*:*", "'; DROP TABLE datasets; --", "title:*", "tas OR pr", "-tas"])
def test_user_text_is_data_not_query_syntax(loaded, text):
    catalog, records = loaded
    expected = expected_paths(records, text=text)
    assert found_paths(catalog, text=text) == expected
    if text == "*:*":
        assert expected == []
    if text == '") OR 1=1 --':  # only the records that literally hold the words "or" and "1"
        assert expected == ["obs/station 1 or 2.nc", "weird/quote'\"name.nc"]
    # Hostile strings in exact-match fields are plain values too.
    assert found_paths(catalog, variable=text) == []
    assert found_paths(catalog, region=text) == []
    assert catalog.count() == len(records)


@pytest.mark.parametrize(
    "span",
    [
        ("2000-06-01T00:00:00", "2000-06-02T00:00:00"),
        ("2000-01-01T00:00:00", "2000-01-01T00:00:00"),  # touches two spans at their edges
        ("2080-01-01T00:00:00", None),
        (None, "1985-06-01T00:00:00"),
        ("1850-01-01T00:00:00", "1851-01-01T00:00:00"),
    ],
)
def test_time_range_overlap(loaded, span):
    catalog, records = loaded
    q = {"time_start": span[0], "time_end": span[1]}
    q = {k: v for k, v in q.items() if v is not None}
    assert found_paths(catalog, **q) == expected_paths(records, **q)


@pytest.mark.parametrize(
    "bbox",
    [
        [0, 40, 10, 55],  # Europe
        [175, -10, -175, 10],  # across the antimeridian
        [-179, -5, -170, 5],  # only the eastern half of a crossing box
        [160, -45, 172, -30],  # a plain box meeting the western half
        [-180, -90, 180, 90],  # everything with a box
        [5, 50, 5, 50],  # a point on a point
        [-5, -1, -4, 0],  # touches the equator transect from below
        [100, -89, 110, -80],  # nothing there
        [179, 80, -179, 85],  # crossing, inside the polar cap
    ],
)
def test_bbox_intersection_is_antimeridian_aware(loaded, bbox):
    catalog, records = loaded
    assert found_paths(catalog, bbox=bbox) == expected_paths(records, bbox=bbox)


def test_combined_filters(loaded):
    catalog, records = loaded
    q = {"text": "temperature", "region": "a", "time_start": "1985-01-01T00:00:00", "bbox": [-180, -30, 0, 30]}
    assert found_paths(catalog, **q) == expected_paths(records, **q)


@pytest.mark.parametrize("sort", ["path", "-size", "time_start", "-time_end", "region", "-mtime"])
def test_paging_and_sorting(loaded, sort):
    catalog, records = loaded
    expected = expected_order(records, sort)
    got = []
    page = 1
    while True:
        res = catalog.search(CatalogQuery(sort=sort, page=page, page_size=4))
        assert res.total == len(records)
        if not res.records:
            break
        got += res.ids()
        page += 1
    assert got == expected


def expected_order(records, sort: str) -> list[str]:
    """Ids in the order every backend sorts them: missing values last either way, ties by region, path."""
    key = sort.lstrip("-")
    field = {"mtime": "mtime_ns"}.get(key, key)
    present = [r for r in records if getattr(r, field) is not None]
    missing = [r for r in records if getattr(r, field) is None]
    present.sort(key=lambda r: (r.region, r.path))
    value = (lambda r: r.mtime_ns // 1_000_000) if key == "mtime" else (lambda r: getattr(r, field))
    present.sort(key=value, reverse=sort.startswith("-"))
    missing.sort(key=lambda r: (r.region, r.path))
    return [r.id for r in present + missing]


@pytest.mark.parametrize(
    "q",
    [
        {"variable": "tas"},  # a name alone: its total comes from the names rows (SQLite)
        {"text": "temperature"},  # text alone: the total from the text index
        {"standard_name": "air_temperature", "min_size": 150, "time_start": "1995-01-01T00:00:00"},
        {"variable": "tas", "standard_name": "air_temperature", "region": "a"},
        {"text": "temperature", "bbox": [-180, -60, 180, 60]},
        {"variable": "uas", "bbox": [175, 50, -175, 89]},
        {"region": "b", "max_size": 10_000},
    ],
)
@pytest.mark.parametrize("sort", ["path", "-path", "-size", "time_start", "-mtime"])
def test_filtered_pages_are_sorted_and_counted_exactly(loaded, q, sort):
    """Every way a backend may answer (set sizes, one sorted pass, an index walk) gives the same pages."""
    catalog, records = loaded
    expected = expected_order([r for r in records if matches(r, **q)], sort)
    got, page = [], 1
    while True:
        res = catalog.search(CatalogQuery(sort=sort, page=page, page_size=2, **q))
        assert res.total == len(expected)
        if not res.records:
            break
        got += res.ids()
        page += 1
    assert got == expected


def test_facet_counts(loaded):
    catalog, records = loaded
    for q in (None, CatalogQuery(region="a"), CatalogQuery(text="temperature")):
        subset = [r for r in records if q is None or matches(r, **q.model_dump(exclude_defaults=True))]
        expected = {}
        for field, values in (
            ("region", lambda r: [r.region]),
            ("status", lambda r: [r.status]),
            ("variables", lambda r: {v.name for v in r.variables if not v.coordinate}),
            ("standard_names", lambda r: {v.standard_name for v in r.variables if not v.coordinate} - {None}),
        ):
            counts: dict[str, int] = {}
            for r in subset:
                for v in values(r):
                    counts[v] = counts.get(v, 0) + 1
            expected[field] = counts
        got = catalog.facets(q, fields=list(expected))
        assert got == expected
        for counts in got.values():  # most frequent first, ties by name
            assert list(counts.items()) == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def test_delete_fingerprints_and_stale(loaded):
    catalog, records = loaded
    region_b = {r.path: r for r in records if r.region == "b"}
    fps = catalog.fingerprints("b")
    assert set(fps) == set(region_b)
    some = next(iter(region_b.values()))
    assert fps[some.path] == (some.size, some.mtime_ns, some.etag, some.status)
    keep = sorted(region_b)[:2]
    removed = catalog.delete_stale("b", keep)
    assert removed == sorted(set(region_b) - set(keep))
    assert set(catalog.fingerprints("b")) == set(keep)
    assert len(catalog.fingerprints("a")) == sum(r.region == "a" for r in records)
    assert catalog.delete([record_id("b", keep[0]), "no-such-id"]) == 1
    assert catalog.get(record_id("b", keep[0])) is None
    assert catalog.count() == len(records) - len(region_b) + 1


def test_reindex_replaces_everything(loaded):
    catalog, records = loaded
    fresh = [make_record("c", f"new/{i}.nc", variables=[("zg", "geopotential_height", None)]) for i in range(3)]
    assert catalog.reindex(fresh) == 3
    assert catalog.count() == 3
    assert catalog.get(records[0].id) is None
    assert found_paths(catalog, variable="zg") == [f"new/{i}.nc" for i in range(3)]
    catalog.upsert([records[0]])  # still writable after the swap
    assert catalog.count() == 4


def test_error_records_are_searchable(loaded):
    catalog, _records = loaded
    res = catalog.search(CatalogQuery(status="error"))
    assert [r.path for r in res.records] == ["broken/corrupt.nc"]
    assert "HDF error" in res.records[0].error
    assert found_paths(catalog, text="corrupt") == ["broken/corrupt.nc"]


# -- queries past a limit: refused the same way by every backend, before the backend does any work --------------


def test_search_text_past_the_word_or_length_cap_is_refused_and_the_cap_itself_is_served(loaded):
    import time

    from proximate.catalog import CatalogError
    from proximate.catalog.query import MAX_QUERY_CHARS, MAX_QUERY_WORDS

    catalog, records = loaded
    flood = " ".join(f"w{i}" for i in range(200_000))  # 24 s under SQLite's catalog lock before the cap
    started = time.monotonic()
    with pytest.raises(CatalogError, match=f"search text of {len(flood)} characters: at most {MAX_QUERY_CHARS}"):
        catalog.search(CatalogQuery(text=flood))
    many = " ".join(f"w{i}" for i in range(MAX_QUERY_WORDS + 1))
    with pytest.raises(CatalogError, match=f"{MAX_QUERY_WORDS + 1} distinct words: at most {MAX_QUERY_WORDS}"):
        catalog.search(CatalogQuery(text=many))
    assert time.monotonic() - started < 10  # refused, not searched
    # At the cap (repeated words count once), the backend answers as the reference does.
    text = " ".join(["temperature"] * 40 + [f"s{i}" for i in range(MAX_QUERY_WORDS - 1)])
    assert found_paths(catalog, text=text) == expected_paths(records, text=text) == []
    assert found_paths(catalog, text="temperature " * 80) == expected_paths(records, text="temperature")
    assert catalog.count() == len(records)


@pytest.mark.parametrize("field", ["min_size", "max_size"])
def test_size_bounds_past_64_bits_are_refused_and_the_largest_is_served(loaded, field):
    from proximate.catalog import CatalogError
    from proximate.catalog.query import MAX_SIZE_BYTES

    catalog, records = loaded
    with pytest.raises(CatalogError, match=f"{field}={2**70} is larger than the largest size, {MAX_SIZE_BYTES}"):
        catalog.search(CatalogQuery(**{field: 2**70}))
    q = {field: MAX_SIZE_BYTES}
    assert found_paths(catalog, **q) == expected_paths(records, **q)


@pytest.mark.parametrize("size", [-1, 0, 10_001, 2**70, 2.5, "5", True, None])
def test_facet_sizes_out_of_range_are_refused_the_same_by_every_backend(loaded, size):
    from proximate.catalog import CatalogError

    catalog, _ = loaded
    with pytest.raises(CatalogError, match=f"facet size {size!r}: give a whole number from 1 to 10000"):
        catalog.facets(None, fields=["region"], size=size)
    with pytest.raises(CatalogError, match="facet size"):
        catalog.facets(CatalogQuery(region="a"), fields=["region"], size=size)


def test_facet_sizes_at_the_bounds_are_served(loaded):
    catalog, records = loaded
    regions: dict[str, int] = {}
    for r in records:
        regions[r.region] = regions.get(r.region, 0) + 1
    top = max(regions.items(), key=lambda kv: (kv[1], [-ord(c) for c in kv[0]]))
    assert catalog.facets(None, fields=["region"], size=10_000) == {"region": regions}
    assert catalog.facets(None, fields=["region"], size=1)["region"] == dict([top])
