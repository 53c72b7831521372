"""The typed catalog query, shared by every backend, and the text rules that make backends agree.

Fields are simple scalars so a Prefect flow can expose them as form fields. User text is never query syntax:
it is cut into word tokens here, and every backend matches records holding all the tokens.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from proximate.catalog.errors import CatalogError
from proximate.catalog.geo import check_bbox
from proximate.catalog.records import DatasetRecord

#: The deepest page any backend serves (OpenSearch's default max_result_window).
MAX_WINDOW = 10_000

SortKey = Literal[
    "path", "-path", "size", "-size", "time_start", "-time_start", "time_end", "-time_end",
    "mtime", "-mtime", "region", "-region",
]  # fmt: skip

#: Sort key to the record field / column it orders by.
SORT_FIELDS = {"path": "path", "size": "size", "time_start": "time_start", "time_end": "time_end",
               "mtime": "mtime_ns", "region": "region"}  # fmt: skip

FACET_FIELDS = ("region", "format", "status", "variables", "standard_names")

_WORD = re.compile(r"[^\W_]+")
#: Search text of one record is capped: the record's attrs can be long and the index need not hold it all.
MAX_TEXT_CHARS = 20_000
#: What a query's free text may hold. Every word is one more set to intersect (SQLite) or clause to match
#: (OpenSearch): 200,000 words held SQLite's catalog lock for 24 s. A real search names a few words.
MAX_QUERY_CHARS = 1_000
MAX_QUERY_WORDS = 32
#: The largest size filter: sizes are stored as signed 64-bit integers by both backends.
MAX_SIZE_BYTES = 2**63 - 1
#: The most values :meth:`Catalog.facets` returns per field (as deep as a page goes; the STAC catalog asks for
#: every region this way).
MAX_FACET_SIZE = MAX_WINDOW


def tokens(text: str | None) -> list[str]:
    """Word tokens (letters and digits; everything else separates, '_' included), lower-case. Operators,
    quotes and wildcards in user text are thereby plain separators, never syntax."""
    return _WORD.findall(text.lower()) if text else []


def search_text(record: DatasetRecord) -> str:
    """The free-text field of a record: names, units and attributes, already tokenised the same way as
    queries, so both backends see identical words."""
    parts: list[str] = [record.path, record.region or "", record.error or ""]
    for var in record.variables:
        parts += [var.name, var.standard_name or "", var.long_name or "", var.units or ""]
    for key, value in record.attrs.items():
        parts.append(key)
        parts.append(" ".join(map(str, value)) if isinstance(value, list) else str(value))
    return " ".join(tokens(" ".join(parts)))[:MAX_TEXT_CHARS]


def check_query_text(text: str | None) -> str | None:
    """The free text of a query, refused when longer than :data:`MAX_QUERY_CHARS` or holding more than
    :data:`MAX_QUERY_WORDS` distinct words.

    Raises:
        CatalogError: naming the limit passed.

    Examples:
        >>> check_query_text("surface air temperature")
        'surface air temperature'
    """
    if text is None:
        return None
    if len(text) > MAX_QUERY_CHARS:
        raise CatalogError(f"search text of {len(text)} characters: at most {MAX_QUERY_CHARS} are allowed")
    words = len(set(tokens(text)))
    if words > MAX_QUERY_WORDS:
        raise CatalogError(f"search text of {words} distinct words: at most {MAX_QUERY_WORDS} are allowed")
    return text


def check_facet_size(size: Any) -> int:
    """The number of values per facet field, between 1 and :data:`MAX_FACET_SIZE`: what every backend takes.

    Raises:
        CatalogError: a size that is not an integer in range.

    Examples:
        >>> check_facet_size(50)
        50
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_FACET_SIZE:
        raise CatalogError(f"facet size {size!r}: give a whole number from 1 to {MAX_FACET_SIZE}")
    return size


def iso(value: _dt.datetime | _dt.date | str | None) -> str | None:
    """A query time as the catalog stores times: naive UTC ``YYYY-MM-DDTHH:MM:SS``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    return f"{value.isoformat()}T00:00:00"


class CatalogQuery(BaseModel):
    """What to look for. Every field narrows the result (AND); unset fields do not filter."""

    text: str | None = Field(default=None, description="Words that must all appear in names or attributes.")
    variable: str | None = Field(default=None, description="A data variable with exactly this name.")
    standard_name: str | None = Field(default=None, description="A data variable with this CF standard name.")
    region: str | None = Field(default=None, description="Only datasets held in this region.")
    status: Literal["ok", "unsupported", "error"] | None = Field(
        default=None, description="Only datasets read (ok), in a format not read (unsupported), or unreadable (error)."
    )
    time_start: _dt.datetime | None = Field(default=None, description="Overlaps a span that ends after this.")
    time_end: _dt.datetime | None = Field(default=None, description="Overlaps a span that starts before this.")
    bbox: list[float] | None = Field(
        default=None, description="[west, south, east, north] it must intersect; west > east crosses 180°."
    )
    min_size: int | None = Field(default=None, ge=0, description="At least this many bytes.")
    max_size: int | None = Field(default=None, ge=0, description="At most this many bytes.")
    sort: SortKey = Field(default="path", description="Field to sort by; '-' in front for descending.")
    page: int = Field(default=1, ge=1, description="1-based page number.")
    page_size: int = Field(default=20, ge=1, le=1000, description="Records per page.")

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, value: list[float] | None) -> list[float] | None:
        return None if value is None else check_bbox(value)

    # These raise CatalogError (not ValueError, which pydantic would fold into a ValidationError): a query past
    # a limit is refused the same way whichever backend it is sent to.
    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return check_query_text(value)

    @field_validator("min_size", "max_size")
    @classmethod
    def _size(cls, value: int | None, info: Any) -> int | None:
        if value is not None and value > MAX_SIZE_BYTES:
            raise CatalogError(f"{info.field_name}={value} is larger than the largest size, {MAX_SIZE_BYTES}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CatalogQuery:
        if self.page * self.page_size > MAX_WINDOW:
            raise ValueError(f"page * page_size may not exceed {MAX_WINDOW}; narrow the query instead")
        if self.time_start and self.time_end and iso(self.time_start) > iso(self.time_end):
            raise ValueError("time_start is after time_end")
        return self

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    @property
    def sort_field(self) -> str:
        return SORT_FIELDS[self.sort.lstrip("-")]

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    @property
    def text_tokens(self) -> list[str] | None:
        """``None`` when no text filter; ``[]`` when the text holds no words (then nothing matches)."""
        return None if self.text is None or not self.text.strip() else tokens(self.text)


class SearchResult(BaseModel):
    """One page of records plus the total number matching."""

    total: int
    page: int
    page_size: int
    records: list[DatasetRecord]

    def ids(self) -> list[str]:
        return [r.id for r in self.records]


def empty_result(query: CatalogQuery) -> SearchResult:
    return SearchResult(total=0, page=query.page, page_size=query.page_size, records=[])


class DatasetQuery(BaseModel):
    """Which datasets an analysis runs over: the filtering fields of a catalog query, as simple form fields
    (no paging: an analysis takes every match)."""

    text: str | None = Field(default=None, description="Words that must all appear in names or attributes.")
    variable: str | None = Field(default=None, description="A data variable with exactly this name.")
    standard_name: str | None = Field(default=None, description="A data variable with this CF standard name.")
    region: str | None = Field(default=None, description="Only datasets held in this region.")
    time_start: _dt.datetime | None = Field(default=None, description="Overlaps a span that ends after this.")
    time_end: _dt.datetime | None = Field(default=None, description="Overlaps a span that starts before this.")
    bbox: list[float] | None = Field(
        default=None, description="[west, south, east, north] it must intersect; west > east crosses 180°."
    )

    def page(self, page: int, page_size: int = 500) -> CatalogQuery:
        return CatalogQuery(**self.model_dump(), status="ok", sort="path", page=page, page_size=page_size)

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.model_dump(exclude_none=True).items()) or "(everything)"


def find_all(catalog: Any, query: DatasetQuery, limit: int = MAX_WINDOW) -> list[DatasetRecord]:
    """Every ok record matching ``query`` (up to ``limit``), in path order."""
    out: list[DatasetRecord] = []
    page = 1
    while len(out) < limit:
        result = catalog.search(query.page(page))
        out.extend(result.records)
        if not result.records or len(out) >= result.total:
            break
        page += 1
    return out[:limit]
