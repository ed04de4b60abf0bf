"""One compact progress line at a steady cadence while a long load pages through Clarky."""

from __future__ import annotations

import logging
import time

from clarky_provider.hooks.clarky import Page, RequestStats

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressLog:
    """Feed it every page; it logs at most once per ``interval`` seconds, and once at the end.

    A line: ``contacts: page 120/200 (60%), 12000 records, 410 rec/s, 37 requests left in the
    rate window, 3 retries, ETA 3m12s``. Child resources report parents done instead of pages.
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

    def page(self, page: Page) -> None:
        self._pages += 1
        self._last_page = page
        if page.parent_id is not None:
            self._parents.add(page.parent_id)
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
        if page is not None and page.parent_id is not None:
            clauses = [f"{len(self._parents)} parents done"]
        elif page is not None and page.total_pages:
            share = min(100, 100 * page.number // page.total_pages)
            clauses = [f"page {page.number}/{page.total_pages} ({share}%)"]
        else:
            clauses = [f"{self._pages} pages"]
        clauses += [f"{stats.records} records", f"{stats.records / elapsed:.0f} rec/s"]
        if stats.budget_remaining is not None:
            clauses.append(f"{stats.budget_remaining} requests left in the rate window")
        retries = f"{stats.retries} retries"
        if stats.rate_limit_wait_seconds >= 1:
            retries += f" ({stats.rate_limit_wait_seconds:.0f}s paced or waiting on 429s)"
        clauses.append(retries)
        if (
            page is not None
            and page.parent_id is None
            and page.total_pages
            and page.number < page.total_pages
        ):
            rate = self._pages / elapsed
            clauses.append(f"ETA {_duration((page.total_pages - page.number) / rate)}")
        return f"{self.resource}: " + ", ".join(clauses)
