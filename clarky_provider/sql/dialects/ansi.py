"""The ANSI warehouse dialect on top of common-sql's ``Dialect``: every statement a load runs.

common-sql's ``Dialect`` is built from the connection's hook and knows its placeholder and
identifier escaping; this adds the statement text it lacks: tables, staging, the upsert, delete
detection and the small queries in between. An engine's other pieces hang off its dialect
class: what it can do (``capabilities``), its column types (``types``), its connection and
locks (``session_class``) and its bulk path (``writer_class``). ANSI SQL with ``MERGE`` is the
fallback for an engine nobody registered (``clarky_provider.sql.dialects.registry``); each
engine overrides only what it does differently.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.providers.common.sql.dialects.dialect import Dialect

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.sql.dialects.capabilities import Capabilities
from clarky_provider.sql.dialects.session import Session
from clarky_provider.sql.dialects.type_map import TypeMap
from clarky_provider.sql.dialects.writer import BulkWriter
from clarky_provider.sql.schema import (
    CONTENT_HASH,
    DELETED_AT,
    F_FIELD,
    F_TABLE,
    IS_CURRENT,
    P_LOAD,
    P_PLAN,
    P_RECORD,
    P_SAVED_AT,
    P_SEQ,
    P_TABLE,
    P_UNIT,
    VALID_FROM,
    VALID_TO,
    Column,
    Columns,
)
from clarky_provider.tables import FieldType

ANSI_TYPES = TypeMap(
    {
        FieldType.STRING: "VARCHAR",
        FieldType.INTEGER: "BIGINT",
        FieldType.NUMBER: "DOUBLE PRECISION",
        FieldType.BOOLEAN: "BOOLEAN",
        FieldType.TIMESTAMP: "TIMESTAMP WITH TIME ZONE",
        FieldType.ARRAY: "VARCHAR",
        FieldType.OBJECT: "VARCHAR",
    }
)


class WarehouseDialect(Dialect):
    """ANSI SQL with ``MERGE``; placeholders and identifier escaping come from the hook."""

    name: ClassVar[str] = "ansi"
    #: The engine's name in messages.
    title: ClassVar[str] = "this warehouse"
    capabilities: ClassVar[Capabilities] = Capabilities()
    types: ClassVar[TypeMap] = ANSI_TYPES
    session_class: ClassVar[type[Session]] = Session
    writer_class: ClassVar[type[BulkWriter]] = BulkWriter
    temporary = "TEMPORARY"

    def __init__(self, hook: Any, **kwargs: Any) -> None:
        super().__init__(hook, **kwargs)
        #: The load's connection, transaction and locks on this engine.
        self.session = self.session_class(self.hook)

    def writer(self, cursor: Any) -> BulkWriter:
        """The bulk path into this engine's tables on ``cursor``."""
        return self.writer_class(self, cursor)

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
        case = self.capabilities.unquoted_case
        if case is None:
            return identifier
        stored = self.stored_name(identifier)
        folded = stored.lower() if case == "lower" else stored.upper()
        if stored != folded:
            raise ClarkyConfigError(
                f"{kind.capitalize()} name {identifier!r} is not {case} case: use "
                f"{folded!r}. {self.title} folds unquoted names to {case} case, so a "
                f"{kind} created as {self.quote(identifier)} could only be queried in quotes."
            )
        return identifier

    def qualified(self, schema: str | None, table: str) -> str:
        return f"{self.quote(schema)}.{self.quote(table)}" if schema else self.quote(table)

    def column_list(self, columns: Columns, prefix: str = "") -> str:
        return ", ".join(prefix + self.quote(name) for name in columns.names)

    # -- tables ---------------------------------------------------------------------------

    def create_table(self, qualified: str, columns: Columns, *, temporary: bool = False) -> str:
        definitions = [
            f"{self.quote(c.name)} {self.types.column(c, staging=temporary)}" for c in columns.columns
        ]
        if temporary:
            return f"CREATE {self.temporary} TABLE {qualified} ({', '.join(definitions)})"
        pk = ", ".join(self.quote(k) for k in columns.table_key)
        return f"CREATE TABLE IF NOT EXISTS {qualified} ({', '.join(definitions)}, PRIMARY KEY ({pk}))"

    def staging_table(self, schema: str | None, name: str) -> str:
        """Where a load's temporary table lives (unqualified: in the session's own schema)."""
        return self.quote(name)

    def drop_table(self, table: str) -> str:
        return f"DROP TABLE IF EXISTS {table}"

    def drop_view(self, view: str) -> str:
        return f"DROP VIEW IF EXISTS {view}"

    def drop_column(self, table: str, name: str) -> str:
        return f"ALTER TABLE {table} DROP COLUMN {self.quote(name)}"

    def drop_staging(self, table: str) -> str | None:
        """Drop a temporary table, or None where that would commit (it ends with the session)."""
        return f"DROP TABLE {table}"

    def create_schema(self, schema: str) -> str | None:
        """``CREATE SCHEMA``, or None for a warehouse without schemas."""
        if not self.capabilities.schemas:
            return None
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

    # -- rows in --------------------------------------------------------------------------

    def insert_values(self, table: str, columns: Columns) -> str:
        """The ``INSERT`` of one row, its values as parameters (the ``executemany`` bulk path)."""
        marks = ", ".join(self.value_mark(column) for column in columns.columns)
        return f"INSERT INTO {table} ({self.column_list(columns)}) VALUES ({marks})"

    def value_mark(self, column: Column) -> str:
        """The ``VALUES`` entry of one column: its placeholder, or an expression around it."""
        return self.placeholder

    # -- rows out of staging into the target -----------------------------------------------

    def key_match(self, columns: Columns, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{self.quote(k)} = {right}.{self.quote(k)}" for k in columns.primary_key)

    def count_existing(self, target: str, staging: str, columns: Columns) -> str:
        return (
            f"SELECT COUNT(*) FROM {staging} s WHERE EXISTS "
            f"(SELECT 1 FROM {target} t WHERE {self.key_match(columns, 't', 's')}{self.current(columns, 't')})"
        )

    def current(self, columns: Columns, alias: str, keyword: str = "AND") -> str:
        """`` AND t._is_current = TRUE`` for a history table (only a record's current version
        is compared, counted or closed), else nothing."""
        return f" {keyword} {alias}.{self.quote(IS_CURRENT)} = TRUE" if columns.versioned else ""

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

    def key_hashes(self, target: str, columns: Columns, within: tuple[str, int] | None = None) -> str:
        """Every row's key and content hash; NULL for a row flagged deleted, so a record that
        comes back is always written again (its ``_deleted_at`` cleared). ``within`` (a
        column, a count of values as parameters) keeps only the rows of a targeted re-sync."""
        keys = ", ".join(self.quote(k) for k in columns.primary_key)
        conditions = [f"t.{self.quote(IS_CURRENT)} = TRUE"] if columns.versioned else []
        if within:
            column, count = within
            marks = ", ".join([self.placeholder] * count)
            conditions.append(f"t.{self.quote(column)} IN ({marks})" if count else "1 = 0")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return (
            f"SELECT {keys}, CASE WHEN {self.quote(DELETED_AT)} IS NULL THEN {self.quote(CONTENT_HASH)} END "
            f"FROM {target} t{where}"
        )

    def parent_signals(
        self,
        parents: str,
        parent_id: str,
        signals: tuple[str, ...],
        children: str,
        parent_key: str,
        child_time: str,
        *,
        versioned: bool,
    ) -> str:
        """Every live parent (not flagged deleted; a history's current version) as its id and 1
        when one of its change ``signals`` is newer than its children's newest ``child_time``
        (or it has a signal and no child yet), else 0."""
        q = self.quote
        newer = " OR ".join(f"p.{q(s)} > c.newest" for s in signals)
        signalled = " OR ".join(f"p.{q(s)} IS NOT NULL" for s in signals)
        live = f"p.{q(DELETED_AT)} IS NULL" + (f" AND p.{q(IS_CURRENT)} = TRUE" if versioned else "")
        return (
            f"SELECT p.{q(parent_id)}, CASE WHEN ({newer}) OR (c.newest IS NULL AND ({signalled})) "
            f"THEN 1 ELSE 0 END FROM {parents} p LEFT JOIN (SELECT {q(parent_key)} AS parent_id, "
            f"MAX({q(child_time)}) AS newest FROM {children} GROUP BY {q(parent_key)}) c "
            f"ON c.parent_id = p.{q(parent_id)} WHERE {live}"
        )

    def gone(self, target: str, gone: str, columns: Columns, where: str = "") -> str:
        """Predicate on ``target`` rows whose key is in ``gone`` (the keys deleted upstream), of
        those ``gone`` rows that also match ``where`` (on alias ``g``)."""
        inner = " AND ".join(f"g.{self.quote(k)} = {target}.{self.quote(k)}" for k in columns.primary_key)
        return f"EXISTS (SELECT 1 FROM {gone} g WHERE {inner}{where})"

    def remove_gone(self, target: str, gone: str, columns: Columns) -> str:
        """Delete the rows deleted upstream (``delete_mode="remove"``)."""
        return f"DELETE FROM {target} WHERE {self.gone(target, gone, columns)}"

    def drop_unchanged(self, target: str, staging: str, columns: Columns) -> str:
        """Delete the staged records whose row in ``target`` has the same ``_content_hash`` and
        is not flagged deleted (a record that comes back is written again, its ``_deleted_at``
        cleared). Shaped like ``remove_gone``: the staging table named in full in the correlated
        subquery, no alias on the ``DELETE`` (MariaDB has none). A row without a hash (NULL)
        never matches, so it is written again."""
        digest, flag = self.quote(CONTENT_HASH), self.quote(DELETED_AT)
        same = f"t.{digest} = {staging}.{digest} AND t.{flag} IS NULL{self.current(columns, 't')}"
        return f"DELETE FROM {staging} WHERE {self.in_target(target, staging, columns, same)}"

    def in_target(self, target: str, staging: str, columns: Columns, condition: str) -> str:
        """Predicate on ``staging`` rows (named in full) whose record has a row in ``target``
        (alias ``t``) that meets ``condition``."""
        return (
            f"EXISTS (SELECT 1 FROM {target} t WHERE {self.key_match(columns, 't', staging)} AND {condition})"
        )

    def flag_gone(self, target: str, gone: str, columns: Columns) -> str:
        """Stamp ``_deleted_at`` (the one parameter) on rows deleted upstream, once (``delete_mode="flag"``)."""
        flag = self.quote(DELETED_AT)
        return (
            f"UPDATE {target} SET {flag} = {self.placeholder} "
            f"WHERE {flag} IS NULL AND {self.gone(target, gone, columns)}"
        )

    # -- a history table (``write_mode="history"``, ``HistoryLayout``) ----------------------

    def restamp_versions(self, target: str, staging: str, columns: Columns) -> str:
        """Start at the load's start (the one parameter) each staged version whose start is not
        after the record's last version (its ``updated_at`` did not move, or a record that comes
        back): versions of a record never overlap, and its key stays unique. Shaped like
        ``drop_unchanged``."""
        start, end = self.quote(VALID_FROM), self.quote(VALID_TO)
        later = f"(t.{start} >= {staging}.{start} OR t.{end} > {staging}.{start})"
        return (
            f"UPDATE {staging} SET {start} = {self.placeholder} "
            f"WHERE {self.in_target(target, staging, columns, later)}"
        )

    def close_versions(self, target: str, staging: str, columns: Columns) -> str:
        """End the current version of each staged record where its new version starts: a
        ``MERGE`` that only updates (a join, where a correlated subquery in ``SET`` would scan
        staging once per row)."""
        start, current = self.quote(VALID_FROM), self.quote(IS_CURRENT)
        return (
            f"MERGE INTO {target} t USING {staging} s ON ({self.key_match(columns, 't', 's')} "
            f"AND t.{current} = TRUE) WHEN MATCHED THEN UPDATE SET {self.quote(VALID_TO)} = s.{start}, "
            f"{current} = FALSE"
        )

    def close_versions_from(self, target: str, staging: str, columns: Columns) -> str:
        """``close_versions`` as ``UPDATE ... FROM``, for engines without ``MERGE`` (PostgreSQL
        before 15, SQLite) or with one they read otherwise."""
        start, current = self.quote(VALID_FROM), self.quote(IS_CURRENT)
        return (
            f"UPDATE {target} SET {self.quote(VALID_TO)} = s.{start}, {current} = FALSE FROM {staging} s "
            f"WHERE {self.key_match(columns, target, 's')} AND {target}.{current} = TRUE"
        )

    def close_gone(self, target: str, gone: str, columns: Columns, where: str = "") -> str:
        """End, and stamp ``_deleted_at`` on, the current version of each record deleted
        upstream: in ``gone`` (matching ``where``); the load's start is both parameters."""
        current, mark = self.quote(IS_CURRENT), self.placeholder
        return (
            f"UPDATE {target} SET {self.quote(VALID_TO)} = {mark}, {self.quote(DELETED_AT)} = {mark}, "
            f"{current} = FALSE WHERE {current} = TRUE AND {self.gone(target, gone, columns, where)}"
        )

    def flagged(self, field: str) -> str:
        """`` AND g.<field> = TRUE`` (``gone``'s alias): a record the API itself flags deleted."""
        return f" AND g.{self.quote(field)} = TRUE"

    def remove_flagged(self, staging: str, field: str) -> str:
        """Drop from staging the records the API flags deleted: they close a version, open none."""
        return f"DELETE FROM {staging} WHERE {self.quote(field)} = TRUE"

    def current_view(self, view: str, target: str) -> list[str]:
        """(Re)create ``view``: the current version of every record (today's state). Made again
        whenever the table gains columns, since engines fix a view's ``*`` when they create it."""
        return [
            self.drop_view(view),
            f"CREATE VIEW {view} AS SELECT * FROM {target} WHERE {self.quote(IS_CURRENT)} = TRUE",
        ]

    # -- which new fields a table has held (``sql/fields.py``) ----------------------------------

    def known_fields(self, fields: str) -> str:
        """The fields the catalog does not know that a table (the parameter) has held."""
        return f"SELECT {self.quote(F_FIELD)} FROM {fields} WHERE {self.quote(F_TABLE)} = {self.placeholder}"

    def remember_field(self, fields: str, columns: Columns) -> str:
        """Insert one row (table, field, first seen); engines that run loads side by side
        ignore the row a concurrent load just inserted (one writer at a time here)."""
        return self.insert_values(fields, columns)

    # -- a resumable load's progress (``sql/resume.py``): rows of one load, by its key ---------

    def progress_plans(self, progress: str) -> str:
        """The read fingerprints a load's rows were saved under (one, unless the task changed)."""
        q, mark = self.quote, self.placeholder
        return f"SELECT DISTINCT {q(P_PLAN)} FROM {progress} WHERE {q(P_LOAD)} = {mark}"

    def progress_units(self, progress: str) -> str:
        """The units a load has finished: their marker rows, which hold no record."""
        q, mark = self.quote, self.placeholder
        return f"SELECT {q(P_UNIT)} FROM {progress} WHERE {q(P_LOAD)} = {mark} AND {q(P_RECORD)} IS NULL"

    def progress_extent(self, progress: str) -> str:
        """How many records a load has saved, and its highest sequence number."""
        q, mark = self.quote, self.placeholder
        return f"SELECT COUNT({q(P_RECORD)}), MAX({q(P_SEQ)}) FROM {progress} WHERE {q(P_LOAD)} = {mark}"

    def progress_records(self, progress: str, limit: int) -> str:
        """A load's next ``limit`` records after a sequence number, in order: keyset paging, so
        millions of records are read back in bounded memory on every engine."""
        q, mark = self.quote, self.placeholder
        return (
            f"SELECT {q(P_SEQ)}, {q(P_RECORD)} FROM {progress} WHERE {q(P_LOAD)} = {mark} "
            f"AND {q(P_SEQ)} > {mark} AND {q(P_RECORD)} IS NOT NULL ORDER BY {q(P_SEQ)} LIMIT {int(limit)}"
        )

    def progress_loads(self, progress: str) -> str:
        """Every load of a table that left progress, and when (epoch seconds) it last saved."""
        q, mark = self.quote, self.placeholder
        return (
            f"SELECT {q(P_LOAD)}, MAX({q(P_SAVED_AT)}) FROM {progress} WHERE {q(P_TABLE)} = {mark} "
            f"GROUP BY {q(P_LOAD)}"
        )

    def delete_progress(self, progress: str) -> str:
        """Remove one load's progress."""
        return f"DELETE FROM {progress} WHERE {self.quote(P_LOAD)} = {self.placeholder}"

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
