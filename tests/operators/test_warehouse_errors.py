"""Warehouse connections a load cannot use, refused before any request or write with the fix:
a connection type no installed provider serves, and table or schema names in a case the engine
would not find unquoted."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from clarky_provider.compat import AirflowException, BaseHook
from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.operators.hooks import providers_manager, sql_hook
from clarky_provider.sql.dialects import Capabilities, WarehouseDialect, dialect_for
from tests.warehouse import (
    SNOWFLAKE_SCHEMA,
    postgres_warehouse,
    snowflake_warehouse,
    sqlite_warehouse,
)


def load(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("resource", "pipelines")
    return ClarkyToSqlOperator(task_id="t", sql_conn_id="warehouse", **kwargs).execute({})


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **conn: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


# -- a connection type without its provider ----------------------------------------------------


class _Hooks(Mapping[str, Any]):
    """The providers manager's hooks as if one connection type's provider were broken or gone."""

    def __init__(self, real: Mapping[str, Any], conn_type: str, *, registered: bool) -> None:
        self.real, self.conn_type, self.registered = real, conn_type, registered

    def __getitem__(self, key: str) -> Any:
        if key == self.conn_type:
            if self.registered:
                return None  # what the manager holds for a hook whose import failed
            raise KeyError(key)
        return self.real[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k in self.real if k != self.conn_type or self.registered)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@pytest.fixture
def provider_gone(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Hide a connection type's hook in the registry that ``Connection.get_hook`` reads."""

    def hide(conn_type: str, *, registered: bool = False) -> None:
        manager = providers_manager()
        hooks = _Hooks(manager.hooks, conn_type, registered=registered)
        monkeypatch.setattr(type(manager), "hooks", property(lambda self: hooks))

    return hide


def test_an_uninstalled_provider_is_named_as_a_guess(emulator, monkeypatch):
    if "vertica" in providers_manager().hooks:
        pytest.skip("a Vertica provider is installed here")
    set_conn(monkeypatch, "warehouse", conn_type="vertica", host="db.example.com")
    with pytest.raises(AirflowException, match='Unknown hook type "vertica"'):
        BaseHook.get_connection("warehouse").get_hook()  # what Airflow alone says
    with pytest.raises(ClarkyConfigError) as refused:
        load()
    assert str(refused.value) == (
        "Connection 'warehouse' is of type 'vertica', and no installed Airflow provider serves that "
        "type: install its provider, probably apache-airflow-providers-vertica (a guess from the "
        "type's name)."
    )
    assert emulator.stats.requests == 0


def test_a_missing_sqlite_provider_names_its_package(emulator, tmp_path, monkeypatch, provider_gone):
    """Airflow 3.3 ships without apache-airflow-providers-sqlite."""
    sqlite_warehouse(tmp_path, monkeypatch)
    provider_gone("sqlite")
    with pytest.raises(AirflowException, match='Unknown hook type "sqlite"'):
        BaseHook.get_connection("warehouse").get_hook()
    with pytest.raises(ClarkyConfigError, match="no installed Airflow provider serves that type") as refused:
        load()
    assert str(refused.value).endswith(
        ": install apache-airflow-providers-sqlite (pip install apache-airflow-providers-sqlite)."
    )
    assert emulator.stats.requests == 0
    assert not (tmp_path / "warehouse.db").exists()


@pytest.mark.parametrize("conn_type", ["postgres", "mysql", "duckdb", "snowflake"])
def test_a_missing_warehouse_provider_names_our_extra(monkeypatch, provider_gone, conn_type):
    set_conn(monkeypatch, "wh", conn_type=conn_type, host="db.example.com")
    provider_gone(conn_type)
    with pytest.raises(
        ClarkyConfigError,
        match=rf"install apache-airflow-providers-{conn_type} \(pip install "
        rf"'airflow-provider-clarky\[{conn_type}\]' installs it with the driver",
    ):
        sql_hook("wh", None)


def test_a_provider_whose_hook_cannot_import_is_told_apart(monkeypatch, provider_gone):
    """Installed but broken (its driver missing): reinstalling the provider alone may not help."""
    set_conn(monkeypatch, "wh", conn_type="mysql", host="db.example.com")
    provider_gone("mysql", registered=True)
    with pytest.raises(ClarkyConfigError) as refused:
        sql_hook("wh", None)
    message = str(refused.value)
    assert (
        "(apache-airflow-providers-mysql) registers that type, but its hook could not be imported" in message
    )
    assert '"Exception when importing ..."' in message and "missing module" in message


def test_a_connection_without_a_type_is_named(monkeypatch):
    set_conn(monkeypatch, "wh", host="db.example.com")
    with pytest.raises(ClarkyConfigError, match="'wh' has no connection type; set it"):
        sql_hook("wh", None)


def test_other_failures_of_an_installed_hook_are_not_relabelled(tmp_path, monkeypatch):
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    sqlite_warehouse(tmp_path, monkeypatch)

    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the hook itself failed")

    monkeypatch.setattr(SqliteHook, "__init__", broken)
    with pytest.raises(RuntimeError, match="the hook itself failed"):
        sql_hook("warehouse", None)


# -- names in a case the engine folds away ------------------------------------------------------

#: A connection of each engine, to build its hook (no server is reached: hooks connect lazily).
CONNECTIONS = {
    "postgres": {"conn_type": "postgres", "host": "db.example.com", "schema": "analytics"},
    "snowflake": {"conn_type": "snowflake", "login": "u", "extra": {"account": "a", "database": "D"}},
    "sqlite": {"conn_type": "sqlite", "host": "/tmp/unused.db"},
    "duckdb": {"conn_type": "duckdb", "host": ":memory:"},
    "mysql": {"conn_type": "mysql", "host": "db.example.com", "schema": "analytics"},
}
#: What each engine's hook imports (a machine where mysqlclient cannot build has no MySQLdb).
HOOK_MODULES = {
    "postgres": ("airflow.providers.postgres",),
    "snowflake": ("airflow.providers.snowflake",),
    "sqlite": ("airflow.providers.sqlite",),
    "duckdb": ("airflow.providers.duckdb",),
    "mysql": ("airflow.providers.mysql", "MySQLdb"),
}


def dialect_of(engine: str, monkeypatch: pytest.MonkeyPatch) -> WarehouseDialect:
    for module in HOOK_MODULES[engine]:
        pytest.importorskip(module)
    set_conn(monkeypatch, f"case_{engine}", **CONNECTIONS[engine])
    dialect = dialect_for(sql_hook(f"case_{engine}", None))
    assert dialect.name == engine  # the engine's own dialect, not the ANSI fallback
    return dialect


def test_postgres_refuses_names_that_are_not_lower_case(monkeypatch):
    dialect = dialect_of("postgres", monkeypatch)
    assert dialect.capabilities.unquoted_case == "lower"
    with pytest.raises(ClarkyConfigError) as refused:
        dialect.check_case("CRM_Pipelines", "table")
    assert str(refused.value) == (
        "Table name 'CRM_Pipelines' is not lower case: use 'crm_pipelines'. PostgreSQL folds unquoted "
        'names to lower case, so a table created as "CRM_Pipelines" could only be queried in quotes.'
    )
    with pytest.raises(
        ClarkyConfigError, match=r"""Schema name 'Sales' .* use 'sales'\..* a schema created as "Sales" """
    ):
        dialect.check_case("Sales", "schema")
    assert dialect.check_case("crm_pipelines_2", "table") == "crm_pipelines_2"


def test_snowflake_stores_every_name_upper_case_so_refuses_none(monkeypatch):
    """Snowflake folds unquoted names to upper case, and the dialect quotes them upper-cased."""
    dialect = dialect_of("snowflake", monkeypatch)
    assert dialect.capabilities.unquoted_case == "upper"
    for name in ("CRM_Pipelines", "crm_pipelines", "CRM_PIPELINES"):
        assert dialect.check_case(name, "table") == name
        assert dialect.quote(name) == '"CRM_PIPELINES"'


@pytest.mark.parametrize("engine", ["sqlite", "duckdb", "mysql"])
def test_engines_that_match_names_whatever_their_case_refuse_none(monkeypatch, engine):
    dialect = dialect_of(engine, monkeypatch)
    assert dialect.capabilities.unquoted_case is None
    assert dialect.check_case("CRM_Pipelines", "table") == "CRM_Pipelines"


def test_the_rule_is_the_dialects_capability_not_an_engine_name(monkeypatch):
    """A dialect that folds to upper case but stores names as given refuses lower case."""
    base = dialect_of("sqlite", monkeypatch)

    class UpperFolding(WarehouseDialect):
        title = "An upper-folding engine"
        capabilities = Capabilities(unquoted_case="upper")

    dialect = UpperFolding(base.hook)
    with pytest.raises(ClarkyConfigError, match=r"'contacts' is not upper case: use 'CONTACTS'\. An upper"):
        dialect.check_case("contacts", "table")
    assert dialect.check_case("CONTACTS", "table") == "CONTACTS"
    assert WarehouseDialect(base.hook).check_case("Contacts", "table") == "Contacts"  # ANSI: unknown


@pytest.fixture
def embedded(request, tmp_path, monkeypatch):
    from tests.warehouse import duckdb_warehouse

    if request.param == "duckdb":
        pytest.importorskip("airflow.providers.duckdb")
        return duckdb_warehouse(tmp_path, monkeypatch)
    return sqlite_warehouse(tmp_path, monkeypatch)


@pytest.mark.parametrize("embedded", ["sqlite", "duckdb"], indirect=True)
def test_mixed_case_tables_load_where_the_engine_ignores_case(emulator, embedded):
    summary = load(table="CRM_Pipelines")
    assert summary["rows_inserted"] == len(emulator.dataset["pipelines"])
    assert embedded.query("SELECT COUNT(*) FROM crm_pipelines") == [(summary["rows_inserted"],)]


@pytest.fixture
def snowflake(tmp_path, monkeypatch):
    pytest.importorskip("fakesnow")
    yield from snowflake_warehouse(tmp_path, monkeypatch)


def test_snowflake_creates_a_mixed_case_table_upper_case(emulator, snowflake):
    """fakesnow matches names whatever their case, so the proof is the stored name: upper case,
    what an unquoted name resolves to on Snowflake."""
    summary = load(table="CRM_Pipelines")
    stored = snowflake.query(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{SNOWFLAKE_SCHEMA}'"
    )
    assert stored == [("CRM_PIPELINES",)]
    assert snowflake.query("SELECT COUNT(*) FROM crm_pipelines") == [(summary["rows_inserted"],)]


@pytest.fixture
def postgres(monkeypatch):
    yield from postgres_warehouse(monkeypatch)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": "CRM_Pipelines"}, "Table name 'CRM_Pipelines' is not lower case: use 'crm_pipelines'"),
        ({"schema": "Sales"}, "Schema name 'Sales' is not lower case: use 'sales'"),
    ],
)
def test_postgres_refuses_a_mixed_case_name_before_any_request(emulator, postgres, kwargs, message):
    with pytest.raises(ClarkyConfigError, match=message):
        load(**kwargs)
    assert emulator.stats.requests == 0
    assert not {"pipelines", "crm_pipelines", "CRM_Pipelines"} & postgres.tables()
    assert not postgres.query("SELECT 1 FROM pg_namespace WHERE nspname IN ('Sales', 'sales')")


@pytest.mark.postgres
def test_postgres_loads_a_lower_case_name_that_answers_unquoted(emulator, postgres):
    summary = load(table="crm_pipelines")
    assert postgres.query("SELECT COUNT(*) FROM crm_pipelines") == [(summary["rows_inserted"],)]
