"""A table of records described in terms both sides share: typed fields, key, cursor.

The catalog (``resources.py``) types its resources' fields in these terms, the operators turn
a resource into a ``TableSpec``, and ``sql/`` builds tables from one; ``sql/`` never sees the
catalog, and the catalog never sees SQL (as dlt's ``common/schema`` sits between its sources
and destinations). Types are logical: each warehouse dialect maps them to its own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class FieldType(str, enum.Enum):
    """Logical type of a record field; dialects map it to a column type."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    ARRAY = "array"
    OBJECT = "object"


@dataclass(frozen=True)
class Field:
    """A typed field of a record: one column of its table."""

    name: str
    type: FieldType


@dataclass(frozen=True)
class DerivedField:
    """A column computed from the whole record, for the queries people write most."""

    name: str
    type: FieldType
    value: Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class TableSpec:
    """What a stream of records makes as a table: its fields in column order, the primary key,
    derived columns, and the cursor (the timestamp field whose newest value is the watermark)."""

    #: What the records are, for log lines (``Clarky contacts``).
    source: str
    fields: tuple[Field, ...]
    primary_key: tuple[str, ...]
    derived: tuple[DerivedField, ...] = ()
    cursor: str | None = None
