"""Fresh warehouse databases for benchmark runs, on the test PostgreSQL server when there is one."""

from __future__ import annotations

import os
import uuid
from typing import Any


def fresh_postgres_database(prefix: str) -> tuple[str, dict[str, Any]] | None:
    """(name, Airflow connection dict) of a new database on ``CLARKY_TEST_POSTGRES_URI``'s server.

    ``None`` when that variable is unset: the caller falls back to SQLite.
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
    return name, {
        "conn_type": "postgres",
        "host": info.get("host", "127.0.0.1"),
        "port": int(str(info.get("port") or 5432)),
        "login": info.get("user", "postgres"),
        "schema": name,
    }
