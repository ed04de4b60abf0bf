"""Warehouse dialects: the SQL of each engine, and the pieces a load needs around it.

Per engine, one module (``postgres``, ``sqlite``, ``duckdb``, ``mysql``, ``snowflake``; ``ansi``
for everything else) holds, in this order, its ``Session`` (connection, transaction, locks), its
``BulkWriter`` (encoders and the bulk path) and its ``WarehouseDialect`` (every DDL and DML
statement), which names the other two and states its ``Capabilities`` and ``TypeMap``.
``dialect_for`` picks the dialect of a connection from the ``clarky_provider.dialects``
entry-point group (``registry``).
"""

from __future__ import annotations

from clarky_provider.sql.dialects.ansi import WarehouseDialect
from clarky_provider.sql.dialects.capabilities import Capabilities
from clarky_provider.sql.dialects.duckdb import DuckDBDialect
from clarky_provider.sql.dialects.mysql import MySqlDialect
from clarky_provider.sql.dialects.postgres import PostgresDialect
from clarky_provider.sql.dialects.registry import DIALECTS, ENTRY_POINT_GROUP, dialect_for
from clarky_provider.sql.dialects.session import Session
from clarky_provider.sql.dialects.snowflake import SnowflakeDialect
from clarky_provider.sql.dialects.sqlite import SqliteDialect
from clarky_provider.sql.dialects.type_map import TypeMap
from clarky_provider.sql.dialects.writer import BulkWriter

__all__ = [
    "DIALECTS",
    "ENTRY_POINT_GROUP",
    "BulkWriter",
    "Capabilities",
    "DuckDBDialect",
    "MySqlDialect",
    "PostgresDialect",
    "Session",
    "SnowflakeDialect",
    "SqliteDialect",
    "TypeMap",
    "WarehouseDialect",
    "dialect_for",
]
