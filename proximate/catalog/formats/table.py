"""Tables (Parquet, CSV) as catalog headers: one dimension ``rows``, one variable per column.

Longitude/latitude columns (``lon``/``lat``, ``longitude``/``latitude``, ``*_longitude``/``*_latitude``) get CF
coordinate attributes, so the extractor's bbox finds them as it finds a grid's; datetime columns become CF times
(seconds since the epoch), so the record's time span covers them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from proximate.catalog.formats.base import FormatHandler, Header, Var

ROWS = "rows"
_LAT = re.compile(r"^(lat|latitude)$|_(lat|latitude)$", re.IGNORECASE)
_LON = re.compile(r"^(lon|lng|long|longitude)$|_(lon|lng|longitude)$", re.IGNORECASE)
EPOCH_UNITS = "seconds since 1970-01-01 00:00:00"


def column_attrs(name: str, dtype: object) -> dict[str, str]:
    """CF attributes a column's name and type imply (coordinates, times); none for other columns."""
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return {"standard_name": "time", "units": EPOCH_UNITS}
    if pd.api.types.is_numeric_dtype(dtype) and _LAT.search(name):
        return {"standard_name": "latitude", "units": "degrees_north"}
    if pd.api.types.is_numeric_dtype(dtype) and _LON.search(name):
        return {"standard_name": "longitude", "units": "degrees_east"}
    return {}


def _values(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        seconds = series.astype("datetime64[ns]").astype("int64").astype("float64") / 1e9
        return np.where(series.isna().to_numpy(), np.nan, seconds)
    return series.to_numpy(dtype="float64", na_value=np.nan)


def table_header(columns: dict[str, object], rows: int, read: Callable[[str], pd.Series]) -> Header:
    """A header for a table of ``rows`` rows whose columns have the given dtypes; ``read(name)`` loads one."""
    header = Header(attrs={}, dims={ROWS: rows})
    for name, dtype in columns.items():
        numeric = pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype)
        header.variables[name] = Var(
            attrs=column_attrs(name, dtype),
            dims=(ROWS,),
            shape=(rows,),
            dtype=str(dtype),
            chunks=None,
            read=(lambda n=name: _values(read(n))) if numeric else (lambda: np.array([])),
            numeric=numeric,
        )
    return header


class ParquetHandler(FormatHandler):
    name = "parquet"

    def read_header(self, full: Path) -> tuple[Header, Callable[[], None]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(full)
        schema = pf.schema_arrow.empty_table().to_pandas()
        header = table_header(
            dict(schema.dtypes), pf.metadata.num_rows, lambda c: pf.read(columns=[c]).column(c).to_pandas()
        )
        header.attrs.update({k.decode(): v.decode() for k, v in (pf.schema_arrow.metadata or {}).items()
                             if k != b"pandas"})  # fmt: skip
        return header, pf.close


class CSVHandler(FormatHandler):
    name = "csv"

    def read_header(self, full: Path) -> tuple[Header, Callable[[], None]]:
        from proximate.tables import csv_date_columns, read_csv

        frame = read_csv(full, dates=csv_date_columns(full))
        return table_header(dict(frame.dtypes), len(frame), lambda c: frame[c]), lambda: None
