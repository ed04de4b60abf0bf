"""PostgreSQL: JSONB, binary ``COPY`` (psycopg 3), ``INSERT ... ON CONFLICT``, advisory locks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from clarky_provider.jsoncodec import dumps as to_json
from clarky_provider.jsoncodec import dumps_jsonb
from clarky_provider.sql.dialects.ansi import ANSI_TYPES, WarehouseDialect
from clarky_provider.sql.dialects.capabilities import Capabilities
from clarky_provider.sql.dialects.session import Session
from clarky_provider.sql.dialects.type_map import TypeMap
from clarky_provider.sql.dialects.writer import BulkWriter, Row, WriteRow
from clarky_provider.sql.schema import Columns
from clarky_provider.tables import FieldType


class PostgresSession(Session):
    """Advisory locks for DDL, and ``LOCK TABLE`` to keep an empty target empty."""

    def try_lock(self, cursor: Any, schema: str | None, table: str | None) -> bool:
        """A transaction-scoped advisory lock keyed on the schema-qualified name (an unqualified
        table is in ``CURRENT_SCHEMA()``, as ``CREATE TABLE`` puts it), in this provider's own
        key space. Only tried, never waited for in a statement: see ``wait_until``.

        ``CREATE TABLE IF NOT EXISTS`` alone is not enough here: it does not see a table another
        transaction has created but not committed, and then fails on the catalog's unique index
        (``pg_type_typname_nsp_index``) once that one commits.
        """
        mark = self.hook.placeholder
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(hashtext('clarky_provider'), "
            f"hashtext(COALESCE({mark}, CURRENT_SCHEMA(), '') || COALESCE('.' || {mark}, '')))",
            [schema, table],
        )
        return bool(cursor.fetchone()[0])

    def lock_empty_target(self, cursor: Any, target: str) -> None:
        # Blocks other writers (not readers) until commit, so "empty" stays true while we load.
        cursor.execute(f"LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE")


class PostgresWriter(BulkWriter):
    """Binary ``COPY`` with psycopg 3; psycopg2's cursors take ``executemany``."""

    dialect: PostgresDialect

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

    def json_encoder(self) -> Callable[[Any], Any]:
        return dumps_jsonb if self._can_copy() else to_json

    @contextmanager
    def stream(self, table: str, columns: Columns, batch_size: int) -> Iterator[WriteRow]:
        """Binary ``COPY`` (psycopg 3) that streams each row as it comes, so the server ingests
        while we fetch the next pages; binary is about twice as fast as text.

        A ``COPY`` open for ``copy_seconds`` ends after its current row and the next row starts
        a new one, so no statement stays open for a whole rate-limited load (a database's
        ``statement_timeout``). psycopg2 uses executemany.
        """
        if not self._can_copy():
            with super().stream(table, columns, batch_size) as write:
                yield write
            return
        from psycopg.types.string import BytesBinaryDumper

        cursor = self.cursor
        # By oid, "bytea" resolves to psycopg's pure-Python dumper of its DB-API ``Binary``
        # wrapper; this cursor (never the user's connection) gets the C dumper of plain bytes.
        cursor.adapters.register_dumper(bytes, BytesBinaryDumper)
        statement = self.dialect.copy_binary(table, columns)
        types = [self.copy_types[c.type] for c in columns.columns]
        copy: Any = None
        ends = 0.0
        with ExitStack() as open_copy:  # an error ends the open COPY with CopyFail

            def write(row: Row) -> None:
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

    def _can_copy(self) -> bool:
        """psycopg 3 cursors stream ``COPY``; psycopg2's do not (they take executemany)."""
        return hasattr(self.cursor, "copy")


class PostgresDialect(WarehouseDialect):
    """PostgreSQL 12+."""

    name = "postgres"
    title = "PostgreSQL"
    capabilities = Capabilities(unquoted_case="lower", direct_first_loads=True)
    types = TypeMap(
        {
            **ANSI_TYPES.types,
            FieldType.STRING: "TEXT",
            FieldType.ARRAY: "JSONB",
            FieldType.OBJECT: "JSONB",
        }
    )
    session_class = PostgresSession
    writer_class = PostgresWriter

    def schema_exists(self, cursor: Any, schema: str) -> bool:
        # pg_namespace lists every schema; information_schema only those we have rights on.
        cursor.execute(f"SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = {self.placeholder}", [schema])
        return cursor.fetchone() is not None

    def copy_binary(self, table: str, columns: Columns) -> str:
        """The ``COPY`` that takes rows in binary from the client (``PostgresWriter``)."""
        return f"COPY {table} ({self.column_list(columns)}) FROM STDIN (FORMAT BINARY)"

    def upsert(self, target: str, staging: str, columns: Columns) -> str:
        return self.insert_on_conflict(target, staging, columns)

    def close_versions(self, target: str, staging: str, columns: Columns) -> str:
        return self.close_versions_from(target, staging, columns)  # MERGE only from PostgreSQL 15

    def remember_field(self, fields: str, columns: Columns) -> str:
        return f"{super().remember_field(fields, columns)} ON CONFLICT DO NOTHING"
