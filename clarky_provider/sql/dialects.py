"""What differs between warehouses: types, quoting, the bulk path into staging, and the upsert.

``SqlDialect`` is ANSI SQL with ``MERGE`` (Snowflake, BigQuery, Redshift, DuckDB, PostgreSQL 15+
all accept that shape); PostgreSQL adds ``COPY``, ``ON CONFLICT`` and advisory locks; SQLite adds
its own transaction handling and text timestamps. A new warehouse is a subclass of a few lines.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any

from clarky_provider.jsoncodec import dumps as to_json
from clarky_provider.jsoncodec import dumps_jsonb
from clarky_provider.resources import FieldType
from clarky_provider.sql.schema import DELETED_AT, TableLayout

log = logging.getLogger(__name__)


class SqlDialect:
    """ANSI SQL with MERGE; the fallback for any common-sql connection."""

    name = "ansi"
    placeholder = "%s"
    types: dict[FieldType, str] = {
        FieldType.STRING: "VARCHAR",
        FieldType.INTEGER: "BIGINT",
        FieldType.NUMBER: "DOUBLE PRECISION",
        FieldType.BOOLEAN: "BOOLEAN",
        FieldType.TIMESTAMP: "TIMESTAMP WITH TIME ZONE",
        FieldType.ARRAY: "VARCHAR",
        FieldType.OBJECT: "VARCHAR",
    }
    temporary = "TEMPORARY"

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def qualified(self, schema: str | None, table: str) -> str:
        return f"{self.quote(schema)}.{self.quote(table)}" if schema else self.quote(table)

    def begin(self, connection: Any) -> None:
        """Start the load's single transaction (DB-API drivers start one implicitly)."""

    def column_list(self, layout: TableLayout, prefix: str = "") -> str:
        return ", ".join(prefix + self.quote(name) for name in layout.names)

    def create_table(self, qualified: str, layout: TableLayout, *, temporary: bool = False) -> str:
        columns = [f"{self.quote(c.name)} {self.types[c.type]}" for c in layout.columns]
        if temporary:
            return f"CREATE {self.temporary} TABLE {qualified} ({', '.join(columns)})"
        pk = ", ".join(self.quote(k) for k in layout.primary_key)
        return f"CREATE TABLE IF NOT EXISTS {qualified} ({', '.join(columns)}, PRIMARY KEY ({pk}))"

    def create_schema(self, schema: str) -> str | None:
        return f"CREATE SCHEMA IF NOT EXISTS {self.quote(schema)}"

    def schema_exists(self, cursor: Any, schema: str) -> bool:
        """Whether ``schema`` exists; False when the warehouse cannot tell (ANSI SQL), so that
        ``CREATE SCHEMA IF NOT EXISTS`` runs, and decides."""
        return False

    def try_lock(self, cursor: Any, schema: str | None, table: str | None) -> bool:
        """Take, unless another transaction holds it, this transaction's lock on the DDL of
        ``table`` (of ``schema`` itself when ``table`` is None); True when taken.

        Held until commit or rollback: DDL is transactional, so a table one load is creating
        stays invisible to the others until then, and they must not create it too. ANSI SQL
        has no such lock: True, and ``CREATE ... IF NOT EXISTS`` is all there is.
        """
        return True

    def add_column(self, qualified: str, name: str, ftype: FieldType) -> str:
        return f"ALTER TABLE {qualified} ADD COLUMN {self.quote(name)} {self.types[ftype]}"

    def existing_columns(self, cursor: Any, schema: str | None, table: str) -> set[str] | None:
        """Column names of the table, or None when it does not exist."""
        schema_test = "table_schema = %s" if schema else "table_schema = CURRENT_SCHEMA()"
        params: list[Any] = [schema] if schema else []
        cursor.execute(
            f"SELECT column_name FROM information_schema.columns WHERE {schema_test} AND table_name = %s",
            [*params, table],
        )
        names = {row[0] for row in cursor.fetchall()}
        return names or None

    def adapt_rows(self, rows: list[tuple[Any, ...]], layout: TableLayout) -> Sequence[Sequence[Any]]:
        return rows

    def json_encoder(self, cursor: Any) -> Callable[[Any], Any]:
        """How JSON columns travel to this warehouse through ``row_writer`` (text by default)."""
        return to_json

    @contextmanager
    def row_writer(
        self, cursor: Any, table: str, layout: TableLayout, batch_size: int
    ) -> Iterator[Callable[[tuple[Any, ...]], None]]:
        """Yield ``write(row)`` that loads rows into ``table``: ``executemany`` every ``batch_size`` rows."""
        marks = ", ".join([self.placeholder] * len(layout.names))
        statement = f"INSERT INTO {table} ({self.column_list(layout)}) VALUES ({marks})"
        batch: list[tuple[Any, ...]] = []

        def write(row: tuple[Any, ...]) -> None:
            batch.append(row)
            if len(batch) >= batch_size:
                cursor.executemany(statement, self.adapt_rows(batch, layout))
                batch.clear()

        yield write
        if batch:
            cursor.executemany(statement, self.adapt_rows(batch, layout))

    def lock_for_direct_load(self, target: str) -> str | None:
        """Statement that keeps other writers out of ``target`` until commit, or None if the
        warehouse cannot; without one, merges and replaces always go through staging."""
        return None

    def key_match(self, layout: TableLayout, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{self.quote(k)} = {right}.{self.quote(k)}" for k in layout.primary_key)

    def count_existing(self, target: str, staging: str, layout: TableLayout) -> str:
        return (
            f"SELECT COUNT(*) FROM {staging} s WHERE EXISTS "
            f"(SELECT 1 FROM {target} t WHERE {self.key_match(layout, 't', 's')})"
        )

    def upsert(self, target: str, staging: str, layout: TableLayout) -> str:
        updates = ", ".join(
            f"{self.quote(n)} = s.{self.quote(n)}" for n in layout.names if n not in layout.primary_key
        )
        return (
            f"MERGE INTO {target} t USING {staging} s ON ({self.key_match(layout, 't', 's')}) "
            f"WHEN MATCHED THEN UPDATE SET {updates} "
            f"WHEN NOT MATCHED THEN INSERT ({self.column_list(layout)}) VALUES ({self.column_list(layout, 's.')})"
        )

    def insert_all(self, target: str, staging: str, layout: TableLayout) -> str:
        columns = self.column_list(layout)
        return f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging}"

    def missing_from(self, target: str, staging: str, layout: TableLayout) -> str:
        """Predicate on ``target`` rows whose key is not in ``staging`` (deleted upstream)."""
        inner = " AND ".join(f"s.{self.quote(k)} = {target}.{self.quote(k)}" for k in layout.primary_key)
        return f"NOT EXISTS (SELECT 1 FROM {staging} s WHERE {inner})"

    def remove_missing(self, target: str, staging: str, layout: TableLayout) -> str:
        """Delete the rows deleted upstream (``delete_mode="remove"``)."""
        return f"DELETE FROM {target} WHERE {self.missing_from(target, staging, layout)}"

    def flag_missing(self, target: str, staging: str, layout: TableLayout) -> str:
        """Stamp ``_deleted_at`` (the one parameter) on rows deleted upstream, once (``delete_mode="flag"``)."""
        flag = self.quote(DELETED_AT)
        return (
            f"UPDATE {target} SET {flag} = {self.placeholder} "
            f"WHERE {flag} IS NULL AND {self.missing_from(target, staging, layout)}"
        )

    def count_rows(self, table: str) -> str:
        return f"SELECT COUNT(*) FROM {table}"

    def delete_all(self, table: str) -> str:
        return f"DELETE FROM {table}"

    def drop_table(self, table: str) -> str:
        return f"DROP TABLE {table}"

    def any_row(self, table: str) -> str:
        """A query that returns one row if ``table`` has any."""
        return f"SELECT 1 FROM {table} LIMIT 1"

    def newest(self, table: str, column: str) -> str:
        return f"SELECT MAX({self.quote(column)}) FROM {table}"

    def timestamp_value(self, value: datetime) -> Any:
        return value


class PostgresDialect(SqlDialect):
    """PostgreSQL: JSONB, ``COPY`` into staging (psycopg 3), ``INSERT ... ON CONFLICT``."""

    name = "postgres"
    types = {
        **SqlDialect.types,
        FieldType.STRING: "TEXT",
        FieldType.ARRAY: "JSONB",
        FieldType.OBJECT: "JSONB",
    }

    #: Type names of the values binary COPY sends, per column type. JSON columns are sent as
    #: ``bytea``: the bytes already are the server's binary ``jsonb`` form (see ``json_encoder``)
    #: and go out untouched, with no per-value Python dumper.
    copy_types = {
        FieldType.STRING: "text",
        FieldType.INTEGER: "int8",
        FieldType.NUMBER: "float8",
        FieldType.BOOLEAN: "bool",
        FieldType.TIMESTAMP: "timestamptz",
        FieldType.ARRAY: "bytea",
        FieldType.OBJECT: "bytea",
    }

    #: Longest a ``COPY`` stays open before the next row starts a new one (ending a ``COPY``
    #: waits for the server to catch up, so not after every batch).
    copy_seconds = 10.0

    def json_encoder(self, cursor: Any) -> Callable[[Any], Any]:
        return dumps_jsonb if _can_copy(cursor) else to_json

    @contextmanager
    def row_writer(
        self, cursor: Any, table: str, layout: TableLayout, batch_size: int
    ) -> Iterator[Callable[[tuple[Any, ...]], None]]:
        """Binary ``COPY`` (psycopg 3) that streams each row as it comes, so the server ingests
        while we fetch the next pages; binary is about twice as fast as text.

        A ``COPY`` open for ``copy_seconds`` ends after its current row and the next row starts
        a new one, so no statement stays open for a whole rate-limited load (a database's
        ``statement_timeout``). psycopg2 uses executemany.
        """
        if not _can_copy(cursor):
            with super().row_writer(cursor, table, layout, batch_size) as write:
                yield write
            return
        from psycopg.types.string import BytesBinaryDumper

        # By oid, "bytea" resolves to psycopg's pure-Python dumper of its DB-API ``Binary``
        # wrapper; this cursor (never the user's connection) gets the C dumper of plain bytes.
        cursor.adapters.register_dumper(bytes, BytesBinaryDumper)
        statement = f"COPY {table} ({self.column_list(layout)}) FROM STDIN (FORMAT BINARY)"
        types = [self.copy_types[c.type] for c in layout.columns]
        copy: Any = None
        ends = 0.0
        with ExitStack() as open_copy:  # an error ends the open COPY with CopyFail

            def write(row: tuple[Any, ...]) -> None:
                nonlocal copy, ends
                if copy is None:
                    copy = open_copy.enter_context(cursor.copy(statement))
                    copy.set_types(types)
                    ends = time.monotonic() + self.copy_seconds
                copy.write_row(row)
                if time.monotonic() >= ends:
                    open_copy.close()
                    copy = None

            yield write

    def lock_for_direct_load(self, target: str) -> str | None:
        # Blocks other writers (not readers) until commit, so "empty" stays true while we load.
        return f"LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE"

    def schema_exists(self, cursor: Any, schema: str) -> bool:
        # pg_namespace lists every schema; information_schema only those we have rights on.
        cursor.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema])
        return cursor.fetchone() is not None

    def try_lock(self, cursor: Any, schema: str | None, table: str | None) -> bool:
        """A transaction-scoped advisory lock keyed on the schema-qualified name (an unqualified
        table is in ``CURRENT_SCHEMA()``, as ``CREATE TABLE`` puts it), in this provider's own
        key space. Only tried, never waited for in a statement: see ``wait_until``.

        ``CREATE TABLE IF NOT EXISTS`` alone is not enough here: it does not see a table another
        transaction has created but not committed, and then fails on the catalog's unique index
        (``pg_type_typname_nsp_index``) once that one commits.
        """
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(hashtext('clarky_provider'), "
            "hashtext(COALESCE(%s, CURRENT_SCHEMA(), '') || COALESCE('.' || %s, '')))",
            [schema, table],
        )
        return bool(cursor.fetchone()[0])

    def upsert(self, target: str, staging: str, layout: TableLayout) -> str:
        keys = ", ".join(self.quote(k) for k in layout.primary_key)
        updates = ", ".join(
            f"{self.quote(n)} = EXCLUDED.{self.quote(n)}" for n in layout.names if n not in layout.primary_key
        )
        return f"{self.insert_all(target, staging, layout)} ON CONFLICT ({keys}) DO UPDATE SET {updates}"


class SqliteDialect(SqlDialect):
    """SQLite: explicit transactions (DDL included), text JSON and ISO 8601 UTC text timestamps."""

    name = "sqlite"
    placeholder = "?"
    temporary = "TEMP"
    types = {
        FieldType.STRING: "TEXT",
        FieldType.INTEGER: "INTEGER",
        FieldType.NUMBER: "REAL",
        FieldType.BOOLEAN: "INTEGER",
        FieldType.TIMESTAMP: "TEXT",
        FieldType.ARRAY: "TEXT",
        FieldType.OBJECT: "TEXT",
    }

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

    def create_schema(self, schema: str) -> str | None:
        return None

    def existing_columns(self, cursor: Any, schema: str | None, table: str) -> set[str] | None:
        prefix = f"{self.quote(schema)}." if schema else ""
        cursor.execute(f"PRAGMA {prefix}table_info({self.quote(table)})")
        names = {row[1] for row in cursor.fetchall()}
        return names or None

    def timestamp_value(self, value: datetime) -> Any:
        return value.isoformat(timespec="milliseconds")

    def adapt_rows(self, rows: list[tuple[Any, ...]], layout: TableLayout) -> Sequence[Sequence[Any]]:
        stamps = [i for i, c in enumerate(layout.columns) if c.type is FieldType.TIMESTAMP]
        adapted = []
        for row in rows:
            values = list(row)
            for i in stamps:
                if values[i] is not None:
                    values[i] = values[i].isoformat(timespec="milliseconds")
            adapted.append(values)
        return adapted

    def upsert(self, target: str, staging: str, layout: TableLayout) -> str:
        keys = ", ".join(self.quote(k) for k in layout.primary_key)
        updates = ", ".join(
            f"{self.quote(n)} = excluded.{self.quote(n)}" for n in layout.names if n not in layout.primary_key
        )
        # "WHERE true" lets SQLite tell the ON CONFLICT clause from a join condition.
        return f"{self.insert_all(target, staging, layout)} WHERE true ON CONFLICT ({keys}) DO UPDATE SET {updates}"


def _begin_immediate(connection: Any) -> bool:
    """One try at SQLite's write lock (waiting up to the busy timeout); False while it is held."""
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return False
        raise
    return True


#: Longest pause between two tries at a lock another load holds.
LOCK_POLL_SECONDS = 1.0
#: How often a waiting load says so in the task log.
LOCK_LOG_SECONDS = 60.0


def wait_until(attempt: Callable[[], bool], what: str) -> float:
    """Call ``attempt`` until it returns True (it got its lock), pausing between tries; returns
    the seconds waited. There is no limit: the task's ``execution_timeout`` is the limit.

    The wait is many short tries rather than one statement that blocks, because the holder may
    keep the lock for its whole load (minutes to hours of streaming): a blocking statement would
    end with the database's ``statement_timeout`` or ``lock_timeout`` and fail the load, and a
    task that Airflow stops could not notice until it returned.
    """
    started = time.monotonic()
    report = started
    pause = 0.05
    while not attempt():
        now = time.monotonic()
        if now >= report:
            log.info("Waiting for %s, which another transaction holds (%.0f s so far)", what, now - started)
            report = now + LOCK_LOG_SECONDS
        time.sleep(pause)
        pause = min(pause * 2, LOCK_POLL_SECONDS)
    waited = time.monotonic() - started
    if waited >= 1:
        log.info("Got %s after %.1f s", what, waited)
    return waited


def _can_copy(cursor: Any) -> bool:
    """psycopg 3 cursors stream ``COPY``; psycopg2's do not (they take executemany)."""
    return hasattr(cursor, "copy")


DIALECTS: dict[str, type[SqlDialect]] = {
    "postgres": PostgresDialect,
    "postgresql": PostgresDialect,
    "sqlite": SqliteDialect,
}


def dialect_for(conn_type: str | None) -> SqlDialect:
    """The dialect of a connection type; unknown types get ANSI SQL with MERGE."""
    return DIALECTS.get((conn_type or "").lower(), SqlDialect)()
