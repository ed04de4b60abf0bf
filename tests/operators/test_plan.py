"""The read side of a load is planned beside the operators; the load engine sees only a table
and a record source that takes the table's watermark."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.operators import plan as planning
from clarky_provider.operators.plan import ReadPlan, table_spec
from clarky_provider.resources import COMPANIES, CONTACT_ACTIVITIES, CONTACTS
from clarky_provider.sql.load import LoadPlan, load
from clarky_provider.sql.schema import TableLayout
from clarky_provider.tables import Field, FieldType, TableSpec
from tests.warehouse import sqlite_warehouse

NEWEST = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_filters_are_checked_when_planned_and_each_is_encoded_once(monkeypatch):
    with pytest.raises(ClarkyConfigError, match="not supported"):
        ReadPlan(COMPANIES, {"updated_after": NEWEST})
    encoded: list[str] = []
    encode = planning.encode_filters

    def counting(resource, filters):
        encoded.extend(filters)
        return encode(resource, filters)

    monkeypatch.setattr(planning, "encode_filters", counting)
    plan = ReadPlan(CONTACTS, {"tags": ["vip", "new"]}, watermark_overlap=timedelta(minutes=5))
    read = plan.read(NEWEST)
    assert sorted(encoded) == ["tags", "updated_after"]
    assert read.params == {"tags": "vip,new", "updated_after": "2026-03-01T11:55:00Z"}
    assert read.filters == {"tags": ["vip", "new"], "updated_after": "2026-03-01T11:55:00+00:00"}
    assert read.changed_since is None


def test_no_watermark_reads_everything_and_updated_after_wins_over_it():
    everything = ReadPlan(CONTACTS, {}).read(None)
    assert everything.params == {} and everything.filters == {}
    explicit = ReadPlan(CONTACTS, {}, updated_after=NEWEST).read(None)
    assert explicit.params == {"updated_after": "2026-03-01T12:00:00Z"}


def test_a_child_resource_starts_from_its_parents_changes(caplog):
    with caplog.at_level(logging.INFO, logger="clarky_provider.operators.plan"):
        read = ReadPlan(CONTACT_ACTIVITIES, {}, watermark_overlap=timedelta(0)).read(NEWEST)
    assert read.params == {} and read.changed_since == NEWEST
    assert read.filters == {"changed_since": NEWEST.isoformat()}
    assert "Incremental load of contact_activities: parents changed from" in caplog.text


def test_table_spec_has_the_convenience_columns_of_the_list_fields_it_holds():
    assert [d.name for d in table_spec(CONTACTS).derived] == ["primary_email", "primary_phone"]
    assert table_spec(CONTACT_ACTIVITIES).derived == ()
    assert table_spec(CONTACTS).cursor == "updated_at"


def test_the_engine_loads_any_table_from_a_source_given_only_the_watermark(tmp_path, monkeypatch):
    """No catalog resource and no hook: a hand-made spec and a plain function."""
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    from clarky_provider.sql.dialects import dialect_for

    warehouse = sqlite_warehouse(tmp_path, monkeypatch)
    dialect = dialect_for(SqliteHook(sqlite_conn_id=warehouse.conn_id))
    spec = TableSpec(
        source="events",
        fields=(Field("id", FieldType.STRING), Field("at", FieldType.TIMESTAMP)),
        primary_key=("id",),
        cursor="at",
    )
    plan = LoadPlan(
        layout=TableLayout(spec),
        schema=None,
        table="events",
        write_mode="merge",
        delete_mode=None,
        full_snapshot=False,
        incremental=True,
        batch_size=100,
    )
    asked: list[datetime | None] = []

    def source(records: list[dict[str, Any]]):
        def read(newest: datetime | None) -> list[dict[str, Any]]:
            asked.append(newest)
            return records

        return read

    def run(records: list[dict[str, Any]]):
        connection = dialect.session.connect()
        try:
            return load(plan, dialect, connection, source(records), (NEWEST, None, None))
        finally:
            dialect.session.close(connection)

    first = run([{"id": "a", "at": "2026-01-01T00:00:00Z"}, {"id": "b", "at": "2026-01-02T00:00:00Z"}])
    second = run([{"id": "b", "at": "2026-01-02T00:00:00Z"}, {"id": "c", "at": "2026-01-03T00:00:00Z"}])
    assert asked == [None, datetime(2026, 1, 2, tzinfo=timezone.utc)]
    assert (first.rows_inserted, first.watermark) == (2, datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert (second.rows_inserted, second.rows_unchanged, second.rows_updated) == (1, 1, 0)
    assert second.watermark == datetime(2026, 1, 3, tzinfo=timezone.utc)
    assert sorted(warehouse.query("SELECT id FROM events")) == [("a",), ("b",), ("c",)]
