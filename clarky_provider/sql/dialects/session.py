"""A load's connection and transaction on one engine, and the locks that keep concurrent loads
apart (as dlt's ``sql_client``): opened from the hook, begun, locked, closed.

Kept out of the dialect, which only says what SQL to send: here is what the engine needs around
it (SQLite's write lock, DuckDB's one process per file, MySQL's session settings, Snowflake's
autocommit). One session serves one load at a time (``WarehouseDialect.session``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook


class Session:
    """ANSI: the hook's connection in its implicit DB-API transaction, and no locks."""

    def __init__(self, hook: DbApiHook) -> None:
        self.hook = hook

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
        ``Capabilities.transactional_ddl``); a no-op where the load's one transaction is
        already open."""

    def undo(self, cursor: Any, statement: str) -> None:
        """Run a failed load's undo of DDL that committed (``drop_table``, ``drop_column``)."""
        cursor.execute(statement)

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
