"""Engines are found through the ``clarky_provider.dialects`` entry-point group: ours are
registered there like anyone's, and a package outside this one adds (or replaces) an engine
without editing us."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from airflow.providers.sqlite.hooks.sqlite import SqliteHook

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.sql.dialects import (
    DIALECTS,
    ENTRY_POINT_GROUP,
    PostgresDialect,
    SqliteDialect,
    WarehouseDialect,
    dialect_for,
)
from clarky_provider.sql.load import LoadPlan, load
from clarky_provider.sql.schema import TableLayout
from clarky_provider.tables import Field, FieldType, TableSpec
from tests.warehouse import sqlite_warehouse

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)

#: A user's package: its own hook (connection type ``acme``) and a dialect for it, built on
#: SQLite's pieces so that a load can run on it here.
ACME_MODULE = """
from contextlib import contextmanager

from airflow.providers.sqlite.hooks.sqlite import SqliteHook

from clarky_provider.sql.dialects import Capabilities
from clarky_provider.sql.dialects.sqlite import SqliteDialect, SqliteWriter


class AcmeHook(SqliteHook):
    conn_type = "acme"


class AcmeWriter(SqliteWriter):
    rows = 0

    @contextmanager
    def stream(self, table, columns, batch_size):
        with super().stream(table, columns, batch_size) as write:

            def counted(row):
                AcmeWriter.rows += 1
                write(row)

            yield counted


class AcmeDialect(SqliteDialect):
    name = "acme"
    title = "Acme DB"
    capabilities = Capabilities(unquoted_case="upper", schemas=False)
    writer_class = AcmeWriter


NotADialect = object
"""


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``install(entries, name)``: the distribution ``name`` on ``sys.path``, as pip would leave it
    (the module ``name`` and its ``.dist-info`` with ``entry_points.txt``), registering ``entries``."""

    def put(entries: str, name: str = "acme_clarky") -> None:
        root = tmp_path / name
        info = root / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (root / f"{name}.py").write_text(ACME_MODULE)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{textwrap.dedent(entries)}")
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.delitem(sys.modules, name, raising=False)

    return put


def test_our_engines_are_registered_through_the_group():
    ours = {
        entry.name: entry.value
        for entry in entry_points(group=ENTRY_POINT_GROUP)
        if entry.module.startswith("clarky_provider.")
    }
    assert ours == {
        "postgres": "clarky_provider.sql.dialects.postgres:PostgresDialect",
        "postgresql": "clarky_provider.sql.dialects.postgres:PostgresDialect",
        "sqlite": "clarky_provider.sql.dialects.sqlite:SqliteDialect",
        "duckdb": "clarky_provider.sql.dialects.duckdb:DuckDBDialect",
        "mysql": "clarky_provider.sql.dialects.mysql:MySqlDialect",
        "mariadb": "clarky_provider.sql.dialects.mysql:MySqlDialect",
        "snowflake": "clarky_provider.sql.dialects.snowflake:SnowflakeDialect",
    }
    assert DIALECTS["postgresql"] is PostgresDialect and DIALECTS["SQLite"] is SqliteDialect
    assert "acme" not in DIALECTS


def test_a_package_outside_ours_adds_an_engine_for_its_connection_type(install, tmp_path, monkeypatch):
    install("acme = acme_clarky:AcmeDialect\n")
    from acme_clarky import AcmeDialect, AcmeHook, AcmeWriter

    warehouse = sqlite_warehouse(tmp_path, monkeypatch)
    dialect = dialect_for(AcmeHook(sqlite_conn_id=warehouse.conn_id))
    assert type(dialect) is AcmeDialect and "acme" in DIALECTS
    with pytest.raises(ClarkyConfigError, match=r"not upper case: use 'EVENTS'\. Acme DB folds"):
        dialect.check_case("events", "table")  # its capabilities, not SQLite's

    spec = TableSpec("events", (Field("id", FieldType.STRING),), primary_key=("id",))
    plan = LoadPlan(TableLayout(spec), None, "EVENTS", "merge", None, False, False, batch_size=10)
    connection = dialect.session.connect()
    try:
        loaded = load(plan, dialect, connection, lambda _: [{"id": "a"}, {"id": "b"}], (NOW, None, None))
    finally:
        dialect.session.close(connection)
    assert loaded.rows_inserted == 2 and AcmeWriter.rows == 2  # its writer took the rows
    assert sorted(warehouse.query("SELECT id FROM EVENTS")) == [("a",), ("b",)]


def test_a_generic_connection_finds_it_by_dialect_name(install):
    install("acme = acme_clarky:AcmeDialect\n")
    from acme_clarky import AcmeDialect

    class GenericHook(SqliteHook):
        conn_type = "generic"
        dialect_name = "acme"  # what common-sql reads off a generic connection's URI

    assert type(dialect_for(GenericHook())) is AcmeDialect


def test_another_packages_dialect_replaces_ours_of_the_same_name(install):
    install("sqlite = acme_clarky:AcmeDialect\n")
    from acme_clarky import AcmeDialect

    assert type(dialect_for(SqliteHook())) is AcmeDialect


def test_of_two_other_packages_registering_one_name_the_first_on_sys_path_wins(install, caplog):
    install("acme = acme_clarky:AcmeDialect\n")
    install("acme = other_clarky:AcmeDialect\n", name="other_clarky")  # prepended: found first
    from other_clarky import AcmeDialect, AcmeHook

    with caplog.at_level(logging.WARNING, logger="clarky_provider.sql.dialects.registry"):
        assert type(dialect_for(AcmeHook())) is AcmeDialect
    assert (
        "Two Clarky dialects are registered for 'acme': other_clarky:AcmeDialect and acme_clarky"
        in caplog.text
    )


def test_a_broken_registration_fails_instead_of_falling_back(install):
    install("missing = acme_clarky:Missing\nplain = acme_clarky:NotADialect\n")
    with pytest.raises(ClarkyConfigError, match=r"'missing' \(acme_clarky:Missing\) could not be loaded"):
        DIALECTS["missing"]
    with pytest.raises(ClarkyConfigError, match=r"'plain' .* is not a subclass of .*WarehouseDialect"):
        DIALECTS["plain"]


def test_an_engine_nobody_registered_gets_ansi_sql_and_a_warning(caplog):
    class OddHook(SqliteHook):
        conn_type = "oddengine"
        dialect_name = "oddengine"

    with caplog.at_level(logging.WARNING, logger="clarky_provider.sql.dialects.registry"):
        dialect = dialect_for(OddHook())
    assert type(dialect) is WarehouseDialect
    assert "No Clarky dialect for connection type 'oddengine' (dialect 'oddengine')" in caplog.text
    assert "Registered (entry-point group clarky_provider.dialects): duckdb, mariadb," in caplog.text
