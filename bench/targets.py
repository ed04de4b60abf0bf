"""Fresh warehouse databases for benchmark runs: one per run, on each engine, removed afterwards.

Servers (PostgreSQL, MariaDB) are the test servers ``scripts/with-warehouses.sh`` starts
(``CLARKY_TEST_POSTGRES_URI``, ``CLARKY_TEST_MYSQL_URI``); SQLite and DuckDB are files in a
temporary directory; Snowflake is fakesnow (DuckDB underneath) on files in a temporary directory,
patched in by the measured process itself (``FAKESNOW_DIR``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

#: Every engine a benchmark can load into, in the order they are printed.
ENGINES = ("sqlite", "postgres", "mysql", "duckdb", "snowflake")
#: Set in the measured process of a Snowflake run: the directory of fakesnow's databases.
FAKESNOW_DIR = "CLARKY_BENCH_FAKESNOW_DIR"
#: Python modules each engine needs, for the operator and the naive baseline (SQLAlchemy).
_MODULES = {
    "postgres": ("psycopg",),
    "mysql": ("MySQLdb",),
    "duckdb": ("duckdb", "duckdb_engine"),
    "snowflake": ("fakesnow", "snowflake.sqlalchemy"),
}
#: Engines with a server process of their own: the variable that names it, and what it is.
SERVERS = {
    "postgres": ("CLARKY_TEST_POSTGRES_URI", "PostgreSQL"),
    "mysql": ("CLARKY_TEST_MYSQL_URI", "MariaDB"),
}


@dataclass(frozen=True)
class Target:
    """An empty database: the Airflow connection the operator gets, the SQLAlchemy URL of the
    naive baseline, and environment variables the measured process needs."""

    engine: str
    conn: dict[str, Any]
    url: str
    env: dict[str, str] = field(default_factory=dict)


def unavailable(engine: str) -> str | None:
    """Why ``engine`` cannot be benchmarked here (no server, a missing module), or None."""
    if engine not in ENGINES:
        return f"unknown engine (known: {', '.join(ENGINES)})"
    if engine in SERVERS and not os.environ.get(SERVERS[engine][0]):
        variable, server = SERVERS[engine]
        return f"no {server} server ({variable} unset: run under scripts/with-warehouses.sh)"
    missing = [m for m in _MODULES.get(engine, ()) if importlib.util.find_spec(m) is None]
    if missing:
        return f"module {', '.join(missing)} not installed"
    return None


@contextmanager
def fresh_target(engine: str, prefix: str = "bench") -> Iterator[Target]:
    """A new, empty database on ``engine``, dropped (or its directory removed) on exit."""
    if engine == "postgres":
        database = fresh_postgres_database(prefix)
        if database is None:
            raise RuntimeError("CLARKY_TEST_POSTGRES_URI is not set")
        name, conn = database
        try:
            yield Target(engine, conn, _url("postgresql+psycopg", conn, name))
        finally:
            drop_postgres_database(name)
        return
    if engine == "mysql":
        name, conn = fresh_mysql_database(prefix)
        try:
            yield Target(engine, conn, _url("mysql+mysqldb", conn, name) + "?charset=utf8mb4")
        finally:
            _mysql_execute(f"DROP DATABASE IF EXISTS {name}")
        return
    directory = tempfile.mkdtemp(prefix=f"clarky-{prefix}-{engine}-")
    try:
        path = os.path.join(directory, f"{prefix}.db")
        if engine == "sqlite":
            yield Target(engine, {"conn_type": "sqlite", "host": path}, f"sqlite:///{path}")
        elif engine == "duckdb":
            yield Target(engine, {"conn_type": "duckdb", "host": path}, f"duckdb:///{path}")
        elif engine == "snowflake":
            # fakesnow takes any credentials; it creates the database and schema on connect.
            conn = {
                "conn_type": "snowflake",
                "login": "bench",
                "password": "fakesnow-ignores-it",
                "schema": "CLARKY",
                "extra": {"account": "fakesnow", "database": "BENCH", "warehouse": "WH"},
            }
            url = "snowflake://bench:fakesnow-ignores-it@fakesnow/BENCH/CLARKY?warehouse=WH"
            yield Target(engine, conn, url, {FAKESNOW_DIR: directory})
        else:
            raise ValueError(f"no benchmark target for engine {engine!r}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _url(driver: str, conn: dict[str, Any], database: str) -> str:
    from sqlalchemy.engine import URL

    url = URL.create(
        driver,
        username=conn.get("login"),
        password=conn.get("password"),
        host=conn["host"],
        port=conn["port"],
        database=database,
    )
    return url.render_as_string(hide_password=False)


def fresh_postgres_database(prefix: str) -> tuple[str, dict[str, Any]] | None:
    """(name, Airflow connection dict) of a new database on ``CLARKY_TEST_POSTGRES_URI``'s server.

    ``None`` when that variable is unset: the caller falls back to SQLite. The caller drops it
    (``drop_postgres_database``).
    """
    uri = os.environ.get("CLARKY_TEST_POSTGRES_URI")
    if not uri:
        return None
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(uri, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    info = conninfo_to_dict(uri)
    conn = {
        "conn_type": "postgres",
        "host": info.get("host", "127.0.0.1"),
        "port": int(str(info.get("port") or 5432)),
        "login": info.get("user", "postgres"),
        "schema": name,
    }
    if info.get("password"):
        conn["password"] = info["password"]
    return name, conn


def drop_postgres_database(name: str) -> None:
    import psycopg

    with psycopg.connect(os.environ["CLARKY_TEST_POSTGRES_URI"], autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fresh_mysql_database(prefix: str) -> tuple[str, dict[str, Any]]:
    """(name, Airflow connection dict) of a new database on ``CLARKY_TEST_MYSQL_URI``'s server."""
    url = urlsplit(os.environ["CLARKY_TEST_MYSQL_URI"])
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _mysql_execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    conn: dict[str, Any] = {
        "conn_type": "mysql",
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 3306,
        "login": unquote(url.username or "root"),
        "schema": name,
    }
    if url.password:
        conn["password"] = unquote(url.password)
    return name, conn


def _mysql_execute(sql: str) -> None:
    import MySQLdb

    url = urlsplit(os.environ["CLARKY_TEST_MYSQL_URI"])
    connection = MySQLdb.connect(
        host=url.hostname or "127.0.0.1",
        port=url.port or 3306,
        user=unquote(url.username or "root"),
        passwd=unquote(url.password or ""),
        autocommit=True,
    )
    try:
        connection.query(sql)
    finally:
        connection.close()
