"""Where a change probe counts from, and when what it counted is news.

A probe asks how many records have their change field (``updated_at``) at or after a bound, the
*mark*. The rules, and why:

* **The server's clock, not ours.** After every answered probe the mark becomes the answer's
  ``Date`` (the server's clock, rounded down to the second) minus ``overlap``. Our clock may be
  ahead of Clarky's; a mark taken from it could skip changes made right after a probe. Only the
  first probe, before any answer, counts from our clock (the trigger's start minus ``overlap``,
  or an explicit ``since``); the first answer corrects it.
* **The overlap** covers what the server's clock cannot: a change stamped just before a probe
  but visible only just after it (commit latency, or the machine that stamps ``updated_at``
  a little behind the one that sends ``Date``). Such a change is counted by the next probe
  as long as it shows up within ``overlap`` of its stamp.
* **The cost of the overlap** is a change counted twice: one made within ``overlap`` before a
  probe is in that probe's count and in the next. The probe returns one record (of any it
  counts), so a count of exactly one whose record (id and change time) was already reported is
  recognised and stays quiet; two or more such changes in the overlap can be reported once more
  (one more sync, never a missed change).
* The mark moves on every answered probe, quiet or not, so every poll counts only about one
  poll interval (plus the overlap) of changes; a failed probe leaves it where it was, so
  nothing is missed while the API is away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from clarky_provider.hooks.probe import ListCount
from clarky_provider.normalize import parse_timestamp

#: Reported records remembered for the overlap check, at most (they age out with the mark).
MAX_REMEMBERED = 100


@dataclass(frozen=True)
class Change:
    """Records changed at or after ``since``; the next probe counts from ``mark``."""

    changed: int
    since: datetime
    mark: datetime
    server_time: datetime


class ChangeMark:
    """The bound of the next probe and the records already reported inside the overlap.

    :param start: the first probe's bound (the trigger's start minus the overlap, or ``since``).
    :param key_fields: the fields that identify a record (the catalog's primary key).
    :param change_field: the field the probe's filter bounds (the catalog's cursor field).
    """

    def __init__(
        self, start: datetime, overlap: timedelta, key_fields: tuple[str, ...], change_field: str
    ) -> None:
        self.bound = start
        self.overlap = overlap
        self._key_fields = key_fields
        self._change_field = change_field
        #: (identity, change time) of records reported whose change time may still be counted
        self._reported: dict[tuple[Any, ...], datetime | None] = {}

    def after(self, seen: ListCount, local_now: datetime) -> Change | None:
        """Move the mark past an answered probe; the change to report, or ``None`` when quiet."""
        clock = seen.server_time or local_now
        since = self.bound
        identity = self._identity(seen.sample)
        already_reported = seen.total == 1 and identity is not None and identity in self._reported
        self.bound = clock - self.overlap
        if identity is not None and seen.total > 0:
            self._remember(identity)
        self._forget_older_than(self.bound)
        if seen.total == 0 or already_reported:
            return None
        return Change(changed=seen.total, since=since, mark=self.bound, server_time=clock)

    def _identity(self, record: dict[str, Any] | None) -> tuple[Any, ...] | None:
        if record is None:
            return None
        return (*(str(record.get(name)) for name in self._key_fields), str(record.get(self._change_field)))

    def _remember(self, identity: tuple[Any, ...]) -> None:
        try:
            self._reported[identity] = parse_timestamp(identity[-1])
        except (TypeError, ValueError):
            self._reported[identity] = None
        while len(self._reported) > MAX_REMEMBERED:
            del self._reported[next(iter(self._reported))]

    def _forget_older_than(self, bound: datetime) -> None:
        """Records changed before the mark are not counted again: no need to recognise them."""
        for identity, changed in list(self._reported.items()):
            if changed is not None and changed < bound:
                del self._reported[identity]
