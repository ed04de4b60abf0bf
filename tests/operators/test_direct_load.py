"""Direct loads: an empty table skips staging with the same guarantees (every engine but
Snowflake, whose bulk path commits),
and on PostgreSQL no COPY outlives a statement_timeout."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from clarky_provider.exceptions import ClarkyServerError
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.testing import ClarkyEmulator, FaultPlan
from tests.warehouse import assert_table_matches, open_warehouse, postgres_warehouse

DIRECT = "loading straight into it"


@pytest.fixture
def pg_warehouse(monkeypatch):
    yield from postgres_warehouse(monkeypatch)


@pytest.fixture(params=["sqlite", "postgres", "duckdb", "mysql"])
def lockable_warehouse(request, tmp_path, monkeypatch):
    """The engines whose loads lock an empty target and load straight into it."""
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


def load(**kwargs):
    operator = ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="warehouse", **kwargs)
    return operator.execute({})


def test_first_load_goes_direct_and_later_loads_merge(emulator, lockable_warehouse, caplog):
    with caplog.at_level(logging.INFO, logger="clarky_provider.sql.load"):
        first = load()
    assert DIRECT in caplog.text
    assert first["rows_inserted"] == first["rows_fetched"] == 300 and first["rows_updated"] == 0
    assert_table_matches(lockable_warehouse, "contacts", "contacts", emulator.dataset["contacts"])

    caplog.clear()
    emulator.mutate(inserts=4, updates=6, deletes=0)
    with caplog.at_level(logging.INFO, logger="clarky_provider.sql.load"):
        second = load(incremental="full")
    assert DIRECT not in caplog.text  # the table has rows: staging + upsert
    assert (second["rows_inserted"], second["rows_updated"], second["rows_unchanged"]) == (4, 6, 294)
    assert_table_matches(lockable_warehouse, "contacts", "contacts", emulator.dataset["contacts"])


def test_emptied_table_with_a_view_is_loaded_in_place(emulator, lockable_warehouse, caplog):
    load()
    lockable_warehouse.execute("CREATE VIEW contact_ids AS SELECT id FROM contacts")
    lockable_warehouse.execute("DELETE FROM contacts")
    with caplog.at_level(logging.INFO, logger="clarky_provider.sql.load"):
        summary = load(write_mode="replace")
    assert DIRECT in caplog.text
    assert summary["rows_inserted"] == 300 and summary["rows_deleted"] == 0
    assert lockable_warehouse.query("SELECT COUNT(*) FROM contact_ids")[0][0] == 300


def test_failed_first_load_leaves_no_table(emulator, pg_warehouse, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emulator.connection_uri(max_retries=1))
    emulator.faults = FaultPlan(scheduled={n: "500" for n in range(3, 1000)})  # from the third request on
    with pytest.raises(ClarkyServerError):
        load()
    assert not pg_warehouse.exists("contacts")


def test_direct_load_keeps_writers_out_but_not_readers(pg_warehouse, monkeypatch):
    """While the first load streams in, another writer waits and a reader still reads."""
    import psycopg

    with ClarkyEmulator(300, rate_limit=None, latency=0.3) as slow:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", slow.connection_uri(page_size=20))
        load()
        pg_warehouse.execute("DELETE FROM contacts")  # an existing, empty table
        errors: list[BaseException] = []

        def run() -> None:
            try:
                load()
            except BaseException as exc:  # reported below
                errors.append(exc)

        loader = threading.Thread(target=run)
        loader.start()
        try:
            with psycopg.connect(pg_warehouse.dsn, autocommit=True) as other:
                deadline = time.monotonic() + 30
                while not other.execute(
                    "SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'contacts' AND l.mode = 'ShareRowExclusiveLock' AND l.granted"
                ).fetchone():
                    assert time.monotonic() < deadline, "the load never locked the table"
                    time.sleep(0.05)
                assert other.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 0  # readers pass
                other.execute("SET lock_timeout = '200ms'")
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    other.execute("INSERT INTO contacts (id) VALUES ('c_intruder')")
        finally:
            loader.join(timeout=60)
        assert not loader.is_alive() and not errors
        assert_table_matches(pg_warehouse, "contacts", "contacts", slow.dataset["contacts"])


def test_load_longer_than_statement_timeout(pg_warehouse, monkeypatch):
    """A rate-limited load runs for hours; no single COPY may stay open that long."""
    from clarky_provider.sql.dialects.postgres import PostgresWriter

    monkeypatch.setattr(PostgresWriter, "copy_seconds", 0.3)  # 10 s in production
    database = pg_warehouse.dsn.rsplit("/", 1)[-1]
    pg_warehouse.execute(f"ALTER DATABASE {database} SET statement_timeout = '1s'")
    with ClarkyEmulator(300, rate_limit=None, latency=0.2) as slow:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CLARKY_DEFAULT", slow.connection_uri(page_size=20, max_concurrency=1)
        )
        started = time.monotonic()
        summary = load()
        assert time.monotonic() - started > 2  # well past the timeout, in COPYs of about 0.3 s
        assert summary["rows_inserted"] == 300
        assert_table_matches(pg_warehouse, "contacts", "contacts", slow.dataset["contacts"])
