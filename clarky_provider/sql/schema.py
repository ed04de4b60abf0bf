"""The warehouse table of a ``TableSpec``: its columns, and records turned into rows.

Columns are the spec's typed fields, its derived columns (such as ``primary_email``), the
whole record in ``_raw`` and load metadata. Records arrive already policed (the operators'
column policy: what it removes or hashes is gone from them), and a field the spec does not
know stays in ``_raw`` only (the policy reports it). Values are normalised here once, so every dialect
receives the same Python values.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.jsoncodec import dumps as to_json
from clarky_provider.normalize import parse_timestamp
from clarky_provider.tables import FieldType, TableSpec

log = logging.getLogger(__name__)

#: Identifiers we accept from users for tables and schemas: portable, unquoted-safe, <= 63 chars.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

RAW, LOADED_AT, DAG_ID, RUN_ID, DELETED_AT = "_raw", "_loaded_at", "_dag_id", "_run_id", "_deleted_at"
#: A 64-bit hash of the row's content, so a re-sync writes only the rows that changed.
CONTENT_HASH = "_content_hash"
#: Bumped when the same record would make a different row (normalisation changed): every row
#: then hashes differently once and is rewritten.
ROW_FORMAT = "1"


def check_identifier(value: str, what: str) -> str:
    """Refuse names that are not plain identifiers, before any request or write."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ClarkyConfigError(
            f"{what} {value!r} is not a valid name: use letters, digits and underscores, starting with "
            "a letter or underscore, at most 63 characters."
        )
    return value


INT64 = range(-(2**63), 2**63)


def _integer(value: Any) -> int | None:
    """A 64-bit integer, or None (the original stays in _raw) for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value in INT64 else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _boolean(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def timestamp_or_none(value: Any) -> datetime | None:
    """A timestamp field's column value: aware UTC, or None when unparseable (it stays in _raw)."""
    try:
        return parse_timestamp(value)
    except (TypeError, ValueError):
        return None


#: The API's usual timestamp forms, UTC already: ``2025-05-28T22:50:41.723Z`` and ``...:41Z``.
_UTC_TEXT = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d{3})?Z")


def timestamp_text(separator: str, offset: str, timespec: str) -> Callable[[Any], str | None]:
    """A timestamp field's column value as UTC text in one format, ``<date><separator><time>
    <offset>``, for warehouses that store or take timestamps as text (SQLite, MySQL's files).

    The API's usual forms are cut and pasted instead of parsed and formatted, a third of the
    cost on every timestamp of every row; a non-date (month 13) is None either way, and any
    other form goes through ``timestamp_or_none`` (its fraction to ``timespec``).
    """

    def text(value: Any) -> str | None:
        if value.__class__ is str and (match := _UTC_TEXT.fullmatch(value)) is not None:
            try:
                datetime.fromisoformat(value)  # a real date and time
            except ValueError:
                return None
            date, time, millis = match.groups()
            return f"{date}{separator}{time}{millis or '.000'}{offset}"
        moment = timestamp_or_none(value)
        if moment is None:
            return None
        return moment.replace(tzinfo=None).isoformat(separator, timespec) + offset

    return text


#: Converters of the columns that are not strings or JSON (those two are inlined in the row
#: maker); timestamps as aware UTC datetimes unless the warehouse takes them otherwise.
CONVERTERS: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.INTEGER: _integer,
    FieldType.NUMBER: _number,
    FieldType.BOOLEAN: _boolean,
}
JSON_TYPES = (FieldType.ARRAY, FieldType.OBJECT)

Metadata = tuple[datetime | None, str | None, str | None]
#: A record's ``_raw`` in the warehouse's JSON wire format, and its content hash.
Encoded = tuple[Any, int]
RowMaker = Callable[[dict[str, Any], Metadata, Encoded | None], tuple[Any, ...]]


@dataclass(frozen=True)
class Column:
    name: str
    type: FieldType
    primary_key: bool = False


class Columns:
    """Columns of a table, in order, and its primary key: what every statement is built from.

    ``primary_key`` is a record's key, what statements match staging and target rows on;
    ``table_key`` the table's ``PRIMARY KEY`` (the same, but for a history table, which holds
    several versions of a record: see ``HistoryLayout``)."""

    #: Whether rows are versions of records, of which only the current one is compared.
    versioned = False

    def __init__(
        self,
        columns: tuple[Column, ...],
        primary_key: tuple[str, ...],
        table_key: tuple[str, ...] | None = None,
    ) -> None:
        self.columns = columns
        self.names = tuple(c.name for c in columns)
        self.primary_key = primary_key
        self.table_key = table_key or primary_key

    def key_columns(self) -> Columns:
        """Only the primary key: the table of keys gone upstream (delete detection)."""
        return Columns(tuple(c for c in self.columns if c.primary_key), self.primary_key)


#: The table where resumable loads keep what they read until they commit (``sql/resume.py``),
#: one per schema, and its columns: the target table, the load's key, a sequence number, the
#: unit (a parent whose list is whole), the read's fingerprint, when the row was saved (epoch
#: seconds) and the record as JSON text (NULL in the row that marks a unit finished).
PROGRESS_TABLE = "_clarky_progress"
P_TABLE, P_LOAD, P_SEQ, P_UNIT, P_PLAN, P_SAVED_AT, P_RECORD = (
    "_table",
    "_load",
    "_seq",
    "_unit",
    "_plan",
    "_saved_at",
    "_record",
)
PROGRESS = Columns(
    (
        Column(P_TABLE, FieldType.STRING),
        Column(P_LOAD, FieldType.STRING, primary_key=True),
        Column(P_SEQ, FieldType.INTEGER, primary_key=True),
        Column(P_UNIT, FieldType.STRING),
        Column(P_PLAN, FieldType.STRING),
        Column(P_SAVED_AT, FieldType.INTEGER),
        Column(P_RECORD, FieldType.STRING),
    ),
    (P_LOAD, P_SEQ),
)

#: The table where loads remember which fields the catalog does not know each table has held
#: (``sql/fields.py``), one per schema: a new field is warned about once, when it first appears.
FIELDS_TABLE = "_clarky_fields"
F_TABLE, F_FIELD, F_FIRST_SEEN = "_table", "_field", "_first_seen"
FIELDS = Columns(
    (
        Column(F_TABLE, FieldType.STRING, primary_key=True),
        Column(F_FIELD, FieldType.STRING, primary_key=True),
        Column(F_FIRST_SEEN, FieldType.TIMESTAMP),
    ),
    (F_TABLE, F_FIELD),
)

#: A history table's columns (``HistoryLayout``): when a version began and ended (NULL while it
#: is current), and whether it is current.
VALID_FROM, VALID_TO, IS_CURRENT = "_valid_from", "_valid_to", "_is_current"


class TableLayout(Columns):
    """Columns of a spec's table and the conversion of records into rows in that order."""

    def __init__(
        self, spec: TableSpec, extra: tuple[Column, ...] = (), table_key: tuple[str, ...] | None = None
    ) -> None:
        self.spec = spec
        pk = set(spec.primary_key)
        columns = [Column(f.name, f.type, f.name in pk) for f in spec.fields]
        columns += [Column(d.name, d.type) for d in spec.derived]
        columns += [
            Column(RAW, FieldType.OBJECT),
            Column(LOADED_AT, FieldType.TIMESTAMP),
            Column(DAG_ID, FieldType.STRING),
            Column(RUN_ID, FieldType.STRING),
            Column(DELETED_AT, FieldType.TIMESTAMP),
            Column(CONTENT_HASH, FieldType.INTEGER),
            *extra,
        ]
        super().__init__(tuple(columns), spec.primary_key, table_key)
        self._derived = tuple(d.value for d in spec.derived)
        self._row = self.row_maker()

    def row(self, record: dict[str, Any], metadata: Metadata) -> tuple[Any, ...]:
        """One record as a row in column order, JSON columns as text."""
        return self._row(record, metadata, None)

    def row_maker(
        self,
        encode_json: Callable[[Any], Any] = to_json,
        timestamp: Callable[[Any], Any] = timestamp_or_none,
    ) -> RowMaker:
        """A function turning a record into a row; ``encode_json`` and ``timestamp`` let a
        warehouse take JSON and timestamp columns in its own form (PostgreSQL's binary ``jsonb``,
        SQLite's text timestamps).

        This is the hot path of every load (tens of thousands of records a second): fields are
        read in one C-level ``map``, strings and JSON are converted inline, and only the few
        typed fields (numbers, timestamps, booleans) cost a function call.
        """
        fields = self.spec.fields
        names = tuple(f.name for f in fields)
        strings = tuple(i for i, f in enumerate(fields) if f.type is FieldType.STRING)
        jsons = tuple(i for i, f in enumerate(fields) if f.type in JSON_TYPES)
        converters = {**CONVERTERS, FieldType.TIMESTAMP: timestamp}
        typed = tuple((i, converters[f.type]) for i, f in enumerate(fields) if f.type in converters)
        derived = self._derived
        encode = self.encoder(encode_json)

        def row(
            record: dict[str, Any], metadata: Metadata, encoded: Encoded | None = None
        ) -> tuple[Any, ...]:
            values = list(map(record.get, names))
            for i in strings:
                value = values[i]
                if value is not None and value.__class__ is not str:
                    values[i] = to_json(value)  # a string column keeps anything else as JSON text
            for i in jsons:
                if values[i] is not None:
                    values[i] = encode_json(values[i])
            for i, convert in typed:
                values[i] = convert(values[i])
            for derive in derived:
                values.append(derive(record))
            raw, digest = encoded or encode(record)
            values.append(raw)
            values.extend(metadata)
            values.append(None)
            values.append(digest)
            return tuple(values)

        return row

    def record_key(self, record: dict[str, Any]) -> Any:
        """A record's primary key as its row holds it and the database returns it: the value,
        or a tuple of values (keys are string columns: anything else is kept as JSON text)."""
        values = [
            v if v is None or v.__class__ is str else to_json(v) for v in map(record.get, self.primary_key)
        ]
        return values[0] if len(values) == 1 else tuple(values)

    def encoder(self, encode_json: Callable[[Any], Any] = to_json) -> Callable[[dict[str, Any]], Encoded]:
        """``encode(record)``: its ``_raw`` and the signed 64-bit hash of it (the whole record),
        keyed by the table's columns and ``ROW_FORMAT``, so a row made differently hashes
        differently. A re-sync compares the hash before making the rest of the row."""
        key = hashlib.blake2b(f"{ROW_FORMAT}:{','.join(self.names)}".encode(), digest_size=32).digest()

        def encode(record: dict[str, Any]) -> Encoded:
            raw = encode_json(record)
            data = raw.encode() if raw.__class__ is str else raw
            digest = hashlib.blake2b(data, digest_size=8, key=key).digest()
            return raw, int.from_bytes(digest, "big", signed=True)

        return encode


class HistoryLayout(TableLayout):
    """A history table (``write_mode="history"``): one row per version of a record, keyed by
    the record's key and ``_valid_from``, with ``_valid_to`` (NULL while current) and
    ``_is_current``.

    A version starts at the record's ``version_field`` (``updated_at``) where it has one, else
    at the load's start (``_loaded_at``); the load engine moves a start that is not after the
    record's last version to the load's start (``WarehouseDialect.restamp_versions``).
    ``deleted_field`` is the API's own deletion flag: a record read with it set closes its
    version instead of opening one.
    """

    versioned = True

    def __init__(self, spec: TableSpec, version_field: str | None, deleted_field: str | None) -> None:
        self.version_field, self.deleted_field = version_field, deleted_field
        super().__init__(
            spec,
            (
                Column(VALID_FROM, FieldType.TIMESTAMP),
                Column(VALID_TO, FieldType.TIMESTAMP),
                Column(IS_CURRENT, FieldType.BOOLEAN),
            ),
            (*spec.primary_key, VALID_FROM),
        )

    def row_maker(
        self,
        encode_json: Callable[[Any], Any] = to_json,
        timestamp: Callable[[Any], Any] = timestamp_or_none,
    ) -> RowMaker:
        """The table's row, then a current version's ``_valid_from``, ``_valid_to`` and
        ``_is_current``."""
        make, field = super().row_maker(encode_json, timestamp), self.version_field

        def row(
            record: dict[str, Any], metadata: Metadata, encoded: Encoded | None = None
        ) -> tuple[Any, ...]:
            start = timestamp(record.get(field)) if field else None
            return (*make(record, metadata, encoded), metadata[0] if start is None else start, None, True)

        return row
