"""MySQL 8 and MariaDB 10.5+ (InnoDB): ``LOAD DATA LOCAL`` into staging, ``ON DUPLICATE KEY
UPDATE``, ``GET_LOCK``, UTC ``DATETIME(6)``, byte-exact keys.

DDL on real tables (``CREATE DATABASE``, ``CREATE TABLE``, ``ALTER TABLE``, even a plain
``DROP TABLE`` of a temporary table) commits the open transaction; ``CREATE``/``DROP TEMPORARY
TABLE`` do not. The load runs its DDL first, so what commits is only the DDL: rows are never
half-written, and a table or column a failed load created is dropped again (still empty) —
see docs/warehouses.md.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import IO, TYPE_CHECKING, Any

from clarky_provider.sql.dialects.ansi import WarehouseDialect
from clarky_provider.sql.dialects.capabilities import Capabilities
from clarky_provider.sql.dialects.session import Session
from clarky_provider.sql.dialects.type_map import TypeMap
from clarky_provider.sql.dialects.writer import BulkWriter, Row, WriteRow, batches
from clarky_provider.sql.schema import IS_CURRENT, VALID_FROM, VALID_TO, Columns, timestamp_text
from clarky_provider.tables import FieldType

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)


class MySqlSession(Session):
    """The session's settings, the server's binary collation, and ``GET_LOCK``."""

    #: Errors rather than silent truncation, never a non-transactional engine.
    sql_mode = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"
    #: Longest a failed load's ``DROP`` of the table or column it created waits for another
    #: load's metadata lock (that load may be waiting for this one's ``GET_LOCK``: then it stays,
    #: empty).
    undo_lock_wait_seconds = 5

    def __init__(self, hook: DbApiHook) -> None:
        super().__init__(hook)
        #: Binary and NO PAD: ids compare byte for byte ('a' <> 'A' <> 'a '). ``begin`` picks the
        #: server's name for it.
        self.collation = "utf8mb4_bin"

    def begin(self, connection: Any) -> None:
        """utf8mb4 on the wire, UTC and strict mode for the session, and READ COMMITTED (the
        load looks again at what other loads committed while it waited for their lock; InnoDB's
        default REPEATABLE READ would keep showing it the table as it first saw it). The
        transaction itself starts implicitly (the hook's connections are not in autocommit)."""
        if hasattr(connection, "set_character_set"):  # mysqlclient: the codec follows
            connection.set_character_set("utf8mb4")
        cursor = connection.cursor()
        try:
            if not hasattr(connection, "set_character_set"):
                cursor.execute("SET NAMES utf8mb4")
            cursor.execute(f"SET SESSION time_zone = '+00:00', SESSION sql_mode = '{self.sql_mode}'")
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cursor.execute("SELECT VERSION()")
            version = str(cursor.fetchone()[0])
        finally:
            cursor.close()
        if "mariadb" in version.lower():
            self.collation = "utf8mb4_nopad_bin"
        elif int(version.split(".")[0]) >= 8:
            self.collation = "utf8mb4_0900_bin"

    def try_lock(self, cursor: Any, schema: str | None, table: str | None) -> bool:
        """A named lock (``GET_LOCK``, not waited for) keyed on the database-qualified name.

        Unlike PostgreSQL's transaction-scoped advisory lock, it belongs to the session: it
        survives the implicit commits of the load's DDL and is released when the operator
        closes the connection, right after its commit or rollback. Names are hashed: MySQL
        refuses names longer than 64 characters. A load that may find the target empty holds
        it until it ends, so other loads of the table wait for it (``LOCK TABLES`` would commit).
        """
        mark = self.hook.placeholder
        cursor.execute(
            "SELECT GET_LOCK(CONCAT('clarky_provider:', SHA1(CONCAT("
            f"COALESCE({mark}, DATABASE(), ''), COALESCE(CONCAT('.', {mark}), '')))), 0)",
            [schema, table],
        )
        return cursor.fetchone()[0] == 1

    def undo(self, cursor: Any, statement: str) -> None:
        cursor.execute(f"SET SESSION lock_wait_timeout = {int(self.undo_lock_wait_seconds)}")
        super().undo(cursor, statement)


#: MySQL/MariaDB errors that mean ``LOAD DATA LOCAL`` is switched off (client or server side).
_LOCAL_INFILE_REFUSED = {1148, 2068, 3948, 4166}
_NULL = "\\N"


def _tsv_text(value: str) -> str:
    """A string as a ``LOAD DATA`` field (ESCAPED BY backslash; tab and newline separate)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value or "\0" in value:
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\0", "\\0")
        )
    return value


#: How each column type's (non-None) values are written into a ``LOAD DATA`` file.
_TSV: dict[FieldType, Callable[[Any], str]] = {
    FieldType.STRING: _tsv_text,
    FieldType.ARRAY: _tsv_text,
    FieldType.OBJECT: _tsv_text,
    FieldType.INTEGER: str,
    FieldType.NUMBER: repr,
    FieldType.BOOLEAN: lambda value: "1" if value else "0",
    FieldType.TIMESTAMP: str,  # already text (timestamp_encoder)
}


class MySqlWriter(BulkWriter):
    """``LOAD DATA LOCAL INFILE`` of tab-separated files, else multi-row ``INSERT``s."""

    dialect: MySqlDialect

    #: Longest multi-row INSERT that ``executemany`` sends (capped by max_allowed_packet).
    max_statement_bytes = 4 << 20

    def timestamp_encoder(self) -> Callable[[Any], Any]:
        """UTC wall-clock text (``2025-05-28 22:50:41.723``): what ``DATETIME(6)`` holds, and
        as it goes into a ``LOAD DATA`` file or an ``INSERT`` alike."""
        return timestamp_text(" ", "", "microseconds")

    @contextmanager
    def stream(self, table: str, columns: Columns, batch_size: int) -> Iterator[WriteRow]:
        """``LOAD DATA LOCAL INFILE`` of a tab-separated file per batch (at most the engine's
        ``max_batch_rows``) when the client and server allow it (MariaDB's defaults; MySQL 8
        needs ``local_infile`` on both sides), else multi-row ``INSERT``s: 1.2-1.45x the rows a
        second on 20k contacts. Each ``LOAD DATA`` runs in a thread of its own (mysqlclient lets
        go of the GIL while the server works) while the next file is written, one at a time on
        the load's cursor.

        ``LOCAL`` turns strict mode's errors into warnings (the server cannot stop the client's
        file midway): a truncated or out-of-range value would land silently, so any warning
        fails the load instead. The file is private (0600) and deleted at the end.
        """
        cursor = self.cursor
        if not hasattr(cursor.connection, "warning_count"):  # not mysqlclient
            with self.multi_row_inserts(table, columns, batch_size) as write:
                yield write
            return
        statement = self.dialect.load_data_local(table, columns)
        fields = [_TSV[c.type] for c in columns.columns]
        fallback: WriteRow | None = None  # the INSERT writer, once LOAD DATA LOCAL has been refused
        pending: Future[None] | None = None  # the LOAD DATA in flight
        flushes = 0

        def load(file: IO[str]) -> None:
            cursor.execute(statement, [file.name])
            if cursor.connection.warning_count():
                cursor.execute("SHOW WARNINGS LIMIT 3")
                raise ValueError(f"{table} would not hold some values exactly: {cursor.fetchall()}")

        def finish_pending() -> None:
            nonlocal pending
            if pending is not None:
                done, pending = pending, None
                done.result()  # its error, if any, is the load's

        # Exits in reverse: the loader thread ends (its LOAD DATA done) before the files go.
        with ExitStack() as stack:
            files = [
                stack.enter_context(
                    tempfile.NamedTemporaryFile("w", encoding="utf-8", newline="", suffix=".tsv")
                )
                for _ in range(2)
            ]
            loader = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="clarky-load-data"))

            def flush(batch: list[Row]) -> None:
                nonlocal fallback, pending, flushes
                if fallback is not None:
                    for row in batch:
                        fallback(row)
                    return
                file = files[flushes % 2]  # the other file may be in the LOAD DATA in flight
                file.seek(0)
                file.truncate()
                file.writelines(
                    "\t".join([_NULL if v is None else f(v) for f, v in zip(fields, row, strict=True)]) + "\n"
                    for row in batch
                )
                file.flush()
                finish_pending()
                flushes += 1
                if flushes > 1:
                    pending = loader.submit(load, file)
                    return
                try:  # the first batch in this thread: a refusal switches to INSERTs
                    load(file)
                except Exception as exc:
                    if not exc.args or exc.args[0] not in _LOCAL_INFILE_REFUSED:
                        raise
                    log.info("LOAD DATA LOCAL refused (%s): loading %s with multi-row INSERTs", exc, table)
                    fallback = stack.enter_context(self.multi_row_inserts(table, columns, batch_size))
                    for row in batch:
                        fallback(row)

            with batches(flush, self.dialect.capabilities.batch_rows(batch_size)) as write:
                yield write
            finish_pending()

    @contextmanager
    def multi_row_inserts(self, table: str, columns: Columns, batch_size: int) -> Iterator[WriteRow]:
        """``executemany`` of ``batch_size`` rows, which mysqlclient and mysql-connector send as
        multi-row ``INSERT ... VALUES (...), (...)``: up to ``max_statement_bytes`` a statement
        instead of mysqlclient's 64 KB."""
        cursor = self.cursor
        if hasattr(cursor, "max_stmt_length"):
            cursor.execute("SELECT @@max_allowed_packet")
            packet = int(cursor.fetchone()[0])
            cursor.max_stmt_length = max(64 << 10, min(self.max_statement_bytes, packet - (64 << 10)))
        with self.executemany(table, columns, batch_size) as write:
            yield write


class MySqlDialect(WarehouseDialect):
    """Backticks and ``%s`` come from ``MySqlHook``; the rest is here."""

    name = "mysql"
    session: MySqlSession
    capabilities = Capabilities(
        transactional_ddl=False,
        # A load that may find the target empty holds its ``GET_LOCK`` until it ends.
        direct_first_loads=True,
        # Rows a ``LOAD DATA`` file holds at most. Each file loads while the next is written,
        # except the last, which the load waits for: smaller files shorten that wait (2,000
        # instead of 5,000: about 10% off a first load of 20,000 contacts).
        max_batch_rows=2000,
    )
    types = TypeMap(
        {
            FieldType.STRING: "LONGTEXT",  # notes exceed TEXT's 64 KB; keys are VARCHAR (string_key)
            FieldType.INTEGER: "BIGINT",
            FieldType.NUMBER: "DOUBLE",
            FieldType.BOOLEAN: "BOOLEAN",
            FieldType.TIMESTAMP: "DATETIME(6)",  # UTC wall-clock time; TIMESTAMP ends in 2038
            # Text, not JSON: MariaDB's JSON is LONGTEXT with CHECK (JSON_VALID()), which refuses
            # documents nested 32 deep; MySQL's binary JSON rounds integers beyond 64 bits.
            FieldType.ARRAY: "LONGTEXT",
            FieldType.OBJECT: "LONGTEXT",
        },
        # TEXT cannot be a key. 255 utf8mb4 characters = 1020 bytes, within InnoDB's 3072-byte
        # key limit even for a two-column key.
        string_key="VARCHAR(255)",
    )
    session_class = MySqlSession
    writer_class = MySqlWriter

    def create_table(self, qualified: str, columns: Columns, *, temporary: bool = False) -> str:
        definitions = ", ".join(f"{self.quote(c.name)} {self.types.column(c)}" for c in columns.columns)
        keys = ", ".join(self.quote(k) for k in columns.primary_key)
        options = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={self.session.collation}"
        if temporary:
            # Indexed, not unique: delete detection looks keys up in it (no hash anti-join).
            return f"CREATE TEMPORARY TABLE {qualified} ({definitions}, KEY ({keys})) {options}"
        table_key = ", ".join(self.quote(k) for k in columns.table_key)
        return f"CREATE TABLE IF NOT EXISTS {qualified} ({definitions}, PRIMARY KEY ({table_key})) {options}"

    def staging_table(self, schema: str | None, name: str) -> str:
        # Qualified: a connection without a default database cannot create an unqualified table.
        return self.qualified(schema, name)

    def drop_staging(self, table: str) -> str | None:
        # A plain DROP TABLE, even of a temporary table, commits implicitly.
        return f"DROP TEMPORARY TABLE {table}"

    def create_schema(self, schema: str) -> str | None:
        # A MySQL schema is a database.
        return f"CREATE DATABASE IF NOT EXISTS {self.quote(schema)} CHARACTER SET utf8mb4"

    def schema_exists(self, cursor: Any, schema: str) -> bool:
        cursor.execute(
            f"SELECT 1 FROM information_schema.schemata WHERE schema_name = {self.placeholder}", [schema]
        )
        return cursor.fetchone() is not None

    def columns_query(self, schema: str | None, table: str) -> tuple[str, list[Any]]:
        mark = self.placeholder
        return (
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = COALESCE({mark}, DATABASE()) AND table_name = {mark}",
            [schema, table],
        )

    def load_data_local(self, table: str, columns: Columns) -> str:
        """The ``LOAD DATA`` of a client's tab-separated file (its name the one parameter) into
        ``table``, as ``MySqlWriter`` writes it: backslash escapes, ``\\N`` for NULL."""
        return (
            f"LOAD DATA LOCAL INFILE {self.placeholder} INTO TABLE {table} CHARACTER SET utf8mb4 "
            f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({self.column_list(columns)})"
        )

    def upsert(self, target: str, staging: str, columns: Columns) -> str:
        # ``col = s.col`` (columns of the SELECT's table) instead of VALUES(col): MariaDB has no
        # ``AS new`` row alias and MySQL 8.0.20+ deprecates VALUES() here; both accept this.
        return (
            f"{self.insert_all(target, staging, columns)}{self.key_order(columns)} "
            f"ON DUPLICATE KEY UPDATE {self.assignments(columns, 's')}"
        )

    def close_versions(self, target: str, staging: str, columns: Columns) -> str:
        # A join: a temporary table cannot be opened twice in one statement (the ANSI form's
        # subquery and EXISTS).
        start, current = self.quote(VALID_FROM), self.quote(IS_CURRENT)
        return (
            f"UPDATE {target} t JOIN {staging} s ON {self.key_match(columns, 't', 's')} "
            f"SET t.{self.quote(VALID_TO)} = s.{start}, t.{current} = FALSE WHERE t.{current} = TRUE"
        )

    def remember_field(self, fields: str, columns: Columns) -> str:
        field = self.quote(columns.primary_key[-1])
        return f"{super().remember_field(fields, columns)} ON DUPLICATE KEY UPDATE {field} = {field}"
