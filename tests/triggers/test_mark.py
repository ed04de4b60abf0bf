"""The change mark on its own: the server's clock, the overlap, and a change reported once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from clarky_provider.hooks.probe import ListCount
from clarky_provider.triggers.mark import ChangeMark

T0 = datetime(2026, 12, 5, 8, 0, 0, tzinfo=timezone.utc)
OVERLAP = timedelta(seconds=5)


def mark(start: datetime = T0 - OVERLAP) -> ChangeMark:
    return ChangeMark(start, OVERLAP, ("id",), "updated_at")


def seen(total: int, at: datetime | None, record: tuple[str, datetime] | None = None) -> ListCount:
    sample = None if record is None else {"id": record[0], "updated_at": record[1].isoformat()}
    return ListCount(total=total, sample=sample, server_time=at)


def test_quiet_polls_follow_the_servers_clock_not_ours():
    m = mark()
    local = T0 + timedelta(minutes=10)  # this machine's clock, ten minutes ahead of Clarky's
    assert m.after(seen(0, T0 + timedelta(seconds=60)), local) is None
    assert m.bound == T0 + timedelta(seconds=55)


def test_a_change_is_reported_with_where_the_count_started_and_where_the_next_starts():
    m = mark()
    change = m.after(seen(2, T0 + timedelta(seconds=60), ("c1", T0 + timedelta(seconds=30))), T0)
    assert change is not None
    assert (change.changed, change.since, change.mark) == (2, T0 - OVERLAP, T0 + timedelta(seconds=55))


def test_a_reported_change_still_inside_the_overlap_is_not_reported_again():
    m = mark()
    edit = ("c1", T0 + timedelta(seconds=58))  # two seconds before the poll: inside the overlap
    assert m.after(seen(1, T0 + timedelta(seconds=60), edit), T0) is not None
    assert m.after(seen(1, T0 + timedelta(seconds=61), edit), T0) is None  # the same edit, counted again
    # the same contact edited again: a new updated_at, so news
    again = ("c1", T0 + timedelta(seconds=61))
    assert m.after(seen(1, T0 + timedelta(seconds=62), again), T0) is not None


def test_another_record_counted_alone_is_news():
    m = mark()
    assert m.after(seen(1, T0 + timedelta(seconds=60), ("c1", T0 + timedelta(seconds=58))), T0)
    assert m.after(seen(1, T0 + timedelta(seconds=61), ("c2", T0 + timedelta(seconds=60))), T0)


def test_without_a_date_header_the_local_clock_is_used():
    m = mark()
    assert m.after(seen(0, None), T0 + timedelta(seconds=30)) is None
    assert m.bound == T0 + timedelta(seconds=25)


def test_a_first_bound_from_a_clock_ahead_of_the_servers_is_corrected_by_the_first_answer():
    """Started with this machine's clock 30 s ahead: the next poll counts from the server's time,
    so a change made right after the start (server time) is counted, not skipped."""
    m = mark(start=T0 + timedelta(seconds=30) - OVERLAP)
    assert m.after(seen(0, T0 + timedelta(seconds=1)), T0 + timedelta(seconds=31)) is None
    assert m.bound == T0 + timedelta(seconds=1) - OVERLAP
