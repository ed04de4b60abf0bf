"""Per-task hook settings (``clarky_hook_params``, ``sql_hook_params``): applied, and checked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.operators.clarky_to_object_storage import ClarkyToObjectStorageOperator
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.operators.hooks import sql_hook
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


def test_an_unknown_sql_hook_param_is_refused_before_any_request(emulator, tmp_path, monkeypatch):
    warehouse = sqlite_warehouse(tmp_path, monkeypatch)
    with pytest.raises(
        ClarkyConfigError, match=r"^sql_hook_params: SqliteHook takes no warehouse: .* names log_sql, schema;"
    ):
        load(sql_hook_params={"warehouse": "LOAD_WH"})
    assert emulator.stats.requests == 0 and not warehouse.exists("contacts")


#: A connection of each engine, to build its hook (no server is reached: hooks connect lazily).
CONNECTIONS = {
    "sqlite": {"conn_type": "sqlite", "host": "/tmp/unused.db"},
    "postgres": {"conn_type": "postgres", "host": "db.example.com", "schema": "analytics"},
    "snowflake": {"conn_type": "snowflake", "login": "u", "extra": {"account": "a", "database": "D"}},
}


def hook_of(engine: str, monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]) -> Any:
    pytest.importorskip(f"airflow.providers.{engine}")
    monkeypatch.setenv("AIRFLOW_CONN_WH", json.dumps(CONNECTIONS[engine]))
    return sql_hook("wh", params)


@pytest.mark.parametrize(
    ("engine", "params"),
    [
        ("postgres", {"database": "other", "options": "-c search_path=landing"}),
        ("snowflake", {"warehouse": "LOAD_WH", "role": "LOADER", "session_parameters": {"QUERY_TAG": "t"}}),
        ("sqlite", {"escape_word_format": "[{}]", "log_sql": False}),
    ],
)
def test_params_the_hook_takes_reach_it(monkeypatch, engine, params):
    """Named by a constructor (``options``, ``log_sql``), or read from ``**kwargs`` and kept as an
    attribute of that name (``database``, Snowflake's) or behind a property (``escape_word_format``)."""
    hook = hook_of(engine, monkeypatch, params)
    assert {name: getattr(hook, name) for name in params} == params


def test_a_misspelt_param_the_hook_would_swallow_is_refused_with_the_name_meant(monkeypatch):
    """SnowflakeHook reads its settings from ``**kwargs``: no constructor names ``warehouse``."""
    with pytest.raises(
        ClarkyConfigError,
        match=r"^sql_hook_params: SnowflakeHook takes no wharehouse \(did you mean warehouse\?\)",
    ):
        hook_of("snowflake", monkeypatch, {"wharehouse": "LOAD_WH"})


def test_an_attribute_the_constructor_sets_itself_is_not_a_param(monkeypatch):
    """DbApiHook starts ``descriptions`` empty whatever it is given: the value given is not kept."""
    with pytest.raises(ClarkyConfigError, match=r"^sql_hook_params: SqliteHook takes no descriptions:"):
        hook_of("sqlite", monkeypatch, {"descriptions": ["x"]})


def test_a_param_the_constructor_refuses_is_blamed_on_sql_hook_params(monkeypatch):
    with pytest.raises(
        ClarkyConfigError,
        match=r"^sql_hook_params: the hook of connection 'wh' \(type 'sqlite'\) refused them: "
        r".*multiple values for keyword argument 'sqlite_conn_id'",
    ):
        hook_of("sqlite", monkeypatch, {"sqlite_conn_id": "other"})


@pytest.fixture
def pg_warehouse(monkeypatch):
    yield from postgres_warehouse(monkeypatch)


def test_sql_hook_params_reach_the_hook(emulator, pg_warehouse):
    """PostgresHook's ``options`` set the session's search_path: the table lands in that schema."""
    pg_warehouse.execute("CREATE SCHEMA landing")
    load(sql_hook_params={"options": "-c search_path=landing"})
    assert pg_warehouse.query("SELECT COUNT(*) FROM landing.contacts") == [(300,)]
    assert not pg_warehouse.query("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'")
