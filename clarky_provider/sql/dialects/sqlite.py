"""SQLite: explicit transactions (DDL included), text JSON and ISO 8601 UTC text timestamps."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from clarky_provider.jsoncodec import dumps_utf8
from clarky_provider.sql.dialects.ansi import WarehouseDialect
from clarky_provider.sql.dialects.capabilities import Capabilities
from clarky_provider.sql.dialects.session import Session
from clarky_provider.sql.dialects.type_map import TypeMap
from clarky_provider.sql.dialects.writer import BulkWriter
from clarky_provider.sql.locks import wait_until
from clarky_provider.sql.schema import JSON_TYPES, Column, Columns, timestamp_text
from clarky_provider.tables import FieldType


class SqliteSession(Session):
    """One database file; loads into it run one after another (``begin``)."""

    #: Longest one ``BEGIN IMMEDIATE`` waits in SQLite's busy handler before we try again.
    busy_milliseconds = 1000

    def begin(self, connection: Any) -> None:
        """``BEGIN IMMEDIATE``: take the database's single write lock first, before reading.

        With a plain (deferred) ``BEGIN`` two loads both read, then the second to write fails
        at once with "database is locked" (SQLite cannot wait for a lock while holding a read).
        Taken first, the lock makes loads into one database file run one after the other: a
        load waits for the other's whole transaction, then sees its tables and columns.
        """
        # Python's sqlite3 would otherwise run DDL outside the transaction.
        connection.isolation_level = None
        previous = connection.execute("PRAGMA busy_timeout").fetchone()[0]
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_milliseconds)}")
        try:
            wait_until(lambda: _begin_immediate(connection), "the write lock of the SQLite database")
        finally:
            connection.execute(f"PRAGMA busy_timeout = {int(previous)}")


class SqliteWriter(BulkWriter):
    """``executemany``; JSON as UTF-8 bytes (``SqliteDialect.value_mark`` casts them to text)."""

    def json_encoder(self) -> Callable[[Any], Any]:
        return dumps_utf8

    def timestamp_encoder(self) -> Callable[[Any], Any]:
        return timestamp_text("T", "+00:00", "milliseconds")


class SqliteDialect(WarehouseDialect):
    name = "sqlite"
    capabilities = Capabilities(
        # ``BEGIN IMMEDIATE`` holds the whole database: an empty target stays empty until commit.
        direct_first_loads=True,
        schemas=False,
    )
    types = TypeMap(
        {
            FieldType.STRING: "TEXT",
            FieldType.INTEGER: "INTEGER",
            FieldType.NUMBER: "REAL",
            FieldType.BOOLEAN: "INTEGER",
            FieldType.TIMESTAMP: "TEXT",
            FieldType.ARRAY: "TEXT",
            FieldType.OBJECT: "TEXT",
        }
    )
    session_class = SqliteSession
    writer_class = SqliteWriter
    temporary = "TEMP"

    def existing_columns(self, cursor: Any, schema: str | None, table: str) -> set[str] | None:
        prefix = f"{self.quote(schema)}." if schema else ""
        cursor.execute(f"PRAGMA {prefix}table_info({self.quote(table)})")
        names = {row[1] for row in cursor.fetchall()}
        return names or None

    def value_mark(self, column: Column) -> str:
        """JSON columns arrive as UTF-8 bytes and are stored as text: ``CAST(? AS TEXT)``
        (a quarter less time making and inserting rows than decoding them into ``str`` first)."""
        if column.type in JSON_TYPES:
            return f"CAST({self.placeholder} AS TEXT)"
        return self.placeholder

    def key_order(self, columns: Columns) -> str:
        return ""  # one writer at a time (``SqliteSession.begin``): no row locks to take in order

    def upsert(self, target: str, staging: str, columns: Columns) -> str:
        # "WHERE true" lets SQLite tell the ON CONFLICT clause from a join condition.
        return self.insert_on_conflict(target, staging, columns, where=" WHERE true")

    def close_versions(self, target: str, staging: str, columns: Columns) -> str:
        return self.close_versions_from(target, staging, columns)  # SQLite has no MERGE


def _begin_immediate(connection: Any) -> bool:
    """One try at SQLite's write lock (waiting up to the busy timeout); False while it is held."""
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return False
        raise
    return True
