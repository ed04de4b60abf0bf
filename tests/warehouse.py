"""Test warehouses (SQLite file, real PostgreSQL) and the ground-truth comparison."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from clarky_provider.normalize import parse_timestamp, primary_email, primary_phone
from clarky_provider.resources import RESOURCES, FieldType

POSTGRES_URI = os.environ.get("CLARKY_TEST_POSTGRES_URI")


@dataclass
class Warehouse:
    """A test warehouse: the connection the operator gets, and plain reads and writes beside it."""

    kind: str
    conn_id: str
    conn_json: str
    dsn: str

    def select(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of a query, on a connection of its own."""
        raise NotImplementedError

    def execute(self, sql: str) -> None:
        """Run one statement and commit it."""
        raise NotImplementedError

    def tables(self) -> set[str]:
        raise NotImplementedError

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


def open_warehouse(kind: str, tmp_path, monkeypatch):
    """A fresh, empty warehouse of ``kind`` as the ``warehouse`` connection (a generator for fixtures)."""
    if kind == "sqlite":
        yield sqlite_warehouse(tmp_path, monkeypatch)
    elif kind == "postgres":
        yield from postgres_warehouse(monkeypatch)
    else:
        raise ValueError(f"no test warehouse {kind!r}")
