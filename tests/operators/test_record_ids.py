"""Targeted re-syncs (``record_ids``) on every engine: exactly the named records are read (one
request each, or one parent's list each), merged, and deleted where the API no longer has them;
every other row stays as it was, byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.resources import RESOURCES
from tests.warehouse import ENGINES, Warehouse, expected_row, open_warehouse


@pytest.fixture(params=ENGINES)
def warehouse(request, tmp_path, monkeypatch):
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


def load(resource: str = "contacts", **kwargs: Any) -> dict[str, Any]:
    operator = ClarkyToSqlOperator(task_id="resync", resource=resource, sql_conn_id="warehouse", **kwargs)
    return operator.execute({})  # type: ignore[arg-type]


def stored(warehouse: Warehouse, table: str) -> dict[str, tuple[Any, ...]]:
    """Every row as stored, by id: what an untouched row must still be."""
    names, rows = warehouse.select(f"SELECT * FROM {warehouse.quote(table)}")
    at = [n.lower() for n in names].index("id")
    return {row[at]: tuple(row) for row in rows}


def assert_rows_equal_source(warehouse: Warehouse, resource: str, records: list[dict[str, Any]]) -> None:
    rows = warehouse.rows(resource)
    for record in records:
        expected = expected_row(resource, record)
        assert {k: rows[record["id"]][k] for k in expected} == expected, record["id"]


def test_named_contacts_are_re_read_merged_and_deleted_and_nothing_else_changes(emulator, warehouse):
    load(incremental="full")
    before = stored(warehouse, "contacts")
    changed = emulator.mutate(updates=3, deletes=1)
    updated, (deleted,) = list(dict.fromkeys(changed["updated"])), changed["deleted"]
    also_changed = emulator.mutate(updates=2)["updated"]  # changed upstream, but not named
    unchanged = next(i for i in before if i not in {*updated, deleted, *also_changed})
    named = [*updated, deleted, unchanged]

    requests = emulator.stats.requests
    summary = load(record_ids=", ".join(named))

    assert emulator.stats.requests - requests == len(named)  # one GET /contacts/{id} each
    assert summary["records_not_found"] == [deleted]
    assert (summary["rows_updated"], summary["rows_unchanged"], summary["rows_deleted"]) == (
        len(updated),
        1,
        1,
    )
    after = stored(warehouse, "contacts")
    assert deleted not in after
    truth = {c["id"]: c for c in emulator.dataset["contacts"]}
    assert_rows_equal_source(warehouse, "contacts", [truth[i] for i in [*updated, unchanged]])
    untouched = set(before) - {*updated, deleted}
    assert {i: after[i] for i in untouched} == {i: before[i] for i in untouched}  # also_changed too

    again = load(record_ids=named)  # a rerun: nothing left to change
    assert (again["rows_inserted"], again["rows_updated"], again["rows_deleted"]) == (0, 0, 0)
    assert stored(warehouse, "contacts") == after


def test_a_child_resource_re_reads_the_named_parents_lists(emulator, warehouse):
    """For activities the ids are contacts': each one's whole list is read, a new activity is
    added and one removed upstream is deleted; other contacts' activities stay as they were."""
    load("contact_activities", incremental="full")
    before = stored(warehouse, "contact_activities")
    store = emulator.store
    fresh = emulator.log_activities(2)
    with store.lock:  # an activity removed upstream from a third contact's list
        third = next(
            c for c, acts in store.lists["contact_activities"].items() if c not in fresh and acts.order
        )
        removed = store.lists["contact_activities"][third].order[0]
        store.lists["contact_activities"][third].remove(removed)
        store.version += 1
    named = [*fresh, third]

    requests = emulator.stats.requests
    summary = load("contact_activities", record_ids=named)

    pages = sum(-(-len(store.lists["contact_activities"][c].order) // 100) or 1 for c in named)
    assert emulator.stats.requests - requests == pages
    assert (summary["rows_inserted"], summary["rows_deleted"]) == (2, 1)
    after = stored(warehouse, "contact_activities")
    assert removed not in after
    truth = [a for a in emulator.dataset["contact_activities"] if a["contact_id"] in named]
    assert_rows_equal_source(warehouse, "contact_activities", truth)
    assert {i: r for i, r in after.items() if i in before} == {
        i: r for i, r in before.items() if i != removed
    }


@pytest.fixture
def sqlite(tmp_path, monkeypatch):
    yield from open_warehouse("sqlite", tmp_path, monkeypatch)


def test_a_history_closes_the_version_of_a_record_the_api_no_longer_has(emulator, sqlite, monkeypatch):
    warehouse = sqlite
    monkeypatch.setitem(RESOURCES, "contacts_current", RESOURCES["contacts"])
    load(table="contacts", write_mode="history", incremental="full")
    (deleted,) = emulator.mutate(deletes=1)["deleted"]
    summary = load(table="contacts", write_mode="history", record_ids=[deleted])
    assert summary["rows_deleted"] == 1
    (row,) = warehouse.query(f"SELECT _is_current, _valid_to FROM contacts WHERE id = '{deleted}'")
    assert not row[0] and row[1] is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resource": "pipelines"}, "cannot be read by id"),
        ({"filters": {"updated_after": "2026-01-01T00:00:00Z"}}, "drop filters"),
        ({"window_start": "2025-01-01", "window_end": "2026-01-01"}, "drop window_start/window_end"),
        ({"write_mode": "append"}, "write_mode='merge' or 'history'"),
        ({"record_ids": [str(i) for i in range(1001)]}, "at most 1000"),
        ({"record_ids": []}, "names no record"),
        ({"record_ids": " , "}, "names no record"),
        ({"exclude_columns": ["contact_id"], "resource": "contact_activities"}, "keep it"),
    ],
)
def test_a_re_sync_that_cannot_run_fails_before_any_request(emulator, sqlite, kwargs, message):
    kwargs = {"record_ids": ["c_1"], **kwargs}
    with pytest.raises(ClarkyConfigError, match=message):
        load(**kwargs)
    assert emulator.stats.requests == 0
