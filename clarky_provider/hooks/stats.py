"""Counters of one hook's traffic, read by progress lines, the XCom summary and ``hook.stats``.

They never hold records or keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class RequestStats:
    """Thread-safe counters; ``budget_wait_seconds`` is wall time during which at least one
    request waited for the key's budget (not the sum over threads, which outgrows the run)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    pages: int = 0
    records: int = 0
    duplicates_dropped: int = 0
    lists_read: int = 0
    total_reported: int = 0
    lists_unverified: int = 0
    lists_recovered: int = 0
    recovery_requests: int = 0
    #: Parents' lists the rotation (``recheck_fraction``) re-read whole, and their requests.
    parents_rechecked: int = 0
    recheck_requests: int = 0
    budget_wait_seconds: float = 0.0
    budget_remaining: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _waiting: int = field(default=0, repr=False, compare=False)
    _waiting_since: float = field(default=0.0, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        """Add to counters."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    @contextmanager
    def waiting_for_budget(self) -> Iterator[None]:
        """Count the wall time spent inside, once however many threads wait together."""
        with self._lock:
            if self._waiting == 0:
                self._waiting_since = time.monotonic()
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1
                if self._waiting == 0:
                    self.budget_wait_seconds += time.monotonic() - self._waiting_since

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        data["budget_wait_seconds"] = round(self.budget_wait_seconds, 3)
        return data

    def load_summary(self, rows: int, earlier_records: int = 0) -> dict[str, Any]:
        """What a load's XCom summary says of the read: the API's totals, coverage and traffic.
        ``earlier_records`` came from earlier tries of a resumed load, whose lists were checked
        against their totals then: they count as reported, and are listed apart."""
        with self._lock:
            reported = self.total_reported + earlier_records
            return {
                "total_reported": reported,
                "records_from_earlier_tries": earlier_records,
                "coverage": round(min(1.0, rows / reported), 4) if reported else None,
                "lists_recovered": self.lists_recovered,
                "parents_rechecked": self.parents_rechecked,
                "recheck_requests": self.recheck_requests,
                "pages": self.pages,
                "requests": self.requests,
                "retries": self.retries,
                "rate_limited": self.rate_limited,
            }
