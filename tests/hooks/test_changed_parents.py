"""Which parents an incremental fan-out reads (the catalog's change signal, the rotation), and
targeted reads by id (``ClarkyHook.get_records``), against the emulator; requests are counted."""

from __future__ import annotations

import logging
import math
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from fractions import Fraction

import pytest

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.hooks import listing
from clarky_provider.hooks.changes import Rotation, check_fraction, day_number
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.normalize import parse_timestamp
from clarky_provider.resources import RESOURCES
from clarky_provider.testing import ClarkyEmulator, DatasetSize

IDS = [f"conv-{i}" for i in range(3000)]
DAY = date(2026, 12, 5).toordinal()


def newest_message(emu: ClarkyEmulator) -> datetime:
    return max(parse_timestamp(m["created_at"]) for m in emu.dataset["conversation_messages"])


@pytest.mark.parametrize(("fraction", "days", "times"), [(Fraction(1, 7), 7, 1), (Fraction(3, 10), 10, 3)])
def test_the_rotation_rereads_every_parent_equally_often_over_its_cycle(fraction, days, times):
    held = Counter(i for day in range(DAY, DAY + days) for i in IDS if Rotation(fraction, day).holds(i))
    assert set(held.values()) == {times} and len(held) == len(IDS)
    for day in range(DAY, DAY + days):  # each day takes about its share, spread evenly
        share = sum(Rotation(fraction, day).holds(i) for i in IDS) / len(IDS)
        assert abs(share - fraction) < 0.25 * fraction, (day, share)
    assert [Rotation(fraction, DAY).holds(i) for i in IDS] == [Rotation(fraction, DAY).holds(i) for i in IDS]


def test_the_rotation_is_off_at_zero_and_everything_at_one():
    assert not any(Rotation(Fraction(0), DAY).holds(i) for i in IDS)
    assert all(Rotation(Fraction(1), DAY).holds(i) for i in IDS)


@pytest.mark.parametrize("value", [-0.1, 1.5, "often", "1/0", None])
def test_a_bad_recheck_fraction_is_refused(value):
    with pytest.raises(ClarkyConfigError, match="recheck_fraction"):
        check_fraction(value)


def test_fractions_and_days_from_templates():
    assert check_fraction("1/7") == check_fraction(1 / 7) == Fraction(1, 7)
    assert day_number("2026-12-05") == day_number(date(2026, 12, 5)) == DAY
    assert day_number(datetime(2026, 12, 5, 23, 0, tzinfo=timezone.utc)) == DAY
    assert day_number(DAY) == DAY and day_number(None) == datetime.now(timezone.utc).date().toordinal()
    with pytest.raises(ClarkyConfigError, match="recheck_day"):
        day_number("someday")


def test_the_catalog_declares_the_change_signals_and_marks_assumed_names():
    messages, conversations = RESOURCES["conversation_messages"], RESOURCES["conversations"]
    assert messages.change_signal is not None and messages.change_signal.moved_by == ("last_message_at",)
    assert messages.incremental and messages.cursor_field == "created_at"
    assert all(name in conversations.field_index for name in messages.change_signal.fields)
    assert conversations.assumed("last_message_at") and not conversations.assumed("bot_id")
    activities = RESOURCES["contact_activities"]
    assert activities.change_signal is not None
    assert activities.change_signal.fields == ("last_contacted_at", "created_at")


def test_a_message_moves_its_conversation_and_the_daily_read_fetches_only_those(monkeypatch):
    size = DatasetSize(contacts=100, conversations=400, messages_per_conversation=3)
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        mark = newest_message(emu) + timedelta(milliseconds=1)
        touched = set(emu.log_messages(5))
        conversations = {c["id"]: c for c in emu.dataset["conversations"]}
        visible = touched & set(conversations)
        for conversation_id in visible:  # the emulator moves the fields the docs describe
            conversation = conversations[conversation_id]
            assert parse_timestamp(conversation["last_message_at"]) > mark
            assert conversation["updated_at"] == conversation["last_message_at"]
        hook = ClarkyHook()
        read = list(hook.paginate("conversation_messages", changed_since=mark))
    assert hook.stats.requests == math.ceil(len(conversations) / 100) + len(visible)
    assert {m["conversation_id"] for m in read} == visible
    assert sum(parse_timestamp(m["created_at"]) >= mark for m in read) == len(visible)


def test_conversations_without_the_signal_are_all_read_and_the_load_says_so_once(monkeypatch, caplog):
    size = DatasetSize(contacts=100, conversations=150, message_signal=False)
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        conversations = emu.dataset["conversations"]
        assert not any("last_message_at" in c or "created_at" in c for c in conversations)
        mark = newest_message(emu) + timedelta(milliseconds=1)
        emu.log_messages(3)
        hook = ClarkyHook()
        with caplog.at_level(logging.WARNING, logger="clarky_provider"):
            read = list(hook.paginate("conversation_messages", changed_since=mark))
        truth = emu.dataset["conversation_messages"]
    assert hook.stats.requests == math.ceil(len(conversations) / 100) + len(conversations)  # as a full read
    assert {m["id"] for m in read} == {m["id"] for m in truth}
    said = [r.getMessage() for r in caplog.records if "carry no last_message_at" in r.getMessage()]
    assert len(said) == 1 and "assumed" in said[0]


def test_the_rotation_reads_its_slice_whole_on_top_of_the_changed_parents(monkeypatch, caplog):
    size = DatasetSize(contacts=100, conversations=700, messages_per_conversation=150)
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        mark = newest_message(emu) + timedelta(milliseconds=1)
        touched = set(emu.log_messages(6))
        ids = [c["id"] for c in emu.dataset["conversations"]]
        plain = ClarkyHook()
        list(plain.paginate("conversation_messages", changed_since=mark))
        rotating = ClarkyHook()
        with caplog.at_level(logging.INFO, logger="clarky_provider"):
            read = list(
                rotating.paginate(
                    "conversation_messages", changed_since=mark, recheck_fraction="1/7", recheck_day=DAY
                )
            )
    in_slice = {i for i in ids if Rotation(Fraction(1, 7), DAY).holds(i)}
    assert abs(len(in_slice) - len(ids) / 7) < 0.25 * len(ids) / 7
    # each list of the slice is read whole: 150 messages, two pages; the rest only to the mark
    extra = 2 * len(in_slice) - len(in_slice & touched)
    assert rotating.stats.requests - plain.stats.requests == extra
    assert rotating.stats.parents_rechecked == len(in_slice) and rotating.stats.recheck_requests == 2 * len(
        in_slice
    )
    per_conversation = Counter(m["conversation_id"] for m in read)
    assert all(per_conversation[i] == 150 + (i in touched) for i in in_slice)
    assert any(
        "re-read whole by the rotation (recheck_fraction 0.1429" in r.getMessage() for r in caplog.records
    )


def test_get_records_reads_each_named_record_once_and_reports_what_is_gone(monkeypatch):
    with ClarkyEmulator(size=DatasetSize(contacts=300, conversations=30), rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        contacts = emu.dataset["contacts"]
        named = [c["id"] for c in contacts[:7]]
        gone = emu.mutate(deletes=1)["deleted"][0]
        hook = ClarkyHook()
        asked = [*named, gone, "c_missing", named[0]]
        found = hook.get_records("contacts", asked)
        assert hook.stats.requests == len(set(asked))  # one per distinct id, 404s included
        truth = {c["id"]: c for c in emu.dataset["contacts"]}
        assert found.key == "id" and sorted(found.missing) == sorted({gone, "c_missing"})
        assert {r["id"]: r for r in found.records} == {i: truth[i] for i in named if i in truth}
        assert hook.stats.records == len(found.records)

        conversation = emu.dataset["conversations"][0]["id"]
        hook = ClarkyHook()
        messages = hook.get_records("conversation_messages", [conversation, "nope"])
        assert messages.key == "conversation_id" and messages.missing == ["nope"]
        assert {m["id"] for m in messages.records} == {
            m["id"] for m in emu.dataset["conversation_messages"] if m["conversation_id"] == conversation
        }
        assert hook.stats.requests == 2  # the conversation's one page, and the 404
        with pytest.raises(ClarkyConfigError, match="cannot be read by id"):
            ClarkyHook().get_records("agents", ["b_1"])


def test_a_list_that_comes_oldest_first_is_read_whole_not_stopped_at_the_mark(monkeypatch, caplog):
    """Stopping at the first older record is right only for a newest-first list: a page that
    comes oldest first (here asked for with ``order=asc``) turns the stop off, with one warning."""
    size = DatasetSize(contacts=50, conversations=8, messages_per_conversation=150)  # two pages each
    monkeypatch.setattr(listing, "_warned", set())  # the warning is once per process
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        mark = newest_message(emu) + timedelta(milliseconds=1)
        touched = set(emu.log_messages(2)) & {c["id"] for c in emu.dataset["conversations"]}
        with caplog.at_level(logging.WARNING, logger="clarky_provider"):
            read = list(ClarkyHook().paginate("conversation_messages", changed_since=mark, order="asc"))
    assert Counter(m["conversation_id"] for m in read) == dict.fromkeys(touched, 151)
    assert sum("came oldest first" in r.getMessage() for r in caplog.records) == 1
