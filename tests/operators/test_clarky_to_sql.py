"""ClarkyToSqlOperator end to end, emulator -> every warehouse engine the provider claims:
SQLite, PostgreSQL and MariaDB servers, DuckDB, and Snowflake SQL on fakesnow."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime, timezone

import pytest

from clarky_provider.exceptions import ClarkyAuthError, ClarkyConfigError, ClarkyLoadError, ClarkyServerError
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.resources import RESOURCES
from clarky_provider.testing import FaultPlan
from tests.warehouse import ENGINES, assert_table_matches, open_warehouse


@pytest.fixture(params=ENGINES)
def warehouse(request, tmp_path, monkeypatch):
    """Each test of this module on every engine (other modules: SQLite and PostgreSQL)."""
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


def load(**kwargs):
    kwargs.setdefault("sql_conn_id", "warehouse")
    kwargs.setdefault("task_id", f"load_{kwargs['resource']}")
    return ClarkyToSqlOperator(**kwargs).execute({})


@pytest.mark.parametrize("resource", sorted(RESOURCES))
def test_full_load_equals_ground_truth(emulator, warehouse, resource):
    summary = load(resource=resource)
    truth = emulator.dataset[resource]
    assert summary["rows_fetched"] == summary["rows_inserted"] == len(truth)
    assert_table_matches(warehouse, resource, resource, truth)


def test_summary_is_small_and_has_no_records(emulator, warehouse):
    summary = load(resource="contacts")
    assert set(summary) >= {
        "rows_fetched",
        "rows_inserted",
        "rows_updated",
        "rows_deleted",
        "pages",
        "requests",
        "retries",
        "duration_seconds",
        "watermark",
    }
    assert summary["pages"] == 3 and summary["requests"] == 3
    assert len(repr(summary)) < 2000


def test_rerun_changes_nothing(emulator, warehouse):
    load(resource="contacts", incremental="full")
    before = warehouse.rows("contacts")
    summary = load(resource="contacts", incremental="full")
    after = warehouse.rows("contacts")
    assert summary["rows_unchanged"] == 300
    assert summary["rows_inserted"] == summary["rows_updated"] == 0
    assert before == after  # unchanged rows are not written at all: even _loaded_at stays


def test_incremental_watermark_catches_up_after_changes(emulator, warehouse):
    first = load(resource="contacts")
    assert "updated_after" not in first["filters"]
    changed = emulator.mutate(inserts=7, updates=5, deletes=0)
    second = load(resource="contacts")
    assert "updated_after" in second["filters"]
    assert second["rows_fetched"] < 50  # only the window since the watermark, not the whole table
    assert second["rows_inserted"] == 7
    assert set(changed["updated"]) <= set(warehouse.rows("contacts"))
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])
    assert second["watermark"] >= first["watermark"]


def test_interval_mode_uses_the_data_interval(emulator, warehouse):
    load(resource="contacts", incremental="full")
    emulator.mutate(updates=3)
    op = ClarkyToSqlOperator(
        task_id="t", resource="contacts", sql_conn_id="warehouse", incremental="interval"
    )
    summary = op.execute({"data_interval_start": datetime(2026, 11, 20, tzinfo=timezone.utc)})
    assert summary["filters"]["updated_after"].startswith("2026-11-20T00:00:00")
    assert summary["rows_fetched"] == 3
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])


def test_backfill_windows_equal_one_full_load(emulator, warehouse):
    bounds = ["2023-01-01T00:00:00Z", "2024-06-01T00:00:00Z", "2025-08-15T12:00:00Z", "2027-01-01T00:00:00Z"]
    fetched = 0
    for start, end in itertools.pairwise(bounds):
        fetched += load(resource="contacts", window_start=start, window_end=end)["rows_fetched"]
    assert fetched == 300  # windows neither overlap nor leave gaps
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])


def test_window_boundary_record_lands_in_exactly_one_window(emulator, warehouse):
    boundary = emulator.dataset["contacts"][0]["created_at"]
    left = load(resource="contacts", window_start="2020-01-01T00:00:00Z", window_end=boundary)
    right = load(resource="contacts", window_start=boundary, window_end="2030-01-01T00:00:00Z")
    assert left["rows_fetched"] + right["rows_fetched"] == 300


def test_append_mode_appends(emulator, warehouse):
    """Appends add to what is there (here: backfill windows, one after the other)."""
    bounds = ["2023-01-01T00:00:00Z", "2025-08-15T12:00:00Z", "2027-01-01T00:00:00Z"]
    first, second = (
        load(resource="contacts", write_mode="append", window_start=start, window_end=end)
        for start, end in itertools.pairwise(bounds)
    )
    assert first["rows_inserted"] and second["rows_inserted"] and not second["rows_deleted"]
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])


def test_replace_mode_swaps_in_one_transaction(emulator, warehouse):
    load(resource="companies", write_mode="replace")
    emulator.store.lists["companies"][None].remove(emulator.dataset["companies"][0]["id"])
    summary = load(resource="companies", write_mode="replace")
    assert summary["rows_deleted"] == 30 and summary["rows_inserted"] == 29
    assert_table_matches(warehouse, "companies", "companies", emulator.dataset["companies"])


def test_replace_never_exposes_an_empty_table(emulator, warehouse):
    load(resource="contacts", write_mode="replace")
    seen: list[int] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(warehouse.query("SELECT COUNT(*) FROM contacts")[0][0])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            load(resource="contacts", write_mode="replace", batch_size=50)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert seen and min(seen) == 300


@pytest.mark.parametrize("delete_mode", ["flag", "remove"])
def test_delete_detection_on_full_snapshots(emulator, warehouse, delete_mode):
    load(resource="companies", delete_mode=delete_mode)
    gone = emulator.dataset["companies"][3]["id"]
    emulator.store.lists["companies"][None].remove(gone)
    summary = load(resource="companies", delete_mode=delete_mode)
    assert summary["rows_deleted"] == 1
    rows = warehouse.rows("companies")
    if delete_mode == "remove":
        assert gone not in rows
    else:
        assert rows[gone]["_deleted_at"] is not None
        assert sum(r["_deleted_at"] is not None for r in rows.values()) == 1


def test_a_flagged_record_that_comes_back_is_unflagged(emulator, warehouse):
    load(resource="companies", delete_mode="flag")
    companies = emulator.store.lists["companies"][None]
    back = dict(companies.records[emulator.dataset["companies"][3]["id"]])
    companies.remove(back["id"])
    load(resource="companies", delete_mode="flag")
    companies.put(back)
    summary = load(resource="companies", delete_mode="flag")
    assert summary["rows_updated"] == 1 and summary["rows_deleted"] == 0
    assert all(r["_deleted_at"] is None for r in warehouse.rows("companies").values())
    assert_table_matches(warehouse, "companies", "companies", emulator.dataset["companies"])


def test_resync_writes_only_the_records_that_changed(emulator, warehouse):
    """A full snapshot merged into a full table: unchanged rows are compared by content hash
    and not written at all (their _loaded_at stays), changed and new ones are."""
    load(resource="contacts", incremental="full")
    before = warehouse.rows("contacts")
    updated = set(emulator.mutate(inserts=3, updates=7, deletes=0)["updated"])
    summary = load(resource="contacts", incremental="full")
    assert (summary["rows_inserted"], summary["rows_updated"]) == (3, len(updated))
    assert summary["rows_unchanged"] == 300 - len(updated)
    after = warehouse.rows("contacts")
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])
    assert {k for k in before if after[k]["_loaded_at"] != before[k]["_loaded_at"]} == updated


def test_a_column_missing_from_an_old_table_is_added_and_filled(emulator, warehouse):
    """Schema drift: a table from before a catalog field existed gets the column, and every row
    is written again so the column is filled (the content hashes alone would skip them)."""
    load(resource="contacts")
    warehouse.execute("ALTER TABLE contacts DROP COLUMN job_title")
    summary = load(resource="contacts", incremental="full")
    assert summary["rows_updated"] == 300 and summary["rows_unchanged"] == 0
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])


def test_failed_load_that_added_a_column_leaves_the_table_as_it_was(emulator, warehouse, monkeypatch):
    """Drift, then a failure: the column is gone again, even where DDL commits (MySQL, Snowflake)."""
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emulator.connection_uri(max_retries=1))
    load(resource="contacts")
    warehouse.execute("ALTER TABLE contacts DROP COLUMN job_title")
    before = warehouse.rows("contacts")
    emulator.faults = FaultPlan(scheduled={n: "500" for n in range(6, 1000)})  # from the 3rd page on
    with pytest.raises(ClarkyServerError):
        load(resource="contacts", incremental="full", batch_size=10)
    after = warehouse.rows("contacts")
    assert "job_title" not in after[next(iter(after))]
    assert after == before


def test_failure_midway_leaves_table_unchanged(emulator, warehouse, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emulator.connection_uri(max_retries=1))
    load(resource="contacts", incremental="full")
    before = warehouse.rows("contacts")
    emulator.mutate(updates=20, inserts=5)
    emulator.faults = FaultPlan(scheduled={n: "500" for n in range(6, 1000)})  # from the 3rd page on
    with pytest.raises(ClarkyServerError):
        op = ClarkyToSqlOperator(
            task_id="t", resource="contacts", sql_conn_id="warehouse", incremental="full", batch_size=10
        )
        op.execute({})
    assert warehouse.rows("contacts") == before


def test_failure_after_some_pages_leaves_new_table_absent(monkeypatch, warehouse):
    from clarky_provider.testing import ClarkyEmulator

    plan = FaultPlan(scheduled={3: "revoke"})
    with ClarkyEmulator(500, rate_limit=None, faults=plan) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(max_concurrency=1))
        with pytest.raises(ClarkyAuthError, match="rotate"):
            load(resource="contacts", batch_size=10)
        assert emu.stats.count("/contacts", 401) == 1  # failed fast: no retry storm
    assert not warehouse.exists("contacts")


def test_hostile_names_and_values_are_data_not_sql(emulator, warehouse):
    load(resource="contacts")
    rows = warehouse.rows("contacts")
    hostile = [r for r in rows.values() if "'; DROP TABLE contacts; --" in (r["custom_fields"] or {})]
    assert hostile
    assert any("🎉" in str(r["_raw"]) for r in rows.values())
    long_notes = [r for r in rows.values() if len(r["notes"] or "") > 100_000]
    assert all(r["notes"] == r["_raw"]["notes"] for r in long_notes)
    huge = [r["custom_fields"]["huge"] for r in rows.values() if "huge" in (r["custom_fields"] or {})]
    assert huge and all(h == [123456789012345678901234567890, 0.1234567890123456789] for h in huge)


def test_unknown_fields_are_kept_and_logged(emulator, warehouse, caplog):
    load(resource="contacts")
    rows = warehouse.rows("contacts")
    extra = [r for r in rows.values() if "x_engagement_score" in r["_raw"]]
    assert extra
    assert "x_engagement_score" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resource": "deals"}, "Unknown Clarky resource 'deals'"),
        (
            {"resource": "companies", "filters": {"updated_after": "2026-01-01"}},
            "not supported by Clarky resource",
        ),
        ({"resource": "contacts", "updated_after": "soon"}, "updated_after='soon' is not an ISO 8601"),
        ({"resource": "contacts", "table": 'x"; DROP TABLE y; --'}, "is not a valid name"),
        ({"resource": "contacts", "schema": "a b"}, "Schema name 'a b' is not a valid name"),
        ({"resource": "companies", "window_start": "2025-01-01"}, "Backfill windows need a resource"),
        (
            {"resource": "contacts", "window_start": "2025-01-02", "window_end": "2025-01-01"},
            "must be before",
        ),
        (
            {"resource": "companies", "incremental": "watermark"},
            "needs a resource that can be read incrementally; 'companies' cannot "
            rf"\({', '.join(sorted(r.name for r in RESOURCES.values() if r.incremental))} can\)",
        ),
    ],
)
def test_bad_input_rejected_before_any_request(emulator, warehouse, kwargs, message):
    with pytest.raises(ClarkyConfigError, match=message):
        load(**kwargs)
    assert emulator.stats.requests == 0
    assert not warehouse.exists("contacts") and not warehouse.exists("companies")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"write_mode": "upsert"}, "write_mode='upsert'"),
        ({"incremental": "sometimes"}, "incremental='sometimes'"),
        ({"delete_mode": "soft"}, "delete_mode='soft'"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_arguments_rejected_at_construction(kwargs, message):
    with pytest.raises(ClarkyConfigError, match=message):
        ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="warehouse", **kwargs)


def test_non_sql_connection_is_refused(emulator, monkeypatch):
    with pytest.raises(ClarkyConfigError, match="is not a SQL connection"):
        ClarkyToSqlOperator(task_id="t", resource="agents", sql_conn_id="clarky_default").execute({})


def test_control_characters_and_backslashes_land_byte_for_byte(emulator, warehouse):
    load(resource="contacts")
    rows = warehouse.rows("contacts")
    tricky = [r for r in rows.values() if "\x1b[31mbinary-looking" in (r["notes"] or "")]
    assert tricky and all(r["notes"] == r["_raw"]["notes"] for r in tricky)
    assert any("C:\\path\\to" in (r["notes"] or "") for r in rows.values())


def test_failure_in_the_apply_phase_rolls_back_every_statement(emulator, warehouse, monkeypatch):
    """The merge and the delete detection ran in the transaction, then the load fails: on
    Snowflake and MySQL that is after every DDL and the staging have committed."""
    from clarky_provider.sql import load as loader

    load(resource="companies", delete_mode="remove")
    before = warehouse.rows("companies")
    emulator.store.lists["companies"][None].remove(emulator.dataset["companies"][3]["id"])
    apply_deletes = loader._TableLoad._apply_deletes

    def apply_then_fail(self, gone):
        assert apply_deletes(self, gone) == 1  # the row is gone inside the transaction...
        raise RuntimeError("the warehouse failed after the merge")

    monkeypatch.setattr(loader._TableLoad, "_apply_deletes", apply_then_fail)
    with pytest.raises(ClarkyLoadError, match="rolled back"):
        load(resource="companies", delete_mode="remove")
    assert warehouse.rows("companies") == before  # ...and back after the rollback


def test_snowflake_runs_no_ddl_inside_the_transaction(emulator, warehouse, monkeypatch):
    """The Snowflake fixture fails any DDL after BEGIN (where Snowflake would commit): prove
    that guard works, so that every other test proves the load never does it."""
    if warehouse.kind != "snowflake":
        pytest.skip("Snowflake's implicit commit on DDL")
    from clarky_provider.sql.dialects import SnowflakeDialect

    load(resource="agents")
    monkeypatch.setattr(SnowflakeDialect, "count_rows", lambda self, table: f"DROP TABLE {table}")
    with pytest.raises(ClarkyLoadError, match="DDL inside an explicit transaction"):
        load(resource="agents", write_mode="replace")
    assert len(warehouse.rows("agents")) == 3


def test_sqlite_stores_json_as_text_that_its_json_functions_read(emulator, warehouse):
    """SQLite takes JSON as UTF-8 bytes cast to text: never a BLOB (which json_extract would
    read as SQLite's binary JSONB)."""
    if warehouse.kind != "sqlite":
        pytest.skip("SQLite's CAST of JSON bytes to text")
    load(resource="contacts")
    stored = warehouse.query(
        "SELECT typeof(_raw), typeof(tags), typeof(custom_fields), json_extract(_raw, '$.id') = id "
        "FROM contacts WHERE tags IS NOT NULL AND custom_fields IS NOT NULL"
    )
    assert len(stored) > 100 and set(stored) == {("text", "text", "text", 1)}
