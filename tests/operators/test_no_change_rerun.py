"""A merge rerun with no change upstream writes nothing, incremental or not: the records it
reads again (the watermark's overlap re-reads the newest rows) keep their rows as they are,
``_loaded_at`` ("when the row last changed"), ``_dag_id`` and ``_run_id`` included; after an
upstream change exactly the changed rows are written."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from tests.warehouse import ENGINES, assert_table_matches, open_warehouse


@pytest.fixture(params=ENGINES)
def warehouse(request, tmp_path, monkeypatch):
    """Every engine: whether a rerun writes is decided by each engine's statements."""
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


def load(run_id: str, **kwargs: Any) -> dict[str, Any]:
    """A contacts merge (the defaults: write_mode="merge", incremental="auto") as DAG run ``run_id``."""
    operator = ClarkyToSqlOperator(
        task_id="load_contacts", resource="contacts", sql_conn_id="warehouse", **kwargs
    )
    return operator.execute({"dag_run": SimpleNamespace(dag_id="clarky_sync", run_id=run_id)})  # type: ignore[arg-type]


def changed_rows(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> set[str]:
    assert set(after) >= set(before), "a merge never removes rows"
    return {key for key, row in after.items() if before.get(key) != row}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="auto-watermark"),
        pytest.param({"incremental": "watermark"}, id="watermark"),
        # Not a full snapshot either, but reads every record again.
        pytest.param({"updated_after": "2000-01-01T00:00:00Z"}, id="updated_after"),
    ],
)
def test_rerun_without_change_writes_nothing(emulator, warehouse, kwargs):
    first = load("run_1", **kwargs)
    assert first["rows_inserted"] == 300
    before = warehouse.rows("contacts")

    second = load("run_2", **kwargs)

    assert "updated_after" in second["filters"]  # the incremental path, not a full snapshot
    assert second["rows_fetched"] >= 1  # the overlap (or the bound) did read rows that are there
    assert second["rows_inserted"] == 0
    assert second["rows_updated"] == 0
    assert second["rows_unchanged"] == second["rows_fetched"]
    assert second["watermark"] == first["watermark"]
    after = warehouse.rows("contacts")
    assert {k: r["_loaded_at"] for k, r in after.items()} == {k: r["_loaded_at"] for k, r in before.items()}
    assert {r["_run_id"] for r in after.values()} == {"run_1"}
    assert after == before  # not a byte of any row was written


def test_rerun_after_updates_writes_exactly_the_updated_rows(emulator, warehouse):
    load("run_1")
    before = warehouse.rows("contacts")
    updated = set(emulator.mutate(updates=5)["updated"])

    second = load("run_2")

    assert second["rows_inserted"] == 0
    assert second["rows_updated"] == len(updated)
    assert second["rows_unchanged"] == second["rows_fetched"] - len(updated)
    assert second["rows_unchanged"] >= 1  # the overlap re-read an unchanged row, and left it
    after = warehouse.rows("contacts")
    assert changed_rows(before, after) == updated
    for key in updated:
        assert after[key]["_loaded_at"] > before[key]["_loaded_at"]
        assert after[key]["_run_id"] == "run_2"
        assert after[key]["_content_hash"] != before[key]["_content_hash"]
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])

    # Caught up: the next rerun re-reads the updated rows (now the newest) and writes nothing.
    third = load("run_3")
    assert third["rows_fetched"] >= 1
    assert third["rows_inserted"] == third["rows_updated"] == 0
    assert warehouse.rows("contacts") == after


def test_rerun_writes_a_row_flagged_deleted_that_comes_back(emulator, warehouse):
    """Same content, but the row says the record was deleted: it is written again, the flag cleared."""
    load("run_1")
    rows = warehouse.rows("contacts")
    newest = max(rows, key=lambda key: rows[key]["updated_at"])  # one the overlap reads again
    quote = warehouse.quote
    warehouse.execute(
        f"UPDATE {quote('contacts')} SET {quote('_deleted_at')} = CURRENT_TIMESTAMP WHERE id = '{newest}'"
    )
    flagged = warehouse.rows("contacts")
    assert flagged[newest]["_deleted_at"] is not None

    second = load("run_2")

    assert second["rows_updated"] == 1 and second["rows_inserted"] == 0
    after = warehouse.rows("contacts")
    assert changed_rows(flagged, after) == {newest}
    assert after[newest]["_deleted_at"] is None
    assert after[newest]["_run_id"] == "run_2"
