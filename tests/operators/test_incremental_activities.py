"""Daily activities runs read only what changed; the weekly full refresh restores deletes."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.normalize import parse_timestamp
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.testing import ClarkyEmulator, DatasetSize
from tests.warehouse import assert_table_matches


def load(**kwargs):
    kwargs.setdefault("sql_conn_id", "warehouse")
    kwargs.setdefault("task_id", "load_activities")
    return ClarkyToSqlOperator(resource="contact_activities", **kwargs).execute({})


@pytest.mark.parametrize("resumable", [False, True], ids=["streamed", "resumable"])
def test_daily_run_costs_close_to_the_minimum_and_weekly_restores_deletes(warehouse, monkeypatch, resumable):
    """The same through a streamed read and a resumable one (read first, kept per contact: the
    watermark is read before the load's transaction)."""
    size = DatasetSize(contacts=2000, activities_per_contact=1.5)
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        if resumable:
            monkeypatch.setattr(ClarkyToSqlOperator, "resume_key", "daily", raising=False)
        first = load()  # an empty table: the full history
        assert first["rows_fetched"] == len(emu.dataset["contact_activities"])

        touched = emu.log_activities(20)  # a day in which 1% of contacts get a new activity
        before = emu.stats.requests
        daily = load()
        spent = emu.stats.requests - before
        minimum = math.ceil(2000 / 100) + len(touched)  # the contacts list + one page per touched contact
        assert spent <= 1.5 * minimum, (spent, minimum)
        assert daily["filters"].get("changed_since") and daily["rows_inserted"] >= len(touched)
        assert_table_matches(
            warehouse, "contact_activities", "contact_activities", emu.dataset["contact_activities"]
        )

        emu.mutate(deletes=5)  # deleted contacts take their activities with them
        load()  # a daily run cannot see deletes ...
        assert len(warehouse.rows("contact_activities")) > len(emu.dataset["contact_activities"])
        weekly = load(incremental="full", delete_mode="remove")  # ... the weekly full refresh does
        assert weekly["rows_deleted"] > 0
        assert_table_matches(
            warehouse, "contact_activities", "contact_activities", emu.dataset["contact_activities"]
        )


def test_a_long_newest_first_list_is_read_only_down_to_the_mark(monkeypatch):
    with ClarkyEmulator(size=DatasetSize(contacts=3, activities_per_contact=250), rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        hook = ClarkyHook()
        everything = list(hook.paginate("contact_activities"))
        newest = max(parse_timestamp(a["created_at"]) for a in everything)
        (contact_id,) = emu.log_activities(1)
        hook = ClarkyHook()
        since = newest + timedelta(milliseconds=1)  # the bound is inclusive, like the API's
        changed = list(hook.paginate("contact_activities", changed_since=since))
    # the contacts list (1 request) and page 1 of the one contact contacted since: not its 3 pages
    assert hook.stats.requests == 2
    assert {a["contact_id"] for a in changed} == {contact_id} and len(changed) == 100
    assert parse_timestamp(changed[0]["created_at"]) > newest


def test_changed_since_needs_a_resource_with_a_change_signal(monkeypatch):
    with ClarkyEmulator(10, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        with pytest.raises(
            ClarkyConfigError,
            match=r"'companies' has none \(resources that do: contact_activities, conversation_messages\)",
        ):
            list(ClarkyHook().paginate("companies", changed_since="2026-01-01T00:00:00Z"))
        assert emu.stats.requests == 0
