"""Loads of one table at once, from separate processes (issue #16): creating, altering and
replacing it, on SQLite and PostgreSQL. Every load must succeed and the table equal the source.

Each load runs in its own forked process (its own connection, like a LocalExecutor worker); all
of them wait at a barrier and then start together. The emulator answers slowly, so every load is
still streaming (its transaction open) when the others begin: the race really happens, and the
tests check that the loads overlapped in time.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.testing import ClarkyEmulator
from tests.warehouse import assert_table_matches, open_warehouse, postgres_warehouse

#: About 1 s per load of 300 contacts: 15 pages of 20, one request at a time, 0.05 s each.
LATENCY, PAGE_SIZE = 0.05, 20


@dataclass
class Outcome:
    index: int  # which of the loads
    started: float
    ended: float
    summary: dict[str, Any] | None
    error: str | None


@pytest.fixture
def slow_emulator(monkeypatch):
    with ClarkyEmulator(300, rate_limit=None, latency=LATENCY) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(page_size=PAGE_SIZE, max_concurrency=1)
        )
        yield emu


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def warehouse(request, tmp_path, monkeypatch):
    """The engines several processes can write at once (a DuckDB file has one writer process)."""
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


@pytest.fixture
def pg_warehouse(monkeypatch):
    yield from postgres_warehouse(monkeypatch)


def load(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("resource", "contacts")
    return ClarkyToSqlOperator(task_id="t", sql_conn_id="warehouse", **kwargs).execute({})


def _child(index: int, kwargs: dict[str, Any], barrier: Any, results: Any) -> None:
    barrier.wait(timeout=60)
    started = time.time()
    try:
        summary = load(**kwargs)
    except BaseException as exc:  # reported to the parent
        results.put(Outcome(index, started, time.time(), None, f"{type(exc).__name__}: {exc}"))
    else:
        results.put(Outcome(index, started, time.time(), summary, None))


def at_once(*loads: dict[str, Any]) -> list[Outcome]:
    """Run each load (operator arguments) in its own process, all started together; the
    outcomes in the order of ``loads``."""
    ctx = multiprocessing.get_context("fork")  # the parent's imports, without re-importing Airflow
    barrier = ctx.Barrier(len(loads))
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_child, args=(i, kwargs, barrier, results)) for i, kwargs in enumerate(loads)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=120) for _ in loads]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return sorted(outcomes, key=lambda o: o.index)


def assert_all_succeeded_together(outcomes: list[Outcome]) -> None:
    assert [o.error for o in outcomes] == [None] * len(outcomes)
    # Every load started before any ended: they really ran at the same time.
    assert max(o.started for o in outcomes) < min(o.ended for o in outcomes)


def test_first_loads_at_once_create_the_table_once(slow_emulator, warehouse):
    """The issue: backfill windows on an empty warehouse, each a merge that finds no table."""
    boundary = "2025-01-01T00:00:00Z"
    outcomes = at_once(
        {"window_start": "2020-01-01T00:00:00Z", "window_end": boundary},
        {"window_start": boundary, "window_end": "2030-01-01T00:00:00Z"},
        {"incremental": "full"},
    )
    assert_all_succeeded_together(outcomes)
    windows = [o.summary for o in outcomes[:2]]
    assert sum(s["rows_fetched"] for s in windows if s) == 300
    assert_table_matches(warehouse, "contacts", "contacts", slow_emulator.dataset["contacts"])


def test_loads_at_once_add_a_missing_column_once(slow_emulator, warehouse):
    """An old table without a catalog column (drift): every load finds it missing."""
    load(incremental="full")
    warehouse.execute('ALTER TABLE contacts DROP COLUMN "job_title"')
    slow_emulator.mutate(inserts=5, updates=10, deletes=0)
    outcomes = at_once({"incremental": "full"}, {"incremental": "full"})
    assert_all_succeeded_together(outcomes)
    assert_table_matches(warehouse, "contacts", "contacts", slow_emulator.dataset["contacts"])


@pytest.mark.parametrize("existing", [False, True], ids=["new_table", "existing_table"])
def test_replaces_at_once(slow_emulator, warehouse, existing):
    if existing:
        load(write_mode="replace")
        slow_emulator.store.lists["contacts"][None].remove(slow_emulator.dataset["contacts"][0]["id"])
        slow_emulator.mutate(inserts=5, updates=10, deletes=0)
    outcomes = at_once({"write_mode": "replace"}, {"write_mode": "replace"})
    assert_all_succeeded_together(outcomes)
    assert_table_matches(warehouse, "contacts", "contacts", slow_emulator.dataset["contacts"])


def test_failed_creator_leaves_the_table_to_the_waiting_load(slow_emulator, warehouse, monkeypatch):
    """The load that created the table fails and rolls back; the one waiting creates it."""
    from clarky_provider.testing import FaultPlan

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLARKY_DEFAULT",
        slow_emulator.connection_uri(page_size=PAGE_SIZE, max_concurrency=1, max_retries=1),
    )
    # Requests 4 and 5 (a retry) fail: the first load's, as the other waits before any request.
    slow_emulator.faults = FaultPlan(scheduled={4: "500", 5: "500"})
    outcomes = at_once({"incremental": "full"}, {"incremental": "full"})
    errors = [o.error for o in outcomes if o.error]
    assert len(errors) == 1 and "ClarkyServerError" in errors[0]
    assert_table_matches(warehouse, "contacts", "contacts", slow_emulator.dataset["contacts"])


def test_loads_into_a_new_schema_at_once(slow_emulator, pg_warehouse):
    """Two tables of one not-yet-existing schema: CREATE SCHEMA races like CREATE TABLE."""
    outcomes = at_once(
        {"schema": "crm", "incremental": "full"},
        {"schema": "crm", "resource": "companies"},
        {"schema": "crm", "incremental": "full"},
    )
    assert_all_succeeded_together(outcomes)
    for resource in ("contacts", "companies"):
        ids = {row[0] for row in pg_warehouse.query(f"SELECT id FROM crm.{resource}")}
        assert ids == {r["id"] for r in slow_emulator.dataset[resource]}


def test_a_waiting_load_outlasts_statement_and_lock_timeouts(pg_warehouse, monkeypatch):
    """The second load waits for the first's whole transaction, much longer than the database's
    statement_timeout and lock_timeout, and still succeeds."""
    from clarky_provider.sql.dialects.postgres import PostgresWriter

    monkeypatch.setattr(PostgresWriter, "copy_seconds", 0.2)  # so the first load's COPYs stay short
    database = pg_warehouse.dsn.rsplit("/", 1)[-1]
    pg_warehouse.execute(f"ALTER DATABASE {database} SET statement_timeout = '1s'")
    pg_warehouse.execute(f"ALTER DATABASE {database} SET lock_timeout = '200ms'")
    with ClarkyEmulator(300, rate_limit=None, latency=0.2) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(page_size=20, max_concurrency=1))
        outcomes = at_once({"incremental": "full"}, {"incremental": "full"})
        assert_all_succeeded_together(outcomes)
        assert max(o.ended for o in outcomes) - max(o.started for o in outcomes) > 2  # one waited
        assert_table_matches(pg_warehouse, "contacts", "contacts", emu.dataset["contacts"])


def test_sqlite_load_waits_out_a_long_held_write_lock(emulator, tmp_path, monkeypatch, caplog):
    """Another writer holds the SQLite database longer than the driver's busy timeout (5 s):
    the load waits for it instead of failing with "database is locked"."""
    import sqlite3

    from tests.warehouse import sqlite_warehouse

    warehouse = sqlite_warehouse(tmp_path, monkeypatch)
    holder = sqlite3.connect(warehouse.dsn, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other (x INTEGER)")
    release = threading.Timer(6.0, holder.execute, args=("COMMIT",))
    release.start()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.INFO, logger="clarky_provider.sql.locks"):
            summary = load(incremental="full")
    finally:
        release.join()
        holder.close()
    assert time.monotonic() - started > 6
    assert "Waiting for the write lock of the SQLite database" in caplog.text
    assert summary["rows_inserted"] == 300
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])
