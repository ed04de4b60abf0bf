"""Snowflake: ``write_pandas`` (a temporary stage, PUT and ``COPY INTO``) into staging,
``VARIANT`` JSON, ``TIMESTAMP_TZ``, ``MERGE``.

Every DDL statement on Snowflake (tables, temporary tables, stages) commits the open
transaction, and ``write_pandas`` creates a temporary stage. So the load creates and stages
first, autocommitted, and ``begin_changes`` opens the one explicit transaction that holds only
DML on the target (``MERGE``, ``DELETE``, ``INSERT``, ``UPDATE``) until the load commits. Rows
never go straight into the target.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clarky_provider.sql.dialects.ansi import WarehouseDialect
from clarky_provider.sql.dialects.capabilities import Capabilities
from clarky_provider.sql.dialects.session import Session
from clarky_provider.sql.dialects.type_map import TypeMap
from clarky_provider.sql.dialects.writer import BulkWriter, Row, WriteRow, batches
from clarky_provider.sql.schema import Columns
from clarky_provider.tables import FieldType


class SnowflakeSession(Session):
    """Autocommit while creating and staging, one explicit transaction for the changes."""

    def begin(self, connection: Any) -> None:
        """Create and stage autocommitted (forced, in case the connection's session parameters
        turned AUTOCOMMIT off): each DDL and each staging ``COPY`` commits by itself."""
        connection.autocommit(True)

    def begin_changes(self, cursor: Any) -> None:
        cursor.execute("BEGIN")


class SnowflakeWriter(BulkWriter):
    """``write_pandas``, only ever into staging, before ``begin_changes``."""

    #: pandas dtypes that keep NULLs as NULLs in Parquet (no NaN floats, no float-ified ints).
    frame_dtypes = {FieldType.INTEGER: "Int64", FieldType.NUMBER: "Float64", FieldType.BOOLEAN: "boolean"}

    @contextmanager
    def stream(self, table: str, columns: Columns, batch_size: int) -> Iterator[WriteRow]:
        """``write_pandas`` every batch (at least the engine's ``min_batch_rows``), Parquet with
        snappy compression (gzip costs about 5 s of CPU per 20,000 contacts)."""
        connection = self.cursor.connection
        schema, name = _split_qualified(table)

        def flush(batch: list[Row]) -> None:
            from snowflake.connector import pandas_tools  # looked up per call: fakesnow patches it

            frame = self._frame(batch, columns)
            ok, _, rows, _ = pandas_tools.write_pandas(
                connection,
                frame,
                name,
                schema=schema,
                quote_identifiers=True,
                use_logical_type=True,
                compression="snappy",
            )
            if not ok or rows != len(batch):
                raise RuntimeError(f"write_pandas loaded {rows} of {len(batch)} rows into {table}")

        with batches(flush, self.dialect.capabilities.batch_rows(batch_size)) as write:
            yield write

    def _frame(self, rows: list[Row], columns: Columns) -> Any:
        import pandas as pd

        data: dict[str, Any] = {}
        for column, values in zip(columns.columns, zip(*rows, strict=True), strict=True):
            if column.type is FieldType.TIMESTAMP:
                series = pd.Series(pd.to_datetime(list(values), utc=True)).astype("datetime64[us, UTC]")
            elif column.type in self.frame_dtypes:
                series = pd.Series(values, dtype=self.frame_dtypes[column.type])
            else:
                series = pd.Series(values, dtype=object)
            data[column.name.upper()] = series
        return pd.DataFrame(data)


class SnowflakeDialect(WarehouseDialect):
    """Identifiers are upper-cased inside their quotes: Snowflake folds unquoted names to upper
    case, so the tables answer to ``select id from contacts`` (and ``CRM_Pipelines`` is stored
    as ``CRM_PIPELINES``, never refused)."""

    name = "snowflake"
    title = "Snowflake"
    capabilities = Capabilities(
        unquoted_case="upper",
        transactional_ddl=False,
        direct_appends=False,  # write_pandas creates a stage: it would commit the target's rows
        # Each ``write_pandas`` is a temporary stage, a PUT and a ``COPY INTO``, about a second
        # of fixed cost on a real account, so far more rows than an ``executemany`` batch.
        min_batch_rows=50_000,
    )
    types = TypeMap(
        {
            FieldType.STRING: "VARCHAR",
            FieldType.INTEGER: "NUMBER(38,0)",
            FieldType.NUMBER: "FLOAT",
            FieldType.BOOLEAN: "BOOLEAN",
            # An instant whatever the session's TIMEZONE: TIMESTAMP_NTZ would drop the offset and
            # read back naive; TIMESTAMP_TZ keeps it and compares as instants.
            FieldType.TIMESTAMP: "TIMESTAMP_TZ",
            FieldType.ARRAY: "VARIANT",
            FieldType.OBJECT: "VARIANT",
        },
        # Staging holds JSON as text (what ``write_pandas`` carries); ``PARSE_JSON`` makes it
        # ``VARIANT`` on the way into the target.
        staging={FieldType.ARRAY: "VARCHAR", FieldType.OBJECT: "VARCHAR"},
    )
    session_class = SnowflakeSession
    writer_class = SnowflakeWriter

    def stored_name(self, identifier: str) -> str:
        return identifier.upper()

    def quote(self, identifier: str) -> str:
        return super().quote(self.stored_name(identifier))

    def drop_staging(self, table: str) -> str | None:
        return None  # a DROP would commit; temporary tables end with the session

    def add_column(self, qualified: str, name: str, ftype: FieldType) -> str:
        # IF NOT EXISTS: with no lock (try_lock is ANSI's True), two loads may both add it.
        return f"ALTER TABLE {qualified} ADD COLUMN IF NOT EXISTS {self.quote(name)} {self.types[ftype]}"

    def schema_exists(self, cursor: Any, schema: str) -> bool:
        cursor.execute(
            f"SELECT 1 FROM information_schema.schemata WHERE schema_name = {self.placeholder}",
            [schema.upper()],
        )
        return cursor.fetchone() is not None

    def existing_columns(self, cursor: Any, schema: str | None, table: str) -> set[str] | None:
        names = super().existing_columns(cursor, schema.upper() if schema else None, table.upper())
        return {name.lower() for name in names} if names else None

    def _parsed(self, columns: Columns) -> str:
        """The staging columns as the target's types: JSON text parsed into ``VARIANT``."""
        return ", ".join(
            f"PARSE_JSON({self.quote(c.name)}) AS {self.quote(c.name)}"
            if self.types[c.type] == "VARIANT"
            else self.quote(c.name)
            for c in columns.columns
        )

    def upsert(self, target: str, staging: str, columns: Columns) -> str:
        return super().upsert(target, f"(SELECT {self._parsed(columns)} FROM {staging})", columns)

    def close_versions(self, target: str, staging: str, columns: Columns) -> str:
        # UPDATE ... FROM, a join like the MERGE; fakesnow (our tests' Snowflake) mistranslates
        # a MERGE whose ON tests a target column, which this one avoids.
        return self.close_versions_from(target, staging, columns)

    def insert_all(self, target: str, staging: str, columns: Columns) -> str:
        return f"INSERT INTO {target} ({self.column_list(columns)}) SELECT {self._parsed(columns)} FROM {staging}"


def _split_qualified(table: str) -> tuple[str | None, str]:
    """``"S"."T"`` -> ("S", "T"); ``"T"`` -> (None, "T") (names never hold quotes: ``check_identifier``)."""
    parts = [part.strip('"') for part in table.split('"."')]
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
