"""One compact progress line at a steady cadence while a long load pages through Clarky."""

from __future__ import annotations

import logging
import time

from clarky_provider.hooks.bill import duration, plural
from clarky_provider.hooks.pages import Page
from clarky_provider.hooks.stats import RequestStats

log = logging.getLogger(__name__)


class ProgressLog:
    """Feed it every page; it logs at most once per ``interval`` seconds, and once at the end.

    A line: ``contacts: page 12/30, 1200 of 3000 records (40%), 410 records/s, 35 requests,
    37 left in the key's rate window, 3 retries, 41s waiting for the key's budget, ETA 3m12s``. Child resources report parents done instead of
    pages; a list re-read because a sweep came up short says so.
    """

    def __init__(self, resource: str, stats: RequestStats, interval: float = 30.0) -> None:
        self.resource = resource
        self.stats = stats
        self.interval = interval
        self.started = time.monotonic()
        self._last = self.started
        self._pages = 0
        self._parents: set[str] = set()
        self._last_page: Page | None = None
        self._total: int | None = None
        self._recovering = False

    def page(self, page: Page) -> None:
        self._pages += 1
        if page.parent_id is not None:
            self._parents.add(page.parent_id)
        elif page.window or (self._last_page is not None and page.number <= self._last_page.number):
            self._recovering = True  # windows, or page numbers starting over: a second read
        if not page.window:
            self._last_page = page
            self._total = page.total if page.parent_id is None else None
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info(self.line(now))

    def finish(self) -> None:
        log.info(self.line(time.monotonic()) + " - done")

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        stats = self.stats
        page = self._last_page
        if self._parents:
            clauses = [f"{len(self._parents)} parents done", f"{stats.records} records"]
        else:
            clauses = [
                f"page {page.number}/{page.total_pages}"
                if page and page.total_pages
                else f"{self._pages} pages"
            ]
            if self._total:
                share = min(100, 100 * stats.records // self._total)
                clauses.append(f"{stats.records} of {self._total} records ({share}%)")
            else:
                clauses.append(f"{stats.records} records")
        if self._recovering:
            clauses.append("re-reading what a sweep missed")
        clauses.append(f"{stats.records / elapsed:.0f} records/s")
        clauses.append(plural(stats.requests, "request"))
        if stats.budget_remaining is not None:
            clauses.append(f"{stats.budget_remaining} left in the key's rate window")
        clauses.append(plural(stats.retries, "retry", "retries"))
        if stats.rate_limited:
            clauses.append(plural(stats.rate_limited, "429 answer"))
        if stats.budget_wait_seconds >= 1:
            clauses.append(f"{duration(stats.budget_wait_seconds)} waiting for the key's budget")
        if self._total and 0 < stats.records < self._total:
            clauses.append(f"ETA {duration((self._total - stats.records) * elapsed / stats.records)}")
        return f"{self.resource}: " + ", ".join(clauses)
