"""The daily sync reads conversation messages incrementally, at the minimum the API allows.

The daily sync is ``clarky_full_sync``'s: every parent table a full snapshot, then each child
resource with ``parent_table`` (its changed parents, from the parents' fresh table). "The
minimum the API allows" for one daily sync that leaves every table equal to the source:

* ``contacts``: every page. No filter finds a contact whose ``last_contacted_at`` moved: the
  docs do not say that an activity moves ``updated_at`` (``updated_after`` does not see it).
* ``contact_activities``: one request per contact with a new activity (the contacts' pages are
  read once, by the contacts load).
* ``conversations``: every page (no time filter: a full snapshot).
* ``conversation_messages``: one request per conversation with a new message.
"""

from __future__ import annotations

import logging
import math
from datetime import date, datetime, time, timezone
from fractions import Fraction
from typing import Any

import pytest

from clarky_provider.hooks.changes import Rotation
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.resources import RESOURCES
from clarky_provider.testing import ClarkyEmulator, DatasetSize
from tests.warehouse import assert_table_matches, sqlite_warehouse

DAILY = ("contacts", "contact_activities", "conversations", "conversation_messages")
DAY = 739_590


def pages(records: int) -> int:
    return max(1, math.ceil(records / 100))


def daily_minimum(emu: ClarkyEmulator, contacted: int, messaged: int) -> dict[str, int]:
    """The minimum the API allows (module docstring), from the emulator's data after the day."""
    data = emu.dataset
    return {
        "contacts": pages(len(data["contacts"])),
        "contact_activities": contacted,
        "conversations": pages(len(data["conversations"])),
        "conversation_messages": messaged,
    }


def sync(emu: ClarkyEmulator) -> dict[str, int]:
    """The daily DAG's loads, as ``clarky_full_sync`` runs them: requests per load, as the API
    counted them."""
    spent = {}
    for resource in DAILY:
        parent = RESOURCES[resource].parent
        choice: dict[str, Any] = {"parent_table": parent} if parent else {"incremental": "full"}
        before = emu.stats.requests
        ClarkyToSqlOperator(
            task_id=f"load_{resource}", resource=resource, sql_conn_id="warehouse", **choice
        ).execute({})  # type: ignore[arg-type]
        spent[resource] = emu.stats.requests - before
    return spent


def test_the_daily_sync_costs_at_most_1_3x_the_minimum_and_every_table_equals_the_source(
    tmp_path, monkeypatch
):
    warehouse = sqlite_warehouse(tmp_path, monkeypatch)
    size = DatasetSize(contacts=3000, conversations=600)
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        sync(emu)  # the first, full sync
        contacted = emu.log_activities(30)  # a day: 1% of contacts get an activity,
        messaged = set(emu.log_messages(6)) & {c["id"] for c in emu.dataset["conversations"]}  # 1% a message
        spent = sync(emu)
        minimum = daily_minimum(emu, len(contacted), len(messaged))
        assert sum(spent.values()) <= 1.3 * sum(minimum.values()), (spent, minimum)
        assert spent["conversation_messages"] <= 1.3 * minimum["conversation_messages"], (spent, minimum)
        truth = emu.dataset
    for resource in DAILY:
        assert_table_matches(warehouse, resource, resource, truth[resource])


def test_without_the_signal_the_daily_sync_reads_every_conversation_and_says_so_once(
    tmp_path, monkeypatch, caplog
):
    warehouse = sqlite_warehouse(tmp_path, monkeypatch)
    size = DatasetSize(contacts=300, conversations=250, message_signal=False)
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        load = ClarkyToSqlOperator(
            task_id="messages", resource="conversation_messages", sql_conn_id="warehouse"
        )
        load.execute({})
        emu.log_messages(3)
        before = emu.stats.requests
        with caplog.at_level(logging.WARNING, logger="clarky_provider"):
            daily = load.execute({})
        conversations = len(emu.dataset["conversations"])
        assert emu.stats.requests - before == pages(conversations) + conversations  # as before the signal
        assert daily["filters"].get("changed_since")
        assert_table_matches(
            warehouse, "conversation_messages", "conversation_messages", emu.dataset["conversation_messages"]
        )
    assert sum("carry no last_message_at" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("resumable", [False, True], ids=["streamed", "resumable"])
def test_the_rotation_costs_its_fraction_of_the_parents(tmp_path, monkeypatch, resumable):
    """``recheck_fraction`` through the operator, streamed and resumable (as in a task): two
    tables at the same watermark read the same day with and without the rotation; the
    difference is the day's slice of parents, the run's date choosing it."""
    sqlite_warehouse(tmp_path, monkeypatch)
    size = DatasetSize(contacts=2100, activities_per_contact=1.0)
    context = {"data_interval_start": datetime.combine(date.fromordinal(DAY), time(), timezone.utc)}
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())

        def load(table: str, **kwargs: Any) -> dict[str, Any]:
            operator = ClarkyToSqlOperator(
                task_id=table,
                resource="contact_activities",
                sql_conn_id="warehouse",
                table=table,
                resume_key=f"{table}-{emu.stats.requests}" if resumable else None,
                **kwargs,
            )
            return operator.execute(context)  # type: ignore[arg-type]

        tables = {0: "activities_plain", Fraction(1, 7): "activities_rotated"}
        for table in tables.values():
            load(table)  # the first load: every list
        contacted = set(emu.log_activities(21))
        spent, summaries = {}, {}
        for fraction, table in tables.items():
            before = emu.stats.requests
            summaries[fraction] = load(table, recheck_fraction=str(fraction))
            spent[fraction] = emu.stats.requests - before
        contacts = [c["id"] for c in emu.dataset["contacts"]]
    in_slice = {c for c in contacts if Rotation(Fraction(1, 7), DAY).holds(c)}
    assert spent[Fraction(1, 7)] - spent[0] == len(in_slice - contacted)  # one page each: short lists
    assert abs(len(in_slice) / len(contacts) - 1 / 7) < 0.02  # the configured fraction of the parents
    assert summaries[Fraction(1, 7)]["parents_rechecked"] == len(in_slice)
    assert summaries[0]["parents_rechecked"] == 0
    assert summaries[Fraction(1, 7)]["filters"]["recheck_fraction"] == "1/7"
