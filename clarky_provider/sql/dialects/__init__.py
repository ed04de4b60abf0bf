"""The warehouse dialect of a common-sql connection, chosen from its hook.

Each engine's module holds only what it does differently from the ANSI ``WarehouseDialect``.
A connection whose engine none of them names gets ANSI SQL with ``MERGE``, and a warning:
no test of ours has proven it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from clarky_provider.sql.dialects.base import WarehouseDialect
from clarky_provider.sql.dialects.duckdb import DuckDBDialect
from clarky_provider.sql.dialects.mysql import MySqlDialect
from clarky_provider.sql.dialects.postgres import PostgresDialect
from clarky_provider.sql.dialects.snowflake import SnowflakeDialect
from clarky_provider.sql.dialects.sqlite import SqliteDialect

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)

#: Engine names, as connection types and as common-sql's ``dialect_name``, to their dialects.
DIALECTS: dict[str, type[WarehouseDialect]] = {
    "postgres": PostgresDialect,
    "postgresql": PostgresDialect,
    "sqlite": SqliteDialect,
    "duckdb": DuckDBDialect,
    "mysql": MySqlDialect,
    "mariadb": MySqlDialect,
    "snowflake": SnowflakeDialect,
}


def dialect_for(hook: DbApiHook) -> WarehouseDialect:
    """The dialect of ``hook``'s connection: by connection type, else by the SQLAlchemy dialect
    name common-sql reads off the connection (a generic or ODBC connection to a known engine)."""
    for name in (hook.conn_type, hook.dialect_name):
        dialect = DIALECTS.get((name or "").lower())
        if dialect is not None:
            return dialect(hook)
    log.warning(
        "No Clarky dialect for connection type %r (dialect %r): using ANSI SQL with MERGE, which no "
        "test of this provider has run on this engine. Tested: %s.",
        hook.conn_type,
        hook.dialect_name,
        ", ".join(sorted({d.name for d in DIALECTS.values()})),
    )
    return WarehouseDialect(hook)


__all__ = [
    "DIALECTS",
    "DuckDBDialect",
    "MySqlDialect",
    "PostgresDialect",
    "SnowflakeDialect",
    "SqliteDialect",
    "WarehouseDialect",
    "dialect_for",
]
