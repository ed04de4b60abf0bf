"""The ANSI warehouse dialect on top of common-sql's ``Dialect``: every statement a load runs.

common-sql's ``Dialect`` is built from the connection's hook and knows its placeholder and
identifier escaping; this adds what it lacks: column types, the bulk path into a table, the
upsert, staging, delete detection and locks. ANSI SQL with ``MERGE`` is the fallback for an
engine no subclass names (see ``clarky_provider.sql.dialects``); each engine overrides only
what it does differently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from airflow.providers.common.sql.dialects.dialect import Dialect

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.jsoncodec import dumps as to_json
from clarky_provider.sql.schema import CONTENT_HASH, DELETED_AT, Column, Columns, timestamp_or_none
from clarky_provider.tables import FieldType

Row = tuple[Any, ...]
RowWriter = Callable[[Row], None]


@contextmanager
def batches(flush: Callable[[list[Row]], None], size: int) -> Iterator[RowWriter]:
    """``write(row)`` that hands ``flush`` every ``size`` rows, and the rest at the end; the
    list is reused afterwards, so ``flush`` must be done with it when it returns."""
    batch: list[Row] = []

    def write(row: Row) -> None:
        batch.append(row)
        if len(batch) >= size:
            flush(batch)
            batch.clear()

    yield write
    if batch:
        flush(batch)


class WarehouseDialect(Dialect):
    """ANSI SQL with ``MERGE``; placeholders and identifier escaping come from the hook."""

    name = "ansi"
    #: The engine's name in messages.
    title = "this warehouse"
    #: How the engine folds unquoted names: ``"lower"`` (PostgreSQL), ``"upper"`` (Snowflake),
    #: or None where quotes do not change how a name is found (SQLite and DuckDB match any case;
    #: MySQL treats a name alike quoted or not, per ``lower_case_table_names``) or where we
    #: cannot know (ANSI). Where it folds, ``check_case`` refuses a name that would be stored
    #: otherwise, since it would then answer only in quotes.
    unquoted_case: Literal["lower", "upper"] | None = None
    types: dict[FieldType, str] = {
        FieldType.STRING: "VARCHAR",
        FieldType.INTEGER: "BIGINT",
        FieldType.NUMBER: "DOUBLE PRECISION",
        FieldType.BOOLEAN: "BOOLEAN",
        FieldType.TIMESTAMP: "TIMESTAMP WITH TIME ZONE",
        FieldType.ARRAY: "VARCHAR",
        FieldType.OBJECT: "VARCHAR",
    }
    #: Types of the staging table's columns, where they differ (Snowflake stages JSON as text).
    staging_types: dict[FieldType, str] | None = None
    temporary = "TEMPORARY"
    #: Whether DDL joins the load's transaction. Where it does not (MySQL, Snowflake: DDL
    #: commits), the load creates and stages first and changes the target in a transaction
    #: of DML only (``begin_changes``), and never loads straight into the target.
    transactional_ddl = True
    #: Whether a merge or replace into an empty target streams straight into it, the engine
    #: keeping other writers out until commit (``lock_empty_target``), instead of staging.
    direct_first_loads = False
    #: Whether appends stream straight into the target (not where the bulk path itself commits).
    direct_appends = True

    # -- identifiers ----------------------------------------------------------------------

    def quote(self, identifier: str) -> str:
        """Always escaped (names are checked before, see ``check_identifier``), in the
        connection's ``escape_word_format``: ``"name"``, or ```name``` on MySQL."""
        end = self.escape_word_format[-1]
        return self.escape_word_format.format(identifier.replace(end, end + end))

    def stored_name(self, identifier: str) -> str:
        """The name a table or schema gets when created as ``quote(identifier)``: as given."""
        return identifier

    def check_case(self, identifier: str, kind: str) -> str:
        """Refuse, before any request or write, a ``kind`` ("table", "schema") name that
        ``select * from <name>`` could not find because the engine folds unquoted names."""
        if self.unquoted_case is None:
            return identifier
        stored = self.stored_name(identifier)
        folded = stored.lower() if self.unquoted_case == "lower" else stored.upper()
        if stored != folded:
            raise ClarkyConfigError(
                f"{kind.capitalize()} name {identifier!r} is not {self.unquoted_case} case: use "
                f"{folded!r}. {self.title} folds unquoted names to {self.unquoted_case} case, so a "
                f"{kind} created as {self.quote(identifier)} could only be queried in quotes."
            )
        return identifier

    def qualified(self, schema: str | None, table: str) -> str:
        return f"{self.quote(schema)}.{self.quote(table)}" if schema else self.quote(table)

    def column_list(self, columns: Columns, prefix: str = "") -> str:
        return ", ".join(prefix + self.quote(name) for name in columns.names)

    # -- the connection and the transaction --------------------------------------------------

    def connect(self) -> Any:
        """Open the load's connection (the hook's ``get_conn()``)."""
        return self.hook.get_conn()

    def cursor(self, connection: Any) -> Any:
        """The cursor the load runs every statement on, in the connection's transaction."""
        return connection.cursor()

    def close(self, connection: Any) -> None:
        """Close the connection once the transaction has been committed or rolled back."""
        connection.close()

    def begin(self, connection: Any) -> None:
        """Start the load's single transaction (DB-API drivers start one implicitly)."""

    def begin_changes(self, cursor: Any) -> None:
        """Start the transaction that changes the target, where DDL commits (see
        ``transactional_ddl``); a no-op where the load's one transaction is already open."""

    # -- tables ---------------------------------------------------------------------------

    def create_table(self, qualified: str, columns: Columns, *, temporary: bool = False) -> str:
        types = (self.staging_types or self.types) if temporary else self.types
        definitions = [f"{self.quote(c.name)} {types[c.type]}" for c in columns.columns]
        if temporary:
            return f"CREATE {self.temporary} TABLE {qualified} ({', '.join(definitions)})"
        pk = ", ".join(self.quote(k) for k in columns.primary_key)
        return f"CREATE TABLE IF NOT EXISTS {qualified} ({', '.join(definitions)}, PRIMARY KEY ({pk}))"

    def staging_table(self, schema: str | None, name: str) -> str:
        """Where a load's temporary table lives (unqualified: in the session's own schema)."""
        return self.quote(name)

    def undo(self, cursor: Any, statement: str) -> None:
        """Run a failed load's undo of DDL that committed (``drop_table``, ``drop_column``)."""
        cursor.execute(statement)

    def drop_table(self, table: str) -> str:
        return f"DROP TABLE IF EXISTS {table}"

    def drop_column(self, table: str, name: str) -> str:
        return f"ALTER TABLE {table} DROP COLUMN {self.quote(name)}"

    def drop_staging(self, table: str) -> str | None:
        """Drop a temporary table, or None where that would commit (it ends with the session)."""
        return f"DROP TABLE {table}"

    def create_schema(self, schema: str) -> str | None:
        """``CREATE SCHEMA``, or None for a warehouse without schemas."""
        return f"CREATE SCHEMA IF NOT EXISTS {self.quote(schema)}"

    def schema_exists(self, cursor: Any, schema: str) -> bool:
        """Whether ``schema`` exists; False when the warehouse cannot tell (ANSI SQL), so that
        ``CREATE SCHEMA IF NOT EXISTS`` runs, and decides."""
        return False

    def add_column(self, qualified: str, name: str, ftype: FieldType) -> str:
        return f"ALTER TABLE {qualified} ADD COLUMN {self.quote(name)} {self.types[ftype]}"

    def existing_columns(self, cursor: Any, schema: str | None, table: str) -> set[str] | None:
        """Column names of the table, or None when it does not exist."""
        cursor.execute(*self.columns_query(schema, table))
        names = {row[0] for row in cursor.fetchall()}
        return names or None

    def columns_query(self, schema: str | None, table: str) -> tuple[str, list[Any]]:
        """The query of the table's column names (first column) and its parameters."""
        mark = self.placeholder
        schema_test = f"table_schema = {mark}" if schema else "table_schema = CURRENT_SCHEMA()"
        params: list[Any] = [schema] if schema else []
        return (
            f"SELECT column_name FROM information_schema.columns WHERE {schema_test} AND table_name = {mark}",
            [*params, table],
        )

    # -- locks ----------------------------------------------------------------------------

    def try_lock(self, cursor: Any, schema: str | None, table: str | None) -> bool:
        """Take, unless another transaction holds it, this transaction's lock on the DDL of
        ``table`` (of ``schema`` itself when ``table`` is None); True when taken.

        Held until commit or rollback: DDL is transactional, so a table one load is creating
        stays invisible to the others until then, and they must not create it too. ANSI SQL
        has no such lock: True, and ``CREATE ... IF NOT EXISTS`` is all there is.
        """
        return True

    def lock_empty_target(self, cursor: Any, target: str) -> None:
        """Keep other writers out of ``target`` until commit (``direct_first_loads`` engines);
        nothing to do where the load already has the table (or the database) to itself."""

    # -- rows in --------------------------------------------------------------------------

    def json_encoder(self, cursor: Any) -> Callable[[Any], Any]:
        """How JSON columns travel to this warehouse through ``row_writer`` (text by default)."""
        return to_json

    def timestamp_encoder(self) -> Callable[[Any], Any]:
        """How timestamps travel to this warehouse (timestamp fields, ``_loaded_at``, the
        deletion flag): an API value or a datetime in, the column value out, None for what is
        not a timestamp. Aware UTC datetimes by default."""
        return timestamp_or_none

    def insert_values(self, table: str, columns: Columns) -> str:
        marks = ", ".join(self.value_mark(column) for column in columns.columns)
        return f"INSERT INTO {table} ({self.column_list(columns)}) VALUES ({marks})"

    def value_mark(self, column: Column) -> str:
        """The ``VALUES`` entry of one column: its placeholder, or an expression around it."""
        return self.placeholder

    @contextmanager
    def row_writer(self, cursor: Any, table: str, columns: Columns, batch_size: int) -> Iterator[RowWriter]:
        """Yield ``write(row)`` that loads rows into ``table``: ``executemany`` every ``batch_size`` rows."""
        statement = self.insert_values(table, columns)

        def flush(batch: list[Row]) -> None:
            cursor.executemany(statement, batch)

        with batches(flush, batch_size) as write:
            yield write

    # -- rows out of staging into the target -----------------------------------------------

    def key_match(self, columns: Columns, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{self.quote(k)} = {right}.{self.quote(k)}" for k in columns.primary_key)

    def count_existing(self, target: str, staging: str, columns: Columns) -> str:
        return (
            f"SELECT COUNT(*) FROM {staging} s WHERE EXISTS "
            f"(SELECT 1 FROM {target} t WHERE {self.key_match(columns, 't', 's')})"
        )

    def assignments(self, columns: Columns, source: str) -> str:
        """``col = <source>.col`` for every column but the key: what an upsert updates."""
        return ", ".join(
            f"{self.quote(n)} = {source}.{self.quote(n)}"
            for n in columns.names
            if n not in columns.primary_key
        )

    def upsert(self, target: str, staging: str, columns: Columns) -> str:
        return (
            f"MERGE INTO {target} t USING {staging} s ON ({self.key_match(columns, 't', 's')}) "
            f"WHEN MATCHED THEN UPDATE SET {self.assignments(columns, 's')} "
            f"WHEN NOT MATCHED THEN INSERT ({self.column_list(columns)}) VALUES ({self.column_list(columns, 's.')})"
        )

    def insert_on_conflict(self, target: str, staging: str, columns: Columns, *, where: str = "") -> str:
        """The upsert as ``INSERT ... ON CONFLICT (key) DO UPDATE`` (PostgreSQL, SQLite), rows in
        key order (``key_order``); ``where`` goes after the ``FROM`` where the parser needs it."""
        keys = ", ".join(self.quote(k) for k in columns.primary_key)
        return (
            f"{self.insert_all(target, staging, columns)}{where}{self.key_order(columns)} "
            f"ON CONFLICT ({keys}) DO UPDATE SET {self.assignments(columns, 'excluded')}"
        )

    def key_order(self, columns: Columns) -> str:
        """``ORDER BY`` the staging rows' key, for an upsert that locks target rows one by one:
        loads of overlapping records, each read in the API's order of the moment, then lock them
        in one order and wait for each other instead of deadlocking."""
        return " ORDER BY " + ", ".join(f"s.{self.quote(k)}" for k in columns.primary_key)

    def insert_all(self, target: str, staging: str, columns: Columns) -> str:
        return f"INSERT INTO {target} ({self.column_list(columns)}) SELECT {self.column_list(columns, 's.')} FROM {staging} s"

    # -- what a re-sync compares, and delete detection --------------------------------------

    def key_hashes(self, target: str, columns: Columns) -> str:
        """Every row's key and content hash; NULL for a row flagged deleted, so a record that
        comes back is always written again (its ``_deleted_at`` cleared)."""
        keys = ", ".join(self.quote(k) for k in columns.primary_key)
        return (
            f"SELECT {keys}, CASE WHEN {self.quote(DELETED_AT)} IS NULL THEN {self.quote(CONTENT_HASH)} END "
            f"FROM {target}"
        )

    def gone(self, target: str, gone: str, columns: Columns) -> str:
        """Predicate on ``target`` rows whose key is in ``gone`` (the keys deleted upstream)."""
        inner = " AND ".join(f"g.{self.quote(k)} = {target}.{self.quote(k)}" for k in columns.primary_key)
        return f"EXISTS (SELECT 1 FROM {gone} g WHERE {inner})"

    def remove_gone(self, target: str, gone: str, columns: Columns) -> str:
        """Delete the rows deleted upstream (``delete_mode="remove"``)."""
        return f"DELETE FROM {target} WHERE {self.gone(target, gone, columns)}"

    def flag_gone(self, target: str, gone: str, columns: Columns) -> str:
        """Stamp ``_deleted_at`` (the one parameter) on rows deleted upstream, once (``delete_mode="flag"``)."""
        flag = self.quote(DELETED_AT)
        return (
            f"UPDATE {target} SET {flag} = {self.placeholder} "
            f"WHERE {flag} IS NULL AND {self.gone(target, gone, columns)}"
        )

    # -- small queries ----------------------------------------------------------------------

    def count_rows(self, table: str) -> str:
        return f"SELECT COUNT(*) FROM {table}"

    def delete_all(self, table: str) -> str:
        return f"DELETE FROM {table}"

    def any_row(self, table: str) -> str:
        """A query that returns one row if ``table`` has any."""
        return f"SELECT 1 FROM {table} LIMIT 1"

    def any_value(self, table: str, column: str) -> str:
        """A query that returns one row if ``column`` of ``table`` holds any value."""
        return f"SELECT 1 FROM {table} WHERE {self.quote(column)} IS NOT NULL LIMIT 1"

    def newest(self, table: str, column: str) -> str:
        return f"SELECT MAX({self.quote(column)}) FROM {table}"
