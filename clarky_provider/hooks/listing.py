"""Complete reads of Clarky lists: every record the API's ``total`` promises, or a loud failure.

Clarky lists are page-numbered and promise no order. A sweep of pages 1..N is complete only
while the server keeps one order for every page request; when it does not, a sweep skips some
records and repeats others, and nothing in the pages says so except the count. So every list
read is checked against the ``total`` the API reported, and a shortfall is recovered at the
least cost the API allows:

* A resource with partition filters (``created_after``/``created_before`` on contacts) is re-read
  in time windows that each fit in one page: a single-page read cannot skip or repeat records,
  whatever the order. Windows are cut at quantiles of the partition values seen so far; a window
  whose ``total`` exceeds a page is cut again from the records it returned. A first sweep that
  meets ids it already served (the symptom of a changing order) stops at once and switches to
  windows, so an unstable list costs about as many requests as it has pages, not twice that.
* Any other list is swept again, keeping only ids not yet seen, until the count reaches ``total``
  (or a sweep finds nothing new).

Recovery may spend at most ``RECOVERY_REQUESTS_PER_PAGE`` requests per page of the list; the
bound is logged before recovery starts. Records still missing then raise
:class:`~clarky_provider.exceptions.ClarkyIncompleteReadError`, so a partial read never passes
for a complete one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from clarky_provider.exceptions import ClarkyIncompleteReadError
from clarky_provider.hooks.list_client import ListClient
from clarky_provider.hooks.pages import Page, fetch_page, resource_pages
from clarky_provider.hooks.stats import RequestStats
from clarky_provider.normalize import format_timestamp, parse_timestamp
from clarky_provider.resources import Resource

log = logging.getLogger(__name__)

#: Recovery of one list may spend this many requests per page the list has (plus a few).
RECOVERY_REQUESTS_PER_PAGE = 20
#: Windows are cut to hold this share of a page on average, so few of them overflow.
WINDOW_FILL = 0.8
#: Partition values sampled per planned window before cutting (fewer: more windows overflow).
SAMPLES_PER_WINDOW = 20
#: Partition values kept (a uniform sample) to cut the first windows from.
SAMPLE_SIZE = 10_000
#: A resumable read of a windowed list longer than this many pages is kept in windows.
UNIT_MIN_PAGES = 100
#: ... of about this many pages each,
UNIT_PAGES = 8
#: ... and at least this many of them.
UNIT_MIN_WINDOWS = 40
#: A window whose first page shows more than this many times its planned size is cut again.
UNIT_MAX_SHARE = 2

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Window:
    """Inclusive partition bounds in epoch milliseconds; ``None`` is open-ended."""

    low: int | None
    high: int | None

    def holds(self, value: int) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    @property
    def name(self) -> str:
        """``low..high`` in epoch milliseconds (empty for an open end): a unit's name."""
        return f"{'' if self.low is None else self.low}..{'' if self.high is None else self.high}"

    @classmethod
    def parse(cls, name: str) -> Window:
        low, high = name.split("..")
        return cls(int(low) if low else None, int(high) if high else None)

    def minus(self, others: Iterable[Window]) -> list[Window]:
        """What of this window none of ``others`` holds, as windows in time order."""
        pieces = [self]
        for other in others:
            rest = []
            for piece in pieces:
                if other.low is not None and (piece.low is None or piece.low < other.low):
                    high = other.low - 1 if piece.high is None else min(piece.high, other.low - 1)
                    if piece.low is None or piece.low <= high:
                        rest.append(Window(piece.low, high))
                if other.high is not None and (piece.high is None or piece.high > other.high):
                    low = other.high + 1 if piece.low is None else max(piece.low, other.high + 1)
                    if piece.high is None or low <= piece.high:
                        rest.append(Window(low, piece.high))
            pieces = rest
        return sorted(pieces, key=lambda w: -1 if w.low is None else w.low)

    def split(self, values: list[int], parts: int) -> list[Window]:
        """Cut at quantiles of ``values`` (sorted) into up to ``parts`` windows; [] if it cannot be cut."""
        inside = [v for v in values if self.holds(v)]
        if not inside:
            cuts = [] if self.low is None or self.high is None else [(self.low + self.high + 1) // 2]
        elif inside[0] == inside[-1]:
            cuts = [inside[0], inside[0] + 1]  # one instant holds them all: isolate it
        else:
            cuts = sorted({inside[len(inside) * i // parts] for i in range(1, parts)})
        cuts = [
            c for c in cuts if (self.low is None or c > self.low) and (self.high is None or c <= self.high)
        ]
        if not cuts:
            return []
        starts = [self.low, *cuts]
        ends = [c - 1 for c in cuts] + [self.high]
        return [Window(start, end) for start, end in zip(starts, ends, strict=True)]


class _Sample:
    """A uniform sample of the partition values of a list (reservoir sampling).

    Values are kept as the API sent them and parsed only if windows are cut: every record of
    every read passes through ``offer``, and most reads never need the sample.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[Any] = []
        self.offered = 0
        self._rng = random.Random(0)

    def millis(self) -> list[int]:
        """The sampled values in epoch milliseconds, sorted (unreadable ones left out)."""
        return sorted(v for v in map(_millis, self.values) if v is not None)

    def offer(self, value: Any) -> None:
        self.offered += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.offered)
        if slot < self.size:
            self.values[slot] = value


def _millis(value: Any) -> int | None:
    try:
        moment = parse_timestamp(value)
    except (TypeError, ValueError):
        return None
    return None if moment is None else (moment - _EPOCH) // _MILLISECOND


def _format_millis(value: int) -> str:
    return format_timestamp(_EPOCH + value * _MILLISECOND)


def window_params(res: Resource, params: dict[str, str], window: Window) -> dict[str, str]:
    """``params`` narrowed to ``window`` by the resource's partition filters."""
    assert res.partition_filters is not None
    after, before = res.partition_filters
    narrowed = dict(params)
    if window.low is not None:
        narrowed[after] = _format_millis(window.low)
    if window.high is not None:
        narrowed[before] = _format_millis(window.high)
    return narrowed


def root_window(res: Resource, params: dict[str, str]) -> Window:
    """The window ``params`` already ask for (a backfill window), or the open one."""
    assert res.partition_filters is not None
    after, before = res.partition_filters
    return Window(_millis(params.get(after)), _millis(params.get(before)))


class ListReader:
    """One complete read of one list (one parent's list, for child resources).

    ``counted`` says whether the read belongs to the resource being loaded (its totals go to
    the client's stats) or is a parent list read only to fan out; ``count_records`` whether the
    records it yields are counted here (a fan-out counts them itself, after dropping ids that
    several parents share). ``stop_before`` ends a newest-first list at its first older
    record; ``bill`` is called with the first page, which tells the read's size.
    """

    def __init__(
        self,
        client: ListClient,
        resource: Resource,
        parent_id: str | None,
        params: dict[str, str],
        *,
        on_page: Callable[[Page], None] | None = None,
        counted: bool = True,
        count_records: bool = True,
        stop_before: datetime | None = None,
        bill: Callable[[Page], None] | None = None,
    ) -> None:
        self.client, self.res, self.parent_id, self.params = client, resource, parent_id, params
        self.bill = bill
        self.listed: set[int] = set()
        self.anonymous = 0
        self.on_page = on_page
        self.counted = counted
        self.count_records = counted and count_records
        self.total: int | None = None
        self.pages_read = 0
        self.windowed = resource.partition_filters is not None and resource.partition_field is not None
        self.sample = _Sample(SAMPLE_SIZE) if self.windowed else None
        order_field = resource.newest_first_by
        self.stop_before = (
            _millis(stop_before) if stop_before is not None and order_field is not None else None
        )
        self.stopped_early = False

    # -- the read ---------------------------------------------------------------------------

    def __iter__(self) -> Generator[dict[str, Any], None, None]:
        unstable = yield from self._first_sweep()
        if self.stopped_early:
            self.total = self.seen  # the list is newest first: what is older was not wanted
        elif not self.res.paginated:
            self.total = self.seen  # a bounded collection comes whole in one response
        elif self.total is None:
            self._finish(verified=False)
            return
        if not self.complete:
            yield from self._recover(unstable)
        self._finish(verified=True)

    @property
    def seen(self) -> int:
        return len(self.listed) + self.anonymous

    @property
    def complete(self) -> bool:
        return self.total is not None and self.seen >= self.total

    def _first_sweep(self) -> Generator[dict[str, Any], None, bool]:
        """Pages 1..N; returns whether pages repeated ids (the symptom of a changing order).

        A windowed resource stops the sweep early once it repeats ids and has sampled enough
        partition values to cut windows that rarely overflow a page.
        """
        unstable = False
        pages = resource_pages(self.client, self.res, self.parent_id, self.params)
        try:
            for page in pages:
                self._note(page, full_list=True)
                before = self.seen
                yield from self._take(page.records)
                repeated = len(page.records) - (self.seen - before)
                if repeated and page.number > 1 and not unstable:
                    unstable = True
                    log.warning(
                        "Clarky %s: page %d repeated %d records already served by this sweep; the list's "
                        "order is changing between requests (or records are moving)%s",
                        self.res.name,
                        page.number,
                        repeated,
                        "; switching to created-time windows that each fit in one page"
                        if self.windowed
                        else "",
                    )
                if unstable and self.sample is not None and self.sample.offered >= self._sample_wanted():
                    return True
                if self._older_than_wanted(page):
                    self.stopped_early = True
                    return unstable
        finally:
            pages.close()
        return unstable

    def _older_than_wanted(self, page: Page) -> bool:
        """Whether a newest-first page reached records older than ``stop_before`` (read no further)."""
        if self.stop_before is None or not page.records:
            return False
        order_field = self.res.newest_first_by or ""
        first, oldest = (_millis(page.records[i].get(order_field)) for i in (0, -1))
        if first is not None and oldest is not None and first < oldest:
            self.stop_before = None  # oldest first after all: stopping would skip the newest records
            _warn_once(
                f"Clarky {self.res.name}: a list came oldest first, not newest first as the catalog "
                "expects; reading such lists whole"
            )
            return False
        return oldest is not None and oldest < self.stop_before

    def _sample_wanted(self) -> int:
        return SAMPLES_PER_WINDOW * self._window_count(self.total or 0)

    def _window_count(self, records: int) -> int:
        return max(1, math.ceil(records / (WINDOW_FILL * self.client.config.page_size)))

    def _recover(self, unstable: bool) -> Iterator[dict[str, Any]]:
        total = self.total or 0
        missing = total - self.seen
        page_size = self.client.config.page_size
        bound = RECOVERY_REQUESTS_PER_PAGE * max(1, math.ceil(total / page_size)) + 10
        strategy = "created-time windows that each fit in one page" if self.windowed else "further sweeps"
        log.warning(
            "Clarky %s%s: %d of %d records seen after one sweep (%d missing%s); re-reading with %s, "
            "at most %d more requests",
            self.res.name,
            f" of {self.parent_id}" if self.parent_id else "",
            self.seen,
            total,
            missing,
            ", pages repeated records" if unstable else "",
            strategy,
            bound,
        )
        self._stat(lists_recovered=1)
        start = self.pages_read
        sweeps = 0

        def within_bound() -> bool:
            return self.pages_read - start < bound

        if self.windowed:
            yield from self._windows(within_bound)
        while not self.complete and within_bound():
            before = self.seen
            served_once = yield from self._sweep(
                self.params, (), lambda: self.complete, within_bound, full_list=True
            )
            sweeps += 1
            if self.seen == before and served_once:
                break
        self._stat(recovery_requests=self.pages_read - start)
        if not self.complete:
            raise ClarkyIncompleteReadError(
                self.res.name,
                seen=self.seen,
                total=self.total or 0,
                parent_id=self.parent_id,
                effort=f"{sweeps + 1} sweeps{' and time windows' if self.windowed else ''}, "
                f"{self.pages_read - start} extra requests (bound {bound})",
            )
        log.info(
            "Clarky %s%s: all %d records read after %d extra requests",
            self.res.name,
            f" of {self.parent_id}" if self.parent_id else "",
            self.seen,
            self.pages_read - start,
        )

    def _sweep(
        self,
        params: dict[str, str],
        scopes: tuple[set[int], ...],
        done: Callable[[], bool],
        within_bound: Callable[[], bool],
        *,
        full_list: bool,
    ) -> Generator[dict[str, Any], None, bool]:
        """One more pass over every page, ending as soon as ``done()``.

        Returns whether the pass served every id once: a pass that did, yet found nothing new,
        shows a stable list that really is short of its ``total``, and more passes cannot help.
        """
        served: set[int] = set()
        offered = 0
        pages = resource_pages(self.client, self.res, self.parent_id, params)
        try:
            for page in pages:
                self._note(page, full_list=full_list)
                offered += len(page.records)
                yield from self._take(page.records, also=(served, *scopes))
                if done() or not within_bound():
                    break
        finally:
            pages.close()
        return len(served) == offered

    def _windows(self, within_bound: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """Read the list as windows that each fit in one page, cutting further where one overflows."""
        assert self.sample is not None and self.res.partition_filters is not None
        root = root_window(self.res, self.params)
        known = self.sample.millis()
        pending = deque(root.split(known, self._window_count(self.total or 0)) or [root])

        def next_window() -> Callable[[], tuple[Window, Page]] | None:
            return partial(self._window_page, pending.popleft()) if pending and within_bound() else None

        pages = self.client.workers.in_order(next_window, ahead=self.client.config.max_concurrency)
        try:
            for window, page in pages:
                self.pages_read += 1
                if self.on_page is not None:
                    self.on_page(page)
                held: set[int] = set()
                yield from self._take(page.records, also=(held,))
                if page.total is None or len(held) >= page.total:
                    continue
                values = [v for v in map(self._partition_value, page.records) if v is not None]
                values = sorted(values + [v for v in known if window.holds(v)])
                smaller = window.split(values, max(2, self._window_count(page.total)))
                if smaller:
                    pending.extend(smaller)
                else:
                    log.warning(
                        "Clarky %s: a window of %d records cannot be cut further by created time; sweeping it",
                        self.res.name,
                        page.total,
                    )
                    yield from self._window_sweeps(window, page.total, held, within_bound)
        finally:
            pages.close()

    def _window_params(self, window: Window) -> dict[str, str]:
        return window_params(self.res, self.params, window)

    def _window_page(self, window: Window) -> tuple[Window, Page]:
        path = self.res.list_path(self.parent_id)
        page = fetch_page(self.client, self.res, path, self._window_params(window), 1, self.parent_id)
        return window, dataclasses.replace(page, window=True)

    def _window_sweeps(
        self, window: Window, total: int, held: set[int], within_bound: Callable[[], bool]
    ) -> Iterator[dict[str, Any]]:
        """Sweep one window that cannot be cut until it yields its ``total`` (or stops growing)."""
        params = self._window_params(window)
        while len(held) < total and within_bound():
            before = len(held)
            served_once = yield from self._sweep(
                params, (held,), lambda: len(held) >= total, within_bound, full_list=False
            )
            if len(held) == before and served_once:
                return

    # -- bookkeeping ------------------------------------------------------------------------

    def _note(self, page: Page, *, full_list: bool) -> None:
        self.pages_read += 1
        if full_list and page.total is not None:
            self.total = page.total
            if self.bill is not None and self.pages_read == 1:
                self.bill(page)
        if self.on_page is not None:
            self.on_page(page)

    def _partition_value(self, record: dict[str, Any]) -> int | None:
        return _millis(record.get(self.res.partition_field or ""))

    def _take(
        self, records: list[dict[str, Any]], also: tuple[set[int], ...] = ()
    ) -> Iterator[dict[str, Any]]:
        """Yield the records not yet yielded; count every distinct id of this list (and in ``also``)."""
        listed, sample, partition_field = self.listed, self.sample, self.res.partition_field or ""
        fresh = duplicates = 0
        for record in records:
            record_id = record.get("id")
            if record_id is None:
                self.anonymous += 1
                fresh += 1
                yield record
                continue
            marker = hash(str(record_id))
            for scope in also:
                scope.add(marker)
            if marker in listed:
                duplicates += 1
                continue
            listed.add(marker)
            if sample is not None:
                sample.offer(record.get(partition_field))
            fresh += 1
            yield record
        if self.count_records:
            self.client.stats.add(records=fresh, duplicates_dropped=duplicates)

    def _stat(self, **counts: float) -> None:
        if self.counted:
            self.client.stats.add(**counts)

    def _finish(self, *, verified: bool) -> None:
        if verified:
            self._stat(lists_read=1, total_reported=self.total or 0)
        else:
            self._stat(lists_read=1, lists_unverified=1)
            log.warning(
                "Clarky %s%s: the API reported no total, so %d records could not be checked for completeness",
                self.res.name,
                f" of {self.parent_id}" if self.parent_id else "",
                self.seen,
            )


def parent_lists(
    client: ListClient,
    resource: Resource,
    parents: Iterator[dict[str, Any]],
    params: dict[str, str],
    on_page: Callable[[Page], None] | None = None,
    stop_before: datetime | None = None,
    whole: Callable[[str], bool] | None = None,
) -> Generator[tuple[str, list[dict[str, Any]]], None, None]:
    """Every parent's child list, each read completely, several parents at once: ``(parent id,
    records)`` in parent order. A newest-first list stops at ``stop_before``, except for the
    parents ``whole`` names (a rotation's re-read: counted in ``parents_rechecked`` and
    ``recheck_requests``).

    Each parent's list is one task on the client's workers (its pages go to idle workers, or
    are fetched by the task itself while the fan-out keeps them all busy: see
    :mod:`.workers`). At most ``2 * max_concurrency`` lists are read ahead and held, so memory
    stays bounded. A finished list is a unit a resumable load can keep (a parent is never
    half-read), so it is yielded whole.
    """
    report = _serialised(on_page) if on_page is not None else None

    def read(parent_id: str) -> tuple[str, list[dict[str, Any]]]:
        rechecked = whole is not None and whole(parent_id)
        reader = ListReader(
            client,
            resource,
            parent_id,
            params,
            on_page=report,
            count_records=False,
            stop_before=None if rechecked else stop_before,
        )
        records = list(reader)
        if rechecked:
            client.stats.add(parents_rechecked=1, recheck_requests=reader.pages_read)
        return parent_id, records

    def next_parent() -> Callable[[], tuple[str, list[dict[str, Any]]]] | None:
        parent = next(parents, None)
        return None if parent is None else partial(read, str(parent["id"]))

    lists = client.workers.in_order(next_parent, ahead=2 * client.config.max_concurrency)
    try:
        yield from lists
    finally:
        lists.close()


def window_units(
    client: ListClient,
    resource: Resource,
    params: dict[str, str],
    done: Collection[str] = (),
    *,
    on_page: Callable[[Page], None] | None = None,
    bill: Callable[[Page], None] | None = None,
) -> Generator[tuple[str, list[dict[str, Any]]], None, None]:
    """A list with partition filters (contacts) as ``(window name, records)``: created-time
    windows, each read completely (its own ``ListReader``, checked against its ``total``).
    Windows named in ``done`` (a resumed load's) are not read again: only the gaps between them.

    A gap of at most ``UNIT_MIN_PAGES`` pages is one unit: a killed try reads it again, under
    a minute at the budget. A longer one is cut, at quantiles of its first page's created
    times, into windows of about ``UNIT_PAGES`` pages (at least ``UNIT_MIN_WINDOWS`` of them,
    so a kill loses a few percent of the read); that first page is the one request the cut
    costs. A page of created times cuts unevenly, so a window whose first page shows more than
    ``UNIT_MAX_SHARE`` times its planned size is cut again at its own first page's times (one
    request more): a kill then never loses more than about two planned windows' worth.
    """
    page_size = client.config.page_size
    gaps = root_window(resource, params).minus(map(Window.parse, done))
    #: windows to read, each with its planned size in records (None: a gap, whose read plans it)
    pending: deque[tuple[Window, int | None]] = deque((gap, None) for gap in gaps)
    while pending:
        window, planned = pending.popleft()
        most: float = (
            UNIT_MIN_PAGES * page_size if planned is None else max(UNIT_MAX_SHARE * planned, page_size)
        )
        first: list[Page] = []

        def noted(page: Page, first: list[Page] = first, gap: bool = planned is None) -> None:
            first.append(page)
            if bill is not None and gap:  # a gap's first page tells the read's size
                bill(page)

        reader = ListReader(
            client,
            resource,
            None,
            window_params(resource, params, window),
            on_page=on_page,
            count_records=False,
            bill=noted,
        )
        records: list[dict[str, Any]] = []
        cut: list[tuple[Window, int | None]] = []
        pages = iter(reader)
        try:
            for record in pages:
                records.append(record)
                if first and (first[0].total or 0) > most:
                    cut = _cut(window, first[0], planned, page_size, resource)
                    if cut:
                        break
                    most = math.inf  # its first page's times cannot cut it: one unit after all
        finally:
            pages.close()
        if cut:
            pending.extendleft(reversed(cut))
        else:
            yield window.name, records


def _cut(
    window: Window, first: Page, planned: int | None, page_size: int, resource: Resource
) -> list[tuple[Window, int | None]]:
    """``window`` cut at quantiles of its first page's created times, each piece with its
    planned size; [] when the page's times cannot cut it (it is read whole). A window is cut
    again only where its first page is a sample of it: not where the page comes sorted by
    created time, whose quantiles are the list's first page's, not the window's."""
    total = first.total or 0
    listed = [v for v in map(_millis_of(resource), first.records) if v is not None]
    values = sorted(listed)
    if planned is None:  # a gap: windows of about UNIT_PAGES pages, and enough of them
        parts = max(UNIT_MIN_WINDOWS, math.ceil(total / (UNIT_PAGES * page_size)))
    elif listed in (values, values[::-1]):
        return []  # a list sorted by created time: its first page is its oldest (or newest), no sample
    else:  # a window that came out too big: pieces of the size it was meant to have
        parts = math.ceil(total / planned)
    size = math.ceil(total / parts)
    return [(piece, size) for piece in window.split(values, parts)]


def _millis_of(resource: Resource) -> Callable[[dict[str, Any]], int | None]:
    field = resource.partition_field or ""
    return lambda record: _millis(record.get(field))


def distinct_records(
    stats: RequestStats, lists: Generator[tuple[str, list[dict[str, Any]]], None, None]
) -> Iterator[dict[str, Any]]:
    """Parents' lists (:func:`parent_lists`) as one stream of records; an id listed under
    several parents is yielded once."""
    emitted: set[int] = set()
    try:
        for _, records in lists:
            yield from _once(stats, records, emitted)
    finally:
        lists.close()


def _once(stats: RequestStats, records: list[dict[str, Any]], emitted: set[int]) -> Iterator[dict[str, Any]]:
    fresh = 0
    for record in records:
        record_id = record.get("id")
        if record_id is not None:
            marker = hash(str(record_id))
            if marker in emitted:
                continue
            emitted.add(marker)
        fresh += 1
        yield record
    stats.add(records=fresh, duplicates_dropped=len(records) - fresh)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` once per process (it would repeat for every parent's list)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _serialised(on_page: Callable[[Page], None]) -> Callable[[Page], None]:
    """``on_page`` called from several threads, one at a time (progress trackers are not thread-safe)."""
    lock = threading.Lock()

    def report(page: Page) -> None:
        with lock:
            on_page(page)

    return report
