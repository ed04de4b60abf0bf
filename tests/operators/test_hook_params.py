"""Per-task hook settings (``clarky_hook_params``, ``sql_hook_params``): applied, and checked."""

from __future__ import annotations

import pytest

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.operators.clarky_to_object_storage import ClarkyToObjectStorageOperator
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from tests.warehouse import assert_table_matches, postgres_warehouse, sqlite_warehouse


def load(**kwargs):
    return ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="warehouse", **kwargs).execute(
        {}
    )


def test_clarky_hook_params_override_the_connection(emulator, tmp_path, monkeypatch):
    warehouse = sqlite_warehouse(tmp_path, monkeypatch)
    summary = load(clarky_hook_params={"page_size": 50, "max_concurrency": 1})
    assert summary["pages"] == summary["requests"] == 6  # 300 contacts in pages of 50, not 100
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])


@pytest.mark.parametrize("operator", ["sql", "object_storage"])
def test_an_unknown_clarky_hook_param_names_the_valid_ones(emulator, tmp_path, monkeypatch, operator):
    sqlite_warehouse(tmp_path, monkeypatch)
    params = {"pagesize": 50}
    if operator == "sql":
        task = ClarkyToSqlOperator(
            task_id="t", resource="contacts", sql_conn_id="warehouse", clarky_hook_params=params
        )
    else:
        task = ClarkyToObjectStorageOperator(
            task_id="t", resource="contacts", path=f"file://{tmp_path}/out/", clarky_hook_params=params
        )
    with pytest.raises(
        ClarkyConfigError, match=r"^clarky_hook_params has no pagesize; valid names: .*page_size"
    ):
        task.execute({})
    assert emulator.stats.requests == 0


def test_a_clarky_hook_param_out_of_range_is_blamed_on_clarky_hook_params(emulator, tmp_path, monkeypatch):
    sqlite_warehouse(tmp_path, monkeypatch)
    with pytest.raises(
        ClarkyConfigError, match=r"^clarky_hook_params 'page_size' must be between 1 and 100, got 500"
    ):
        load(clarky_hook_params={"page_size": 500})
    assert emulator.stats.requests == 0


def test_an_unknown_sql_hook_param_names_the_valid_ones(emulator, tmp_path, monkeypatch):
    warehouse = sqlite_warehouse(tmp_path, monkeypatch)
    with pytest.raises(ClarkyConfigError, match=r"SqliteHook takes no warehouse; it takes .*log_sql"):
        load(sql_hook_params={"warehouse": "LOAD_WH"})
    assert emulator.stats.requests == 0 and not warehouse.exists("contacts")


@pytest.fixture
def pg_warehouse(monkeypatch):
    yield from postgres_warehouse(monkeypatch)


def test_sql_hook_params_reach_the_hook(emulator, pg_warehouse):
    """PostgresHook's ``options`` set the session's search_path: the table lands in that schema."""
    pg_warehouse.execute("CREATE SCHEMA landing")
    load(sql_hook_params={"options": "-c search_path=landing"})
    assert pg_warehouse.query("SELECT COUNT(*) FROM landing.contacts") == [(300,)]
    assert not pg_warehouse.query("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'")
