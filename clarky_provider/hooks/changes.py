"""Which parents' lists an incremental read of a child resource fetches, and how far.

The catalog's change signal (``Resource.change_signal``) names the parent fields a new child
moves (a contact's ``last_contacted_at``, a conversation's ``last_message_at``): a parent whose
signal is at or after the read's mark is read, newest first, down to the mark. Signals miss
what does not move them (a child edited or deleted, a backdated one), so a rotation re-reads a
slice of the parents whole on every run: with ``recheck_fraction`` 1/7, every parent once a
week, spread evenly over the days. Its cost is that fraction of the parents' lists, on top.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from fractions import Fraction
from typing import Any

from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.normalize import parse_timestamp
from clarky_provider.resources import RESOURCES, Resource

log = logging.getLogger(__name__)

#: Positions on the rotation's circle: a parent id's stable hash, as a fraction of this.
_CIRCLE = 2**64


def day_number(day: date | datetime | int | str | None) -> int:
    """The run's day as a number (``date.toordinal``), from a date, a datetime, an ISO string
    (a rendered template) or the number itself; today (UTC) when not given."""
    if day is None:
        return datetime.now(timezone.utc).date().toordinal()
    if isinstance(day, str):
        try:
            return date.fromisoformat(day.strip()[:10]).toordinal()
        except ValueError:
            raise ClarkyConfigError(f"recheck_day must be a date (YYYY-MM-DD), got {day!r}.") from None
    if isinstance(day, datetime):
        day = (day.astimezone(timezone.utc) if day.tzinfo else day).date()
    return day if isinstance(day, int) else day.toordinal()


def check_fraction(fraction: float | str) -> Fraction:
    """``recheck_fraction`` as an exact fraction (1/7 stays 1/7), from a number or a string such
    as ``"1/7"`` (a rendered template); between 0 and 1."""
    try:
        exact = Fraction(fraction.strip() if isinstance(fraction, str) else fraction).limit_denominator(
            1_000_000
        )
    except (TypeError, ValueError, ZeroDivisionError):
        raise ClarkyConfigError(
            f"recheck_fraction must be a number between 0 and 1, got {fraction!r}."
        ) from None
    if not 0 <= exact <= 1:
        raise ClarkyConfigError(
            f"recheck_fraction must be between 0 (off) and 1 (every parent every run), got {fraction!r}; "
            "1/7 re-reads every parent once a week."
        )
    return exact


@dataclass(frozen=True)
class Rotation:
    """The slice of parents re-read whole on day ``day``.

    Each parent id has a fixed position on a circle (a stable hash, the same on every host and
    run); day ``d`` takes the arc ``[d * fraction, (d + 1) * fraction)`` around it. Consecutive
    days take consecutive arcs, so over ``1 / fraction`` days (7 for 1/7) the arcs cover the
    circle exactly once: every parent is re-read once, and each day about ``fraction`` of them.
    """

    fraction: Fraction = Fraction(0)
    day: int = 0

    def holds(self, parent_id: str) -> bool:
        if self.fraction <= 0:
            return False
        if self.fraction >= 1:
            return True
        digest = hashlib.blake2b(str(parent_id).encode(), digest_size=8).digest()
        position = Fraction(int.from_bytes(digest, "big"), _CIRCLE)
        start = (self.day * self.fraction) % 1
        return (position - start) % 1 < self.fraction


@dataclass
class ChangedParents:
    """One read's choice of parents: those whose change signal is at or after ``since``, those
    that carry no signal at all, and the rotation's slice (read whole). Thread-safe."""

    resource: Resource
    since: datetime | None
    rotation: Rotation = field(default_factory=Rotation)
    #: Parents of the rotation's slice met so far, and how many of them the signal alone would
    #: not have read (the rotation's extra lists).
    rechecked: set[str] = field(default_factory=set)
    rechecked_only: int = 0
    unsignalled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def select(self, parents: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The parents to read, in their order (all of them for a full read)."""
        for parent in parents:
            if self.since is None or self.wanted(parent):
                yield parent

    def wanted(self, parent: dict[str, Any]) -> bool:
        parent_id = str(parent.get("id"))
        changed = self._changed(parent)
        if self.rotation.holds(parent_id):
            with self._lock:
                self.rechecked.add(parent_id)
                self.rechecked_only += not changed
            return True
        return changed

    def whole(self, parent_id: str) -> bool:
        """Whether this parent's list is read whole (the rotation's slice), not down to the mark."""
        return parent_id in self.rechecked

    def _changed(self, parent: dict[str, Any]) -> bool:
        """Whether a signal field is at or after ``since``; a parent with no signal field at all,
        or an unreadable one, counts as changed."""
        signal = self.resource.change_signal
        assert signal is not None and self.since is not None
        if not any(name in parent for name in signal.moved_by):
            self._note_unsignalled()
            return True
        for name in signal.fields:
            try:
                moment = parse_timestamp(parent.get(name))
            except (TypeError, ValueError):
                return True
            if moment is not None and moment >= self.since:
                return True
        return False

    def _note_unsignalled(self) -> None:
        with self._lock:
            self.unsignalled += 1
            first = self.unsignalled == 1
        if first:
            signal = self.resource.change_signal
            assert signal is not None
            parent = RESOURCES[self.resource.parent or ""]
            assumed = [name for name in signal.moved_by if parent.assumed(name)]
            log.warning(
                "Clarky %s: %s carry no %s%s, so this read cannot tell which changed; every one "
                "without it is read, as a full load reads them (one request or more each)",
                self.resource.name,
                parent.name,
                " or ".join(signal.moved_by),
                " (a name the API docs do not show, assumed by the catalog)" if assumed else "",
            )
