"""``write_mode="history"`` on every engine: one row per version of a record, the current ones
equal to the source, closed versions back to back, deletions closing versions, reruns that
change nothing and failures that leave the table as it was."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import pytest

from clarky_provider.exceptions import ClarkyConfigError, ClarkyLoadError, ClarkyServerError
from clarky_provider.normalize import parse_timestamp
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.resources import RESOURCES
from clarky_provider.testing import FaultPlan
from tests.warehouse import ENGINES, Warehouse, assert_table_matches, open_warehouse

TABLE = "contacts_history"
#: A full read each time, so deletions are seen (as for a merge's delete detection).
FULL = {"incremental": "full", "delete_mode": "flag"}


@pytest.fixture(params=ENGINES)
def warehouse(request, tmp_path, monkeypatch):
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def current_view_is_typed_like_its_resource(monkeypatch):
    """``Warehouse.rows`` types columns by the resource named like the table: so does the view."""
    monkeypatch.setitem(RESOURCES, f"{TABLE}_current", RESOURCES["contacts"])
    monkeypatch.setitem(RESOURCES, "conversations_history_current", RESOURCES["conversations"])


def load(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("resource", "contacts")
    kwargs.setdefault("table", TABLE)
    operator = ClarkyToSqlOperator(task_id="history", sql_conn_id="warehouse", write_mode="history", **kwargs)
    return operator.execute({})  # type: ignore[arg-type]


def every_row(warehouse: Warehouse, table: str = TABLE) -> list[tuple[Any, ...]]:
    """The table as stored, in key order: what a no-op must leave byte for byte."""
    return warehouse.query(f"SELECT * FROM {warehouse.quote(table)} ORDER BY id, _valid_from")


def versions(warehouse: Warehouse, table: str = TABLE) -> dict[str, list[dict[str, Any]]]:
    """Each record's versions in order: start, end, current, deletion stamp and ``updated_at``."""
    names = ("_valid_from", "_valid_to", "_is_current", "_deleted_at", "updated_at")
    columns = ", ".join(names) if table == TABLE else ", ".join(names[:-1])
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record_id, *values in warehouse.query(
        f"SELECT id, {columns} FROM {warehouse.quote(table)} ORDER BY id, _valid_from"
    ):
        row = dict(zip(names, values, strict=False))
        version = {k: parse_timestamp(v) for k, v in row.items() if k != "_is_current"}
        out[record_id].append({**version, "_is_current": bool(row["_is_current"])})
    return out


def assert_back_to_back(history: dict[str, list[dict[str, Any]]]) -> None:
    """Every closed version ends where the next begins; only the last can be current."""
    for record_id, chain in history.items():
        for earlier, later in itertools.pairwise(chain):
            assert earlier["_valid_to"] == later["_valid_from"], record_id
            assert not earlier["_is_current"] and earlier["_deleted_at"] is None, record_id
        assert chain[-1]["_is_current"] == (chain[-1]["_valid_to"] is None), record_id


def edit(emulator, ids: list[str]) -> None:
    """The contacts ``ids`` edited in the CRM now (new values, a fresh ``updated_at``)."""
    time.sleep(0.01)  # a new millisecond: each edit is a new updated_at
    now = datetime.now(timezone.utc)
    store = emulator.store
    with store.lock:
        contacts = store.lists["contacts"][None]
        for record_id in ids:
            contacts.put(store.factory.updated_copy(contacts.records[record_id], now))
        store.version += 1


def put(emulator, resource: str, record: dict[str, Any]) -> None:
    store = emulator.store
    with store.lock:
        store.lists[resource][None].put(record)
        store.version += 1


def delete(emulator, ids: list[str]) -> None:
    store = emulator.store
    with store.lock:
        for record_id in ids:
            store.lists["contacts"][None].remove(record_id)
        store.version += 1


def test_history_after_two_rounds_of_edits_and_deletions(emulator, warehouse):
    """The issue's "done": a first load, 40 contacts edited in each of two syncs, 10 deleted."""
    first = load(**FULL)
    assert first["rows_inserted"] == 300
    source = emulator.dataset["contacts"]
    started = {r["id"]: parse_timestamp(r["updated_at"]) for r in source}
    ids = sorted(started)
    edited, deleted = ids[:40], ids[35:45]  # five of the deleted were edited too
    stamps: dict[str, list[datetime | None]] = {i: [started[i]] for i in ids}
    for _ in range(2):
        edit(emulator, edited)
        summary = load(**FULL)
        assert (summary["rows_updated"], summary["rows_inserted"], summary["rows_deleted"]) == (40, 0, 0)
        assert summary["rows_unchanged"] == 260
        for record in emulator.dataset["contacts"]:
            if record["id"] in edited:
                stamps[record["id"]].append(parse_timestamp(record["updated_at"]))
    delete(emulator, deleted)
    summary = load(**FULL)
    assert summary["rows_deleted"] == 10 and summary["rows_updated"] == summary["rows_inserted"] == 0

    live = emulator.dataset["contacts"]
    assert len(live) == 290
    assert_table_matches(warehouse, f"{TABLE}_current", "contacts", live)  # today's state, exactly
    history = versions(warehouse)
    assert set(history) == set(ids) and sum(map(len, history.values())) == 300 + 2 * 40
    assert_back_to_back(history)
    for record_id, chain in history.items():
        # a version starts at the record's updated_at: one per sync that saw it changed
        assert [v["_valid_from"] for v in chain] == stamps[record_id]
        assert all(v["updated_at"] == v["_valid_from"] for v in chain)
        last = chain[-1]
        if record_id in deleted:
            assert not last["_is_current"] and last["_valid_to"] == last["_deleted_at"] is not None
        else:
            assert last["_is_current"] and last["_valid_to"] is None and last["_deleted_at"] is None

    before = every_row(warehouse)
    rerun = load(**FULL)
    assert (rerun["rows_inserted"], rerun["rows_updated"], rerun["rows_deleted"]) == (0, 0, 0)
    assert rerun["rows_unchanged"] == 290
    assert every_row(warehouse) == before  # row for row, _loaded_at included


@pytest.mark.parametrize("resume_key", [None, "history-resumable"])
def test_incremental_history_adds_only_the_changed_versions(emulator, warehouse, resume_key):
    """The default read is incremental from the table's watermark (as for a merge), resumable
    or not: the overlap's unchanged records add nothing, the edited ones a version each."""
    load(resume_key=resume_key)
    edited = sorted(r["id"] for r in emulator.dataset["contacts"])[::30]
    edit(emulator, edited)
    summary = load(resume_key=resume_key)
    assert "updated_after" in summary["filters"]
    assert (summary["rows_updated"], summary["rows_inserted"]) == (len(edited), 0)
    history = versions(warehouse)
    assert {i for i, chain in history.items() if len(chain) == 2} == set(edited)
    assert_back_to_back(history)
    assert_table_matches(warehouse, f"{TABLE}_current", "contacts", emulator.dataset["contacts"])
    before = every_row(warehouse)
    rerun = load(resume_key=resume_key)
    assert rerun["rows_updated"] == rerun["rows_inserted"] == 0
    assert every_row(warehouse) == before


def test_backfill_windows_add_nothing_to_a_history(emulator, warehouse):
    """Windows re-read records the history already holds: the content hash says unchanged."""
    load(**FULL)
    before = every_row(warehouse)
    for start, end in (("2020-01-01", "2025-06-01"), ("2025-06-01", "2030-01-01")):
        summary = load(window_start=start, window_end=end)
        assert summary["rows_inserted"] == summary["rows_updated"] == 0
    assert every_row(warehouse) == before


def test_a_record_that_comes_back_opens_a_new_version(emulator, warehouse):
    """Deleted, then back as it was (same updated_at): its new version starts at the load that
    saw it again, after the closed one, so versions never overlap and keys stay unique."""
    load(**FULL)
    contacts = emulator.store.lists["contacts"][None]
    back_id = sorted(contacts.records)[7]
    back = dict(contacts.records[back_id])
    delete(emulator, [back_id])
    load(**FULL)
    put(emulator, "contacts", back)
    summary = load(**FULL)
    assert (summary["rows_updated"], summary["rows_inserted"]) == (0, 1)
    chain = versions(warehouse)[back_id]
    assert len(chain) == 2 and chain[1]["_is_current"]
    assert chain[0]["_valid_to"] == chain[0]["_deleted_at"] <= chain[1]["_valid_from"]
    assert_table_matches(warehouse, f"{TABLE}_current", "contacts", emulator.dataset["contacts"])


def test_a_change_without_a_new_updated_at_starts_at_the_load(emulator, warehouse):
    """An activity moves a contact's last_contacted_at but not its updated_at: the new version
    starts at the load's start instead, after the one it closes."""
    load(**FULL)
    loaded_before = datetime.now(timezone.utc)
    touched = set(emulator.log_activities(5))
    load(**FULL)
    history = versions(warehouse)
    assert {i for i, chain in history.items() if len(chain) == 2} == touched
    assert_back_to_back(history)
    for record_id in touched:
        old, new = history[record_id]
        assert new["_valid_from"] >= loaded_before > old["_valid_from"] == new["updated_at"]


def test_the_api_deleted_flag_closes_versions(emulator, warehouse):
    """Conversations carry the API's own ``deleted``: read with include_deleted, a record flagged
    deleted closes its current version (no new one), and opens one again when restored."""
    kwargs = {
        "resource": "conversations",
        "table": "conversations_history",
        "filters": {"include_deleted": True},
    }
    load(**kwargs)
    threads = emulator.store.lists["conversations"][None]
    flagged = {i for i, r in threads.records.items() if r.get("deleted") is True}
    live = [r for r in threads if r.get("deleted") is not True]
    assert flagged and live
    assert_table_matches(warehouse, "conversations_history_current", "conversations", live)
    assert not flagged & set(versions(warehouse, "conversations_history"))

    victim = live[0]["id"]
    put(emulator, "conversations", {**threads.records[victim], "deleted": True})
    summary = load(**kwargs)
    assert summary["rows_deleted"] == 1 and summary["rows_inserted"] == summary["rows_updated"] == 0
    chain = versions(warehouse, "conversations_history")[victim]
    assert len(chain) == 1 and not chain[0]["_is_current"] and chain[0]["_deleted_at"] is not None

    put(emulator, "conversations", {**threads.records[victim], "deleted": False})
    load(**kwargs)
    chain = versions(warehouse, "conversations_history")[victim]
    assert [v["_is_current"] for v in chain] == [False, True]
    assert chain[0]["_valid_to"] <= chain[1]["_valid_from"]


def test_drift_fills_the_new_column_in_a_new_version(emulator, warehouse):
    """A table from before a catalog field existed (and its view) gets the column: as a merge
    rewrites every row, a history opens one version of every record at that load (its
    content hash changed with the table's columns), complete, and the view shows it."""
    load(**FULL)
    warehouse.execute(f"DROP VIEW {TABLE}_current")
    if warehouse.kind in ("duckdb", "snowflake"):  # DuckDB drops no column before a key column
        names = [n for n in warehouse.select(f"SELECT * FROM {TABLE} LIMIT 0")[0] if n.lower() != "job_title"]
        warehouse.execute(f"CREATE TABLE {TABLE}_old AS SELECT {', '.join(names)} FROM {TABLE}")
        warehouse.execute(f"DROP TABLE {TABLE}")
        warehouse.execute(f"ALTER TABLE {TABLE}_old RENAME TO {TABLE}")
    else:
        warehouse.execute(f"ALTER TABLE {TABLE} DROP COLUMN job_title")
    summary = load(**FULL)
    assert summary["rows_updated"] == 300 and summary["rows_inserted"] == 0
    history = versions(warehouse)
    assert all(len(chain) == 2 for chain in history.values())
    assert_back_to_back(history)
    assert_table_matches(warehouse, f"{TABLE}_current", "contacts", emulator.dataset["contacts"])
    before = every_row(warehouse)
    load(**FULL)
    assert every_row(warehouse) == before


def test_a_failed_history_load_leaves_the_table_as_it_was(emulator, warehouse, monkeypatch):
    """Versions closed and opened in the transaction, then the load fails: all rolled back (on
    MySQL and Snowflake after every DDL and the staging have committed)."""
    from clarky_provider.sql import load as loader

    load(**FULL)
    before = every_row(warehouse)
    edit(emulator, sorted(r["id"] for r in emulator.dataset["contacts"])[:25])
    delete(emulator, sorted(r["id"] for r in emulator.dataset["contacts"])[-3:])
    new_versions = loader._TableLoad._new_versions

    def versions_then_fail(self, staged, compared, loaded):
        new_versions(self, staged, compared, loaded)
        self.cursor.execute(f"SELECT COUNT(*) FROM {self.target}")
        assert self.cursor.fetchone()[0] == 325  # the new versions are in, inside the transaction...
        raise RuntimeError("the warehouse failed after the new versions")

    monkeypatch.setattr(loader._TableLoad, "_new_versions", versions_then_fail)
    with pytest.raises(ClarkyLoadError, match="rolled back"):
        load(**FULL)
    assert every_row(warehouse) == before  # ...and gone after the rollback


def test_a_failed_first_history_load_leaves_no_table_and_no_view(emulator, warehouse, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emulator.connection_uri(max_retries=1))
    emulator.faults = FaultPlan(scheduled={n: "500" for n in range(2, 1000)})  # from the 2nd page on
    with pytest.raises(ClarkyServerError):
        load(batch_size=10, **FULL)
    names = {name.lower() for name in warehouse.tables()}
    assert TABLE not in names
    assert f"{TABLE}_current" not in {
        name.lower()
        for (name,) in warehouse.query(
            "SELECT table_name FROM information_schema.views"
            if warehouse.kind != "sqlite"
            else "SELECT name FROM sqlite_master WHERE type = 'view'"
        )
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delete_mode": "remove"}, "delete_mode='remove' cannot apply"),
        ({"table": "c" * 60}, "use a table name of at most 55 characters"),
    ],
)
def test_options_a_history_cannot_take_fail_before_any_request(emulator, kwargs, message):
    with pytest.raises(ClarkyConfigError, match=message):
        load(**kwargs)
    assert emulator.stats.requests == 0
