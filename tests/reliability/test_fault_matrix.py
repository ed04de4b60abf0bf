"""The fault matrix: the API misbehaves, the warehouse refuses, data moves; nothing is lost."""

from __future__ import annotations

import threading
import time

import pytest

from clarky_provider.exceptions import ClarkyAuthError, ClarkyConfigError, ClarkyLoadError
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.testing import ClarkyEmulator, FaultPlan
from tests.conftest import TEST_KEY
from tests.warehouse import assert_table_matches, open_warehouse

#: Real seconds per API second: a 30 s Retry-After lasts 0.3 s here.
SCALE = 0.01


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def warehouse(request, tmp_path, monkeypatch):
    """SQLite, and the two warehouse servers: connections that can break."""
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


def load(**kwargs):
    kwargs.setdefault("task_id", "load")
    kwargs.setdefault("resource", "contacts")
    kwargs.setdefault("sql_conn_id", "warehouse")
    return ClarkyToSqlOperator(**kwargs).execute({})


def point_at(emu, monkeypatch, **extra):
    settings = {"retry_backoff": 0.02, "max_concurrency": 2, **extra}
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(**settings))


BURSTS = {
    "429 storm, Retry-After 1": ("429", 4, {"retry_after": 1}),
    "429 storm, Retry-After 30": ("429", 4, {"retry_after": 30}),
    "500 burst": ("500", 4, {}),
    "502 html": ("502", 3, {}),
    "503 html": ("503", 3, {}),
    "dropped connections": ("drop", 3, {}),
    "truncated json": ("truncate", 3, {}),
    "latency past read timeout": ("slow", 2, {"slow_seconds": 100}),
}


@pytest.mark.parametrize("case", sorted(BURSTS))
def test_transient_fault_bursts_are_ridden_out(case, warehouse, monkeypatch):
    kind, length, options = BURSTS[case]
    plan = FaultPlan(scheduled={n: kind for n in range(3, 3 + length)}, **options)
    with ClarkyEmulator(500, rate_limit=120, time_scale=SCALE, faults=plan) as emu:
        point_at(emu, monkeypatch, timeout=0.5)
        summary = load()
        assert_table_matches(warehouse, "contacts", "contacts", emu.dataset["contacts"])
        assert emu.stats.faults_injected[kind] == length
    assert summary["retries"] >= length
    if kind == "429":
        assert summary["rate_limited"] == length


def test_mixed_fault_rates_through_every_resource(warehouse, monkeypatch):
    rates = {"500": 0.02, "502": 0.02, "503": 0.02, "drop": 0.02, "truncate": 0.02, "429": 0.02}
    with ClarkyEmulator(
        300, rate_limit=None, time_scale=SCALE, faults=FaultPlan(rates=rates, seed=11)
    ) as emu:
        point_at(emu, monkeypatch, max_retries=8)
        for resource in ("contacts", "companies", "contact_activities", "pipeline_stages"):
            load(resource=resource, task_id=resource)
            assert_table_matches(warehouse, resource, resource, emu.dataset[resource])
        assert sum(emu.stats.faults_injected.values()) > 5


def test_revoked_key_fails_fast_without_partial_commit(warehouse, monkeypatch):
    with ClarkyEmulator(600, rate_limit=None) as emu:
        point_at(emu, monkeypatch)
        load(incremental="full")
        before = warehouse.rows("contacts")
        emu.mutate(updates=50)
        emu.faults = FaultPlan(scheduled={emu.stats.requests + 4: "revoke"})
        started = time.monotonic()
        with pytest.raises(ClarkyAuthError, match="rotate it"):
            load(incremental="full", batch_size=50)
        assert time.monotonic() - started < 10
        assert emu.stats.count("/contacts", 401) <= 2  # in-flight pages at most: no retry storm
    assert warehouse.rows("contacts") == before


def _failing_trigger(warehouse, message: str) -> None:
    """Make the warehouse refuse one row mid-merge, as a full disk or a constraint would."""
    if warehouse.kind == "mysql":
        warehouse.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON contacts FOR EACH ROW BEGIN "
            f"IF NEW.job_title = 'CTO' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'; END IF; END"
        )
    elif warehouse.kind == "sqlite":
        warehouse.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON contacts WHEN NEW.job_title = 'CTO' "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
        )
    else:
        warehouse.execute(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.job_title = 'CTO' THEN RAISE EXCEPTION '{message}'; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql"
        )
        warehouse.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON contacts FOR EACH ROW EXECUTE FUNCTION refuse()"
        )


def test_warehouse_refusing_a_row_rolls_back_with_a_clear_error(emulator, warehouse):
    load(incremental="full")
    _failing_trigger(warehouse, "could not extend file: No space left on device")
    before = warehouse.rows("contacts")
    changed = emulator.mutate(updates=40, inserts=10)
    assert any(emulator.store.find("contacts", i)["job_title"] == "CTO" for i in changed["updated"])
    with pytest.raises(ClarkyLoadError, match=r"No space left on device.*rolled back.*as (it was|they were)"):
        load(incremental="full")
    assert warehouse.rows("contacts") == before


@pytest.mark.parametrize("warehouse", ["postgres", "mysql"], indirect=True)
def test_database_connection_lost_mid_load(warehouse, monkeypatch):
    with ClarkyEmulator(3000, rate_limit=None, latency=0.02) as emu:
        point_at(emu, monkeypatch, max_concurrency=1)
        load(incremental="full")
        before = warehouse.rows("contacts")
        emu.mutate(updates=100)
        served = emu.stats.count("/contacts", 200)

        def kill_backend() -> None:
            deadline = time.monotonic() + 30
            while emu.stats.count("/contacts", 200) < served + 10 and time.monotonic() < deadline:
                time.sleep(0.01)
            if warehouse.kind == "postgres":
                warehouse.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                return
            sessions = "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            for (session,) in warehouse.query(sessions):
                warehouse.execute(f"KILL CONNECTION {int(session)}")

        killer = threading.Thread(target=kill_backend)
        killer.start()
        try:
            with pytest.raises(ClarkyLoadError, match="rolled back"):
                load(incremental="full", batch_size=100)
        finally:
            killer.join(timeout=60)
    assert warehouse.rows("contacts") == before


def test_page_drift_then_incremental_run_misses_nothing(warehouse, monkeypatch):
    with ClarkyEmulator(1500, rate_limit=None, mutate_every=3, mutation=(4, 4, 2)) as emu:
        point_at(emu, monkeypatch, max_concurrency=1)
        load(delete_mode="flag")  # pages while contacts are inserted, updated and deleted
        emu.mutate_every = None  # the CRM settles; the next scheduled run comes
        load()  # incremental from the watermark
        truth = {c["id"]: c for c in emu.dataset["contacts"]}
        rows = warehouse.rows("contacts")
        assert set(truth) <= set(rows), "an inserted or moved record is missing"
        for record_id, record in truth.items():
            assert rows[record_id]["_raw"] == record, record_id
        deleted = set(rows) - set(truth)
        assert deleted  # deletes are invisible to updated_after ...
        summary = load(incremental="full", delete_mode="remove")  # ... until a full snapshot
        assert summary["rows_deleted"] == len(deleted)
        assert_table_matches(warehouse, "contacts", "contacts", emu.dataset["contacts"])


@pytest.mark.parametrize(
    ("extra", "password", "message"),
    [
        ({"page_size": 500}, None, "'page_size' of connection 'clarky_default' must be between 1 and 100"),
        ({}, "ck_test_" + "x" * 30, "does not start with 'ck_live_'"),
        ({}, "ck_live_" + "x" * 10, "is 18 characters long"),
    ],
)
def test_bad_connection_rejected_before_any_request_or_write(
    warehouse, monkeypatch, extra, password, message
):
    with ClarkyEmulator(50, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(key=password, **extra))
        with pytest.raises(ClarkyConfigError, match=message) as info:
            load()
        assert emu.stats.requests == 0
    assert not warehouse.exists("contacts")
    assert password is None or password not in str(info.value)
    assert TEST_KEY not in str(info.value)
