"""``parent_table``: a child load that asks the warehouse which parents changed.

A DAG that loads contacts (or conversations) in full just before their children names that
table as ``parent_table``: the child load then reads only the lists of the parents whose change
signal there is newer than their newest child in the child table, one request per list and no
page of the parents' list, and merges them as a snapshot of just those parents' rows. When the
tables cannot tell (no child table yet, no parent carrying the signal) or more than 1,000
parents changed, it reads through the parents' list as without ``parent_table``, and says why.
"""

from __future__ import annotations

import logging
import math
from datetime import date, datetime, time, timezone
from fractions import Fraction
from typing import Any

import pytest

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.hooks.changes import Rotation
from clarky_provider.normalize import parse_timestamp
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.testing import ClarkyEmulator, DatasetSize
from tests.warehouse import ENGINES, Warehouse, assert_table_matches, expected_row, open_warehouse

ACTIVITIES, MESSAGES = "contact_activities", "conversation_messages"
PARENT_LOG = "clarky_provider.operators.parent_table"
DAY = 739_590
CONTEXT = {"data_interval_start": datetime.combine(date.fromordinal(DAY), time(), timezone.utc)}


@pytest.fixture(params=ENGINES)
def warehouse(request, tmp_path, monkeypatch):
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


@pytest.fixture
def sqlite(tmp_path, monkeypatch):
    yield from open_warehouse("sqlite", tmp_path, monkeypatch)


def load(resource: str, context: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    operator = ClarkyToSqlOperator(
        task_id=f"load_{resource}", resource=resource, sql_conn_id="warehouse", **kwargs
    )
    return operator.execute(context or {})  # type: ignore[arg-type]


def load_parents(resource: str = "contacts", **kwargs: Any) -> dict[str, Any]:
    """The parents' table, loaded in full upstream of the child load (as ``clarky_full_sync``)."""
    return load(resource, incremental="full", **kwargs)


def load_children(
    resource: str = ACTIVITIES, parent_table: str = "contacts", **kwargs: Any
) -> dict[str, Any]:
    return load(resource, parent_table=parent_table, **kwargs)


def spent(emulator: ClarkyEmulator, action: Any, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Requests the API counted for ``action``, and what it returned."""
    before = emulator.stats.requests
    result = action(*args, **kwargs)
    return emulator.stats.requests - before, result


def pages(records: int) -> int:
    return max(1, math.ceil(records / 100))


def stored(warehouse: Warehouse, table: str) -> dict[str, dict[str, Any]]:
    """Every row as the driver returns it (nothing parsed), by id: what an untouched row must stay."""
    names, rows = warehouse.select(f"SELECT * FROM {warehouse.quote(table)}")
    names = [n.lower() for n in names]
    return {row[names.index("id")]: dict(zip(names, row, strict=True)) for row in rows}


def remove_upstream(emulator: ClarkyEmulator, resource: str, parent_id: str, child_id: str) -> None:
    """A child deleted in the CRM: gone from its parent's list; the parent's signal does not move."""
    store = emulator.store
    with store.lock:
        store.lists[resource][parent_id].remove(child_id)
        store.version += 1


def no_change(summary: dict[str, Any]) -> tuple[int, int, int]:
    return summary["rows_inserted"], summary["rows_updated"], summary["rows_deleted"]


# -- the daily sync, on every engine ----------------------------------------------------------


def test_a_day_reads_only_the_changed_contacts_lists_and_the_table_equals_the_source(
    emulator, warehouse, caplog
):
    contacts = len(emulator.dataset["contacts"])
    load_parents()
    with caplog.at_level(logging.INFO, logger=PARENT_LOG):
        cost, first = spent(emulator, load_children)
    # no activities table yet: it cannot tell, so it reads through the list of contacts
    assert cost == pages(contacts) + contacts
    assert "parent_table" not in (first["filters"] or {})
    assert any("cannot tell which contacts changed" in r.getMessage() for r in caplog.records)
    assert_table_matches(warehouse, ACTIVITIES, ACTIVITIES, emulator.dataset[ACTIVITIES])

    # a day: five contacts get an activity; one of them also loses its older activity upstream
    contacted = emulator.log_activities(5)
    store = emulator.store
    with store.lock:
        older = store.lists[ACTIVITIES][contacted[0]].order[-1]
    remove_upstream(emulator, ACTIVITIES, contacted[0], older)
    load_parents()
    before = stored(warehouse, ACTIVITIES)
    assert older in before

    cost, summary = spent(emulator, load_children)

    assert cost == 5  # each changed contact's list (two activities: one page), no page of contacts
    assert summary["filters"] == {"parent_table": "contacts", "parents": 5}
    assert summary["records_not_found"] == []
    assert no_change(summary) == (5, 0, 1)
    assert summary["rows_unchanged"] == 4  # the other four contacts' older activity
    truth = emulator.dataset[ACTIVITIES]
    assert_table_matches(warehouse, ACTIVITIES, ACTIVITIES, truth)
    after = stored(warehouse, ACTIVITIES)
    assert older not in after
    others = {i: row for i, row in before.items() if row["contact_id"] not in contacted}
    assert len(others) == len(truth) - 9  # all but the five new and the four old left under them
    assert {i: after[i] for i in others} == others  # byte for byte, even _loaded_at

    cost, again = spent(emulator, load_children)  # a rerun: nothing changed since
    assert cost == 0
    assert again["filters"] == {"parent_table": "contacts", "parents": 0}
    assert no_change(again) == (0, 0, 0)
    assert stored(warehouse, ACTIVITIES) == after


# -- SQLite: the rest of the behaviour ---------------------------------------------------------


def test_messages_read_only_the_conversations_with_a_new_message(emulator, sqlite):
    load_parents("conversations")
    conversations = len(emulator.dataset["conversations"])
    cost, _ = spent(emulator, load_children, MESSAGES, "conversations")
    assert cost == pages(conversations) + conversations  # the first load reads through the list

    messaged = emulator.log_messages(8)
    live = {c["id"] for c in emulator.dataset["conversations"]}
    changed = [c for c in messaged if c in live]  # a soft-deleted conversation is in no list
    assert 0 < len(changed) < conversations
    load_parents("conversations")
    before = stored(sqlite, MESSAGES)

    cost, summary = spent(emulator, load_children, MESSAGES, "conversations")

    assert cost == len(changed)
    assert summary["filters"] == {"parent_table": "conversations", "parents": len(changed)}
    assert no_change(summary) == (len(changed), 0, 0)
    assert_table_matches(sqlite, MESSAGES, MESSAGES, emulator.dataset[MESSAGES])
    after = stored(sqlite, MESSAGES)
    assert {i: after[i] for i in before if before[i]["conversation_id"] not in changed} == {
        i: row for i, row in before.items() if row["conversation_id"] not in changed
    }


def test_a_removed_message_under_a_changed_conversation_is_deleted(emulator, sqlite):
    load_parents("conversations")
    load_children(MESSAGES, "conversations")
    live = {c["id"] for c in emulator.dataset["conversations"]}
    changed = [c for c in emulator.log_messages(10) if c in live]
    store = emulator.store
    with store.lock:
        oldest = store.lists[MESSAGES][changed[0]].order[-1]
    remove_upstream(emulator, MESSAGES, changed[0], oldest)
    load_parents("conversations")

    cost, summary = spent(emulator, load_children, MESSAGES, "conversations")

    assert cost == len(changed)
    assert summary["rows_deleted"] == 1
    assert oldest not in stored(sqlite, MESSAGES)
    assert_table_matches(sqlite, MESSAGES, MESSAGES, emulator.dataset[MESSAGES])


def test_contacts_loaded_after_the_activities_are_caught_up_by_the_next_run(emulator, sqlite):
    """The comparison is per parent, not a watermark: a run that sees the contacts' old rows
    reads nothing, and the next one, after the contacts' load, reads exactly what changed."""
    load_parents()
    load_children()
    contacted = emulator.log_activities(4)

    cost, early = spent(emulator, load_children)  # the contacts' table does not know yet
    assert cost == 0
    assert early["filters"] == {"parent_table": "contacts", "parents": 0}
    assert no_change(early) == (0, 0, 0)

    load_parents()
    cost, late = spent(emulator, load_children)
    assert cost == len(contacted)
    assert late["filters"] == {"parent_table": "contacts", "parents": len(contacted)}
    assert late["rows_inserted"] == len(contacted)
    assert_table_matches(sqlite, ACTIVITIES, ACTIVITIES, emulator.dataset[ACTIVITIES])


def test_without_the_signal_it_reads_through_the_list_of_conversations_and_says_why(
    tmp_path, monkeypatch, caplog
):
    warehouse = next(open_warehouse("sqlite", tmp_path, monkeypatch))
    size = DatasetSize(contacts=100, conversations=40, message_signal=False)
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        load_parents("conversations")
        load_children(MESSAGES, "conversations")
        emu.log_messages(3)
        load_parents("conversations")
        # the column is there (the catalog's), but no conversation carries a value in it
        assert warehouse.query("SELECT COUNT(*) FROM conversations WHERE last_message_at IS NOT NULL") == [
            (0,)
        ]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=PARENT_LOG):
            cost, summary = spent(emu, load_children, MESSAGES, "conversations")
        conversations = len(emu.dataset["conversations"])
        assert cost == pages(conversations) + conversations  # every conversation's list
        assert "parent_table" not in (summary["filters"] or {})
        assert_table_matches(warehouse, MESSAGES, MESSAGES, emu.dataset[MESSAGES])
    said = [r for r in caplog.records if r.name == PARENT_LOG]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    message = said[0].getMessage()
    assert "cannot tell which conversations changed" in message
    assert "reading through the list of conversations" in message


def test_a_contact_flagged_deleted_in_the_parents_table_is_not_read(emulator, sqlite):
    load_parents(delete_mode="flag")
    load_children()
    gone, _kept = emulator.log_activities(2)
    load_parents(delete_mode="flag")  # both signals moved in the contacts' table...
    store = emulator.store
    with store.lock:  # ...then one contact is deleted upstream, with its activities
        store.lists["contacts"][None].remove(gone)
        store.lists[ACTIVITIES].pop(gone)
        store.version += 1
    load_parents(delete_mode="flag")
    (row,) = sqlite.query(f"SELECT _deleted_at, last_contacted_at FROM contacts WHERE id = '{gone}'")
    (newest,) = sqlite.query(f"SELECT MAX(created_at) FROM {ACTIVITIES} WHERE contact_id = '{gone}'")
    assert row[0] is not None and parse_timestamp(row[1]) > parse_timestamp(newest[0])  # flagged, moved
    before = stored(sqlite, ACTIVITIES)

    cost, summary = spent(emulator, load_children)

    assert cost == 1  # the live contact only: the flagged one would be a 404
    assert summary["filters"] == {"parent_table": "contacts", "parents": 1}
    assert summary["records_not_found"] == []
    assert no_change(summary) == (1, 0, 0)
    after = stored(sqlite, ACTIVITIES)
    left = {i: row for i, row in before.items() if row["contact_id"] == gone}
    assert left and {i: after[i] for i in left} == left  # the flagged contact's rows, untouched
    rows = sqlite.rows(ACTIVITIES)
    truth = emulator.dataset[ACTIVITIES]
    assert set(rows) - set(left) == {a["id"] for a in truth}
    for record in truth:
        expected = expected_row(ACTIVITIES, record)
        assert {k: rows[record["id"]][k] for k in expected} == expected, record["id"]


@pytest.mark.parametrize("fraction", ["1", "1/7"])
def test_the_rotation_adds_its_slice_of_the_unchanged_contacts(tmp_path, monkeypatch, fraction):
    warehouse = next(open_warehouse("sqlite", tmp_path, monkeypatch))
    size = DatasetSize(contacts=300, activities_per_contact=0.5)  # some contacts without a signal
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        load_parents()
        load_children()
        contacted = set(emu.log_activities(6))
        ids = [c["id"] for c in emu.dataset["contacts"]]
        rotation = Rotation(Fraction(fraction), DAY)
        in_slice = [c for c in ids if c not in contacted and rotation.holds(c)]
        unchanged = len(ids) - len(contacted)
        assert len(in_slice) == unchanged if fraction == "1" else 0 < len(in_slice) < unchanged
        # an activity edited upstream (its contact's signal does not move) that the slice heals
        store = emu.store
        with store.lock:
            edited_contact = next(c for c in in_slice if store.lists[ACTIVITIES][c].order)
            activities = store.lists[ACTIVITIES][edited_contact]
            edited = activities.order[0]
            activities.put({**activities.records[edited], "title": "Edited upstream"})
            store.version += 1
        load_parents()

        cost, summary = spent(emu, load_children, recheck_fraction=fraction, context=CONTEXT)

        assert cost == len(contacted) + len(in_slice)  # one page each: short lists
        assert summary["parents_rechecked"] == len(in_slice)
        assert summary["filters"] == {"parent_table": "contacts", "parents": len(contacted) + len(in_slice)}
        assert summary["rows_inserted"] == len(contacted)
        assert summary["rows_updated"] == 1
        assert warehouse.rows(ACTIVITIES)[edited]["title"] == "Edited upstream"
        assert_table_matches(warehouse, ACTIVITIES, ACTIVITIES, emu.dataset[ACTIVITIES])
    if fraction == "1":
        assert cost == len(ids)  # every live contact in the table


@pytest.mark.parametrize(("changed", "by_id"), [(1000, True), (1001, False)])
def test_more_than_1000_changed_contacts_read_through_the_list(tmp_path, monkeypatch, caplog, changed, by_id):
    warehouse = next(open_warehouse("sqlite", tmp_path, monkeypatch))
    with ClarkyEmulator(size=DatasetSize(contacts=1001), rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        load_parents()
        load_children()
        assert len(emu.log_activities(changed)) == changed
        load_parents()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=PARENT_LOG):
            cost, summary = spent(emu, load_children)
        assert_table_matches(warehouse, ACTIVITIES, ACTIVITIES, emu.dataset[ACTIVITIES])
    assert summary["rows_inserted"] == changed
    (said,) = [r.getMessage() for r in caplog.records if r.name == PARENT_LOG]
    if by_id:
        assert cost == changed
        assert summary["filters"] == {"parent_table": "contacts", "parents": changed}
    else:
        assert cost == pages(1001) + changed  # every page of contacts, and every list
        assert "parent_table" not in (summary["filters"] or {})
        assert "1001 contacts changed" in said and "more than the 1000" in said


@pytest.mark.parametrize("history", ["parents", "children"])
def test_history_tables_on_either_side(emulator, sqlite, history):
    """A parents' table kept as a history counts only current versions; a child history
    closes the version of a child removed upstream."""
    parents = {"write_mode": "history"} if history == "parents" else {}
    children = {"write_mode": "history"} if history == "children" else {}
    load_parents(**parents)
    load_children(**children)
    contacted = emulator.log_activities(3)
    store = emulator.store
    with store.lock:
        older = store.lists[ACTIVITIES][contacted[0]].order[-1]
    remove_upstream(emulator, ACTIVITIES, contacted[0], older)
    load_parents(**parents)

    cost, summary = spent(emulator, load_children, **children)

    assert cost == 3
    assert summary["filters"] == {"parent_table": "contacts", "parents": 3}
    assert (summary["rows_inserted"], summary["rows_deleted"]) == (3, 1)
    if history == "children":
        (current,) = sqlite.query(f"SELECT _is_current FROM {ACTIVITIES} WHERE id = '{older}'")
        assert not current[0]
        live = sqlite.query(f"SELECT id FROM {ACTIVITIES} WHERE _is_current")
        assert {i for (i,) in live} == {a["id"] for a in emulator.dataset[ACTIVITIES]}
    else:
        assert_table_matches(sqlite, ACTIVITIES, ACTIVITIES, emulator.dataset[ACTIVITIES])
    cost, again = spent(emulator, load_children, **children)
    assert cost == 0 and no_change(again) == (0, 0, 0)


def test_a_parents_history_counts_each_contact_once_in_the_rotation(emulator, sqlite):
    """The closed versions of a contact (its older signal) are not parents of their own: with
    every contact in the rotation, each is read once and counted once."""
    load_parents(write_mode="history")
    load_children()
    contacted = emulator.log_activities(3)
    load_parents(write_mode="history")
    contacts = len(emulator.dataset["contacts"])
    assert sqlite.query("SELECT COUNT(*) FROM contacts") == [(contacts + 3,)]  # three closed versions

    cost, summary = spent(emulator, load_children, recheck_fraction=1)

    assert cost == contacts
    assert summary["filters"] == {"parent_table": "contacts", "parents": contacts}
    assert summary["parents_rechecked"] == contacts - len(contacted)
    assert summary["rows_inserted"] == len(contacted)
    assert_table_matches(sqlite, ACTIVITIES, ACTIVITIES, emulator.dataset[ACTIVITIES])


# -- configuration errors: before any request ---------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "context", "message"),
    [
        ({"resource": "contacts"}, {}, "'contacts' has none"),
        ({"resource": "pipeline_stages", "parent_table": "pipelines"}, {}, "'pipeline_stages' has none"),
        ({"write_mode": "append"}, {}, "use write_mode='merge' or 'history', not 'append'"),
        ({"write_mode": "replace"}, {}, "use write_mode='merge' or 'history', not 'replace'"),
        ({"record_ids": ["c_1"]}, {}, "drop record_ids from this task"),
        ({"filters": {"created_after": "2026-01-01T00:00:00Z"}}, {}, "drop filters from this task"),
        (
            {"window_start": "2025-01-01", "window_end": "2026-01-01"},
            {},
            "'contact_activities' has none",  # no child resource has a window: that error comes first
        ),
        ({"updated_after": "2026-01-01T00:00:00Z"}, {}, "drop updated_after from this task"),
        ({"incremental": "full"}, {}, "drop incremental='full' from this task"),
        ({"incremental": "interval"}, CONTEXT, "drop incremental='interval' from this task"),
        ({"parent_table": "contacts; DROP TABLE contacts"}, {}, "parent_table .* is not a valid name"),
        ({"exclude_columns": ["contact_id"]}, {}, "on 'contact_id', which the column policy removes"),
    ],
)
def test_a_parent_table_that_cannot_work_fails_in_the_plan(kwargs, context, message):
    kwargs = {"resource": ACTIVITIES, "parent_table": "contacts", **kwargs}
    operator = ClarkyToSqlOperator(task_id="plan", sql_conn_id="warehouse", **kwargs)
    with pytest.raises(ClarkyConfigError, match=message):
        operator.plan(context)


def test_what_may_go_with_a_parent_table_plans(emulator):
    for kwargs in ({}, {"incremental": "watermark"}, {"write_mode": "history"}, {"delete_mode": "flag"}):
        plan = ClarkyToSqlOperator(
            task_id="plan", resource=ACTIVITIES, sql_conn_id="warehouse", parent_table="contacts", **kwargs
        ).plan({})
        assert plan.parent_table == "contacts", kwargs
    assert emulator.stats.requests == 0


@pytest.mark.parametrize(
    ("parents", "message"),
    [
        (None, r"parent_table 'contacts' does not exist; load contacts into it first"),
        ({"columns": ["first_name"]}, r"parent_table 'contacts' has no column 'last_contacted_at'"),
    ],
    ids=["missing", "without-the-signal-column"],
)
def test_a_parents_table_that_cannot_tell_fails_before_any_request(emulator, warehouse, parents, message):
    if parents is not None:
        load_parents(**parents)
        assert "last_contacted_at" not in stored(warehouse, "contacts")[emulator.dataset["contacts"][0]["id"]]
    before = emulator.stats.requests
    with pytest.raises(ClarkyConfigError, match=message):
        load_children()
    assert emulator.stats.requests == before
    assert not warehouse.exists(ACTIVITIES)
