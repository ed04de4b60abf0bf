"""Arrow schemas of a table's columns: Parquet exports and DuckDB's bulk path (needs pyarrow)."""

from __future__ import annotations

from typing import Any

from clarky_provider.sql.schema import Columns
from clarky_provider.tables import FieldType


def arrow_schema(columns: Columns, timestamp_unit: str) -> Any:
    """Typed columns; JSON columns as their text, timestamps as UTC instants of ``timestamp_unit``."""
    import pyarrow as pa

    types = {
        FieldType.STRING: pa.string(),
        FieldType.INTEGER: pa.int64(),
        FieldType.NUMBER: pa.float64(),
        FieldType.BOOLEAN: pa.bool_(),
        FieldType.TIMESTAMP: pa.timestamp(timestamp_unit, tz="UTC"),
        FieldType.ARRAY: pa.string(),
        FieldType.OBJECT: pa.string(),
    }
    return pa.schema([pa.field(c.name, types[c.type]) for c in columns.columns])
