"""Test warehouses (SQLite file, real PostgreSQL) and the ground-truth comparison."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import uuid
from abc import ABC, abstractmethod
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pytest

from clarky_provider.normalize import parse_timestamp, primary_email, primary_phone
from clarky_provider.resources import RESOURCES, FieldType

POSTGRES_URI = os.environ.get("CLARKY_TEST_POSTGRES_URI")
MYSQL_URI = os.environ.get("CLARKY_TEST_MYSQL_URI")
#: Every warehouse engine the provider claims; ``warehouse`` fixtures run a test on each.
ENGINES = ("sqlite", "postgres", "duckdb", "mysql", "snowflake")


@dataclass
class Warehouse(ABC):
    """A test warehouse: the connection the operator gets, and plain reads and writes beside it."""

    kind: str
    conn_id: str
    conn_json: str
    dsn: str

    @abstractmethod
    def select(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of a query, on a connection of its own."""

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run one statement and commit it."""

    @abstractmethod
    def tables(self) -> set[str]:
        """The tables of the test's database."""

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.select(sql)[1]

    def exists(self, table: str) -> bool:
        return table in self.tables()

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        """Every row keyed by id, with JSON decoded and timestamps parsed to aware UTC."""
        resource = RESOURCES.get(table)
        types = {f.name: f.type for f in resource.fields} if resource else {}
        names, raw_rows = self.select(f"SELECT * FROM {self.quote(table)}")
        out: dict[str, dict[str, Any]] = {}
        for raw in raw_rows:
            row = dict(zip([n.lower() for n in names], raw, strict=True))
            for name, value in row.items():
                ftype = types.get(name)
                if name == "_raw" or ftype in (FieldType.ARRAY, FieldType.OBJECT):
                    row[name] = json.loads(value) if isinstance(value, str) else value
                elif ftype is FieldType.TIMESTAMP or name in ("_loaded_at", "_deleted_at"):
                    row[name] = parse_timestamp(value)
                elif ftype is FieldType.BOOLEAN and value is not None:
                    row[name] = bool(value)
            out[row["id"]] = row
        return out

    def quote(self, name: str) -> str:
        return f'"{name}"'


class SqliteWarehouse(Warehouse):
    def select(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with sqlite3.connect(self.dsn) as conn:
            cursor = conn.execute(sql)
            return [d[0] for d in cursor.description or ()], cursor.fetchall()

    def execute(self, sql: str) -> None:
        with sqlite3.connect(self.dsn) as conn:
            conn.execute(sql)

    def tables(self) -> set[str]:
        return {name for (name,) in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}


class PostgresWarehouse(Warehouse):
    def select(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            cursor = conn.execute(sql)
            return [d.name for d in cursor.description or ()], cursor.fetchall()

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql)

    def tables(self) -> set[str]:
        return {name for (name,) in self.query("SELECT table_name FROM information_schema.tables")}


@dataclass
class DuckDBWarehouse(Warehouse):
    """A DuckDB file, opened only for each call: while it is open no other process can open it
    (a load in a child process waits for it). Within one process every connection to a file
    must use the configuration DuckDBHook opens it with."""

    config: dict[str, Any] | None = None

    def select(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        import duckdb

        with closing(duckdb.connect(self.dsn, config=self.config or {})) as conn:
            cursor = conn.execute(sql)
            return [d[0] for d in cursor.description or ()], cursor.fetchall()

    def execute(self, sql: str) -> None:
        self.select(sql)  # autocommit

    def tables(self) -> set[str]:
        return {name for (name,) in self.query("SELECT table_name FROM duckdb_tables()")}


class MySqlWarehouse(Warehouse):
    """MariaDB (or MySQL), read in ANSI_QUOTES mode so the tests' "quoted" names work."""

    def _connect(self, database: str | None = None) -> Any:
        from urllib.parse import unquote, urlsplit

        import MySQLdb

        url = urlsplit(self.dsn)
        conn = MySQLdb.connect(
            host=url.hostname or "127.0.0.1",
            port=url.port or 3306,
            user=unquote(url.username or "root"),
            passwd=unquote(url.password or ""),
            db=url.path.lstrip("/") if database is None else database,
            charset="utf8mb4",
            autocommit=True,
        )
        conn.query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES'), SESSION time_zone = '+00:00'")
        return conn

    def select(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        conn = self._connect()
        try:
            cursor = conn.cursor()
            cursor.execute(sql)
            return [d[0] for d in cursor.description or ()], list(cursor.fetchall())
        finally:
            conn.close()

    def execute(self, sql: str) -> None:
        self.select(sql)

    def tables(self) -> set[str]:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
        return {name for (name,) in self.query(sql)}


class SnowflakeWarehouse(Warehouse):
    """Snowflake SQL on fakesnow, whose patch is active for the whole test (``snowflake_warehouse``)."""

    def _connect(self) -> Any:
        import snowflake.connector

        return snowflake.connector.connect(database=SNOWFLAKE_DATABASE, schema=SNOWFLAKE_SCHEMA)

    def select(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._connect() as conn:
            cursor = conn.cursor().execute(sql)
            return [d.name.lower() for d in cursor.description or ()], cursor.fetchall()

    def execute(self, sql: str) -> None:
        with self._connect() as conn:
            conn.cursor().execute(sql)

    def tables(self) -> set[str]:
        sql = f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{SNOWFLAKE_SCHEMA}'"
        return {name.lower() for (name,) in self.query(sql)}

    def quote(self, name: str) -> str:
        return name  # unquoted: Snowflake folds it to upper case, as the loader names its tables


def expected_row(resource: str, record: dict[str, Any]) -> dict[str, Any]:
    """What a loaded row must hold for an API record."""
    res = RESOURCES[resource]
    row: dict[str, Any] = {}
    for field in res.fields:
        value = record.get(field.name)
        if field.type is FieldType.TIMESTAMP:
            value = parse_timestamp(value)
        elif field.type is FieldType.NUMBER and value is not None:
            value = float(value)
        row[field.name] = value
    if "emails" in res.field_index:
        row["primary_email"] = primary_email(record)
    if "phone_numbers" in res.field_index:
        row["primary_phone"] = primary_phone(record)
    row["_raw"] = record
    return row


def assert_table_matches(
    warehouse: Warehouse, table: str, resource: str, records: list[dict[str, Any]]
) -> None:
    rows = warehouse.rows(table)
    assert set(rows) == {r["id"] for r in records}, "ids differ from the ground truth"
    for record in records:
        expected = expected_row(resource, record)
        actual = {k: rows[record["id"]][k] for k in expected}
        assert actual == expected, record["id"]


def sqlite_warehouse(tmp_path, monkeypatch) -> Warehouse:
    path = tmp_path / "warehouse.db"
    conn_json = json.dumps({"conn_type": "sqlite", "host": str(path)})
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", conn_json)
    return SqliteWarehouse("sqlite", "warehouse", conn_json, str(path))


def duckdb_warehouse(tmp_path, monkeypatch) -> Warehouse:
    from airflow.providers.duckdb.hooks.duckdb import DuckDBHook

    path = tmp_path / "warehouse.duckdb"
    conn_json = json.dumps({"conn_type": "duckdb", "host": str(path)})
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", conn_json)
    config = DuckDBHook(duckdb_conn_id="warehouse").get_connect_config()
    return DuckDBWarehouse("duckdb", "warehouse", conn_json, str(path), config)


def postgres_warehouse(monkeypatch):
    """A fresh database on the test server; dropped afterwards (a generator for fixtures)."""
    if not POSTGRES_URI:
        if os.environ.get("CLARKY_REQUIRE_POSTGRES"):
            pytest.fail("CLARKY_REQUIRE_POSTGRES is set but CLARKY_TEST_POSTGRES_URI is not")
        pytest.skip("no PostgreSQL server (run the tests with `make test` on a machine with postgresql)")
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"clarky_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URI, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    info = conninfo_to_dict(POSTGRES_URI)
    conn_json = json.dumps(
        {
            "conn_type": "postgres",
            "host": info.get("host", "127.0.0.1"),
            "port": int(info.get("port", 5432)),
            "login": info.get("user", "postgres"),
            "schema": name,
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", conn_json)
    dsn = POSTGRES_URI.rsplit("/", 1)[0] + "/" + name
    try:
        yield PostgresWarehouse("postgres", "warehouse", conn_json, dsn)
    finally:
        with psycopg.connect(POSTGRES_URI, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


#: Why the MySQL/MariaDB tests cannot run here, if they cannot (pytest's header says it once).
MYSQL_UNAVAILABLE = (
    None
    if importlib.util.find_spec("MySQLdb") and importlib.util.find_spec("airflow.providers.mysql")
    else "the MySQL provider is not installed (mysqlclient could not build): "
    "apt-get install libmariadb-dev pkg-config mariadb-server, then make test"
)


def _require(uri: str | None, variable: str, server: str) -> str:
    if uri:
        return uri
    if os.environ.get("CLARKY_REQUIRE_WAREHOUSES"):
        pytest.fail(f"CLARKY_REQUIRE_WAREHOUSES is set but {variable} is not: {server} tests must run here")
    pytest.skip(f"no {server} server (run the tests with `make test` on a machine with it installed)")


def mysql_warehouse(monkeypatch):
    """A fresh database on the MariaDB/MySQL test server; dropped afterwards (a generator)."""
    from urllib.parse import urlsplit

    if MYSQL_UNAVAILABLE:
        if os.environ.get("CLARKY_REQUIRE_WAREHOUSES"):
            pytest.fail(f"CLARKY_REQUIRE_WAREHOUSES is set but {MYSQL_UNAVAILABLE}")
        pytest.skip(MYSQL_UNAVAILABLE)
    uri = _require(MYSQL_URI, "CLARKY_TEST_MYSQL_URI", "MariaDB")
    name = f"clarky_{uuid.uuid4().hex[:12]}"
    url = urlsplit(uri)
    server = MySqlWarehouse("mysql", "warehouse", "", f"{url.scheme}://{url.netloc}/")
    server.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    conn = {
        "conn_type": "mysql",
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 3306,
        "login": url.username or "root",
        "schema": name,
    }
    if url.password:
        conn["password"] = url.password
    conn_json = json.dumps(conn)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", conn_json)
    try:
        yield MySqlWarehouse("mysql", "warehouse", conn_json, f"{url.scheme}://{url.netloc}/{name}")
    finally:
        server.execute(f"DROP DATABASE IF EXISTS {name}")


SNOWFLAKE_DATABASE, SNOWFLAKE_SCHEMA = "CLARKY", "PUBLIC"


def snowflake_warehouse(tmp_path, monkeypatch):
    """Snowflake SQL on DuckDB (fakesnow), persisted under ``tmp_path`` so that every connection
    of the test (the operator's through SnowflakeHook, the assertions') sees the same data."""
    from clarky_provider.testing.fakesnow import strict_fakesnow

    path = tmp_path / "fakesnow"
    path.mkdir()
    extra = {"account": "fakesnow", "database": SNOWFLAKE_DATABASE, "warehouse": "LOAD_WH", "role": "LOADER"}
    conn_json = json.dumps(
        {
            "conn_type": "snowflake",
            "login": "clarky",
            "password": "fakesnow",
            "schema": SNOWFLAKE_SCHEMA,
            "extra": extra,
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", conn_json)
    with strict_fakesnow(path):
        yield SnowflakeWarehouse("snowflake", "warehouse", conn_json, str(path))


def open_warehouse(kind: str, tmp_path, monkeypatch):
    """A fresh, empty warehouse of ``kind`` as the ``warehouse`` connection (a generator for fixtures)."""
    if kind == "sqlite":
        yield sqlite_warehouse(tmp_path, monkeypatch)
    elif kind == "postgres":
        yield from postgres_warehouse(monkeypatch)
    elif kind == "duckdb":
        yield duckdb_warehouse(tmp_path, monkeypatch)
    elif kind == "mysql":
        yield from mysql_warehouse(monkeypatch)
    elif kind == "snowflake":
        yield from snowflake_warehouse(tmp_path, monkeypatch)
    else:
        raise ValueError(f"no test warehouse {kind!r}")
