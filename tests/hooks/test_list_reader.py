"""List reads driven by a plain fetch function: no hook, no connection, no HTTP."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from clarky_provider.exceptions import ClarkyIncompleteReadError, ClarkyServerError
from clarky_provider.hooks import listing
from clarky_provider.hooks.list_client import ListClient, ReadConfig
from clarky_provider.hooks.listing import ListReader, distinct_records, parent_lists
from clarky_provider.hooks.stats import RequestStats
from clarky_provider.normalize import format_timestamp, parse_timestamp
from clarky_provider.resources import COMPANIES, CONTACT_ACTIVITIES, CONTACTS

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


class FakeAPI:
    """Clarky's list endpoints over in-memory lists, as a fetch function.

    Lists are served in their stored order, or in a fresh order per request (``shuffle``, as
    an unordered list whose order changes between requests); ``created_after`` and
    ``created_before`` filter inclusively. It records each request, the threads that fetched
    and the most fetches it saw in flight at once.
    """

    def __init__(
        self, lists: dict[str, list[dict[str, Any]]], *, shuffle: bool = False, latency: float = 0.0
    ):
        self.lists = lists
        self.shuffle = shuffle
        self.latency = latency
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.threads: set[threading.Thread] = set()
        self.in_flight = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            self.requests.append((path, dict(query)))
            self.threads.add(threading.current_thread())
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            seed = len(self.requests)
        try:
            time.sleep(self.latency)
            return self._page(path, query, seed)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _page(self, path: str, query: Mapping[str, str], seed: int) -> dict[str, Any]:
        records = [r for r in self.lists[path] if _in_window(r, query)]
        if self.shuffle:
            random.Random(seed).shuffle(records)
        number, size = int(query.get("page", 1)), int(query.get("page_size", 100))
        served = records[(number - 1) * size : number * size]
        pages = math.ceil(len(records) / size)
        return {
            "data": [dict(r) for r in served],
            "pagination": {"page": number, "page_size": size, "total": len(records), "total_pages": pages},
        }

    def count(self, path: str) -> int:
        return sum(1 for requested, _ in self.requests if requested == path)


def _in_window(record: dict[str, Any], query: Mapping[str, str]) -> bool:
    created = parse_timestamp(record.get("created_at"))
    after, before = parse_timestamp(query.get("created_after")), parse_timestamp(query.get("created_before"))
    if created is None:
        return after is None and before is None
    return (after is None or created >= after) and (before is None or created <= before)


def at(minutes: int) -> str:
    return format_timestamp(START + timedelta(minutes=minutes))


def contacts(count: int) -> list[dict[str, Any]]:
    return [{"id": f"co_{i}", "created_at": at(i)} for i in range(count)]


def activities(contact: int, count: int) -> list[dict[str, Any]]:
    """A contact's activities, newest first (their documented order)."""
    return [{"id": f"act_{contact}_{j}", "created_at": at(count - j)} for j in range(count)]


@pytest.fixture
def make_client() -> Iterator[Any]:
    """``make_client(fetch, page_size, max_concurrency)``: a ListClient closed after the test."""
    made: list[ListClient] = []

    def make(fetch: Any, page_size: int = 10, max_concurrency: int = 3) -> ListClient:
        made.append(ListClient(fetch, ReadConfig(page_size, max_concurrency), RequestStats()))
        return made[-1]

    yield make
    for client in made:
        client.close()


def ids(records: list[dict[str, Any]]) -> list[str]:
    return sorted(r["id"] for r in records)


# -- one list -----------------------------------------------------------------------------


def test_a_stable_list_is_read_once_and_checked_against_its_total(make_client):
    api = FakeAPI({"/companies": contacts(95)})
    client = make_client(api)
    records = list(ListReader(client, COMPANIES, None, {}))
    assert [r["id"] for r in records] == [f"co_{i}" for i in range(95)]  # in page order
    assert api.count("/companies") == 10
    stats = client.stats
    assert (stats.pages, stats.records, stats.lists_read, stats.total_reported) == (10, 95, 1, 95)
    assert stats.lists_recovered == stats.recovery_requests == stats.duplicates_dropped == 0


def test_a_read_short_of_its_total_is_recovered_by_another_sweep(make_client, caplog):
    listed = contacts(25)
    api = FakeAPI({"/companies": listed})

    def fetch(path: str, query: Mapping[str, str]) -> dict[str, Any]:
        body = api(path, query)
        if query["page"] == "1" and listed[0]["id"] != "co_new":
            listed.insert(0, {"id": "co_new"})  # after page 1: every later page shifts by one
        return body

    client = make_client(fetch)
    records = list(ListReader(client, COMPANIES, None, {}))
    assert ids(records) == ids(listed) and len(records) == 26
    # one sweep of 3 pages saw 25 of 26 (page 2 repeated co_9); the second sweep's page 1 ends it
    assert api.count("/companies") == 4
    assert client.stats.lists_recovered == 1 and client.stats.recovery_requests == 1
    assert client.stats.duplicates_dropped == 1 + 9  # co_9 on page 2, then page 1 again
    assert "25 of 26 records seen after one sweep" in caplog.text and "further sweeps" in caplog.text


def test_an_order_changing_per_request_is_recovered_by_created_time_windows(make_client, caplog):
    api = FakeAPI({"/contacts": contacts(400)}, shuffle=True)
    client = make_client(api, page_size=20, max_concurrency=4)
    with caplog.at_level(logging.INFO):
        records = list(ListReader(client, CONTACTS, None, {}))
    assert len(records) == 400 and ids(records) == ids(api.lists["/contacts"])
    assert "repeated" in caplog.text and "created-time windows that each fit in one page" in caplog.text
    windows = [query for _, query in api.requests if "created_after" in query or "created_before" in query]
    assert windows and all(query["page"] == "1" for query in windows)  # each window is one page
    assert client.stats.lists_recovered == 1 and client.stats.total_reported == 400
    assert len(api.requests) <= 2.5 * 20  # windows cost about as many requests as the list has pages


def test_a_read_that_stays_short_fails_within_its_bound(make_client, monkeypatch):
    monkeypatch.setattr(listing, "RECOVERY_REQUESTS_PER_PAGE", 0)  # bound: 10 extra requests
    api = FakeAPI({"/companies": contacts(300)}, shuffle=True)
    client = make_client(api, page_size=10, max_concurrency=2)
    with pytest.raises(ClarkyIncompleteReadError, match=r"read \d+ of the 300 records"):
        list(ListReader(client, COMPANIES, None, {}))
    assert len(api.requests) <= 30 + 10 + 2


def test_stop_before_ends_a_newest_first_list_at_its_first_older_page(make_client):
    newest_first = activities(0, 50)  # created at minutes 50 down to 1
    api = FakeAPI({"/contacts/co_0/activities": newest_first})
    client = make_client(api, page_size=10, max_concurrency=1)
    since = START + timedelta(minutes=25)
    reader = ListReader(client, CONTACT_ACTIVITIES, "co_0", {}, stop_before=since)
    records = list(reader)
    # pages 1-3 (minutes 50..21): page 3 reaches before `since`, so the read ends there, whole
    assert [r["id"] for r in records] == [a["id"] for a in newest_first[:30]]
    assert all(r["contact_id"] == "co_0" for r in records)
    assert [query["page"] for _, query in api.requests] == ["1", "2", "3"]
    assert client.stats.total_reported == 30 and client.stats.lists_recovered == 0


# -- the fan-out over parents -------------------------------------------------------------


def fan_out_api(per_parent: list[int], latency: float) -> FakeAPI:
    lists = {"/contacts": contacts(len(per_parent))}
    for i, count in enumerate(per_parent):
        lists[f"/contacts/co_{i}/activities"] = activities(i, count)
    return FakeAPI(lists, latency=latency)


def read_fan_out(client: ListClient) -> list[dict[str, Any]]:
    parents = iter(ListReader(client, CONTACTS, None, {}, counted=False))
    return list(distinct_records(client.stats, parent_lists(client, CONTACT_ACTIVITIES, parents, {})))


def expected(api: FakeAPI, parents: int) -> list[str]:
    return [a["id"] for i in range(parents) for a in api.lists[f"/contacts/co_{i}/activities"]]


def test_a_nested_fan_out_never_has_more_fetches_in_flight_than_max_concurrency(make_client):
    per_parent = [3 * i for i in range(12)]  # 0 to 33 activities: up to 7 pages of 5 each
    api = fan_out_api(per_parent, latency=0.005)
    client = make_client(api, page_size=5, max_concurrency=3)
    records = read_fan_out(client)
    assert [r["id"] for r in records] == expected(api, 12)  # parent order, then page order
    assert api.peak == 3
    assert threading.current_thread() not in api.threads  # only the client's workers fetch
    assert client.stats.records == sum(per_parent) and client.stats.lists_read == 12


def test_a_fan_out_over_fewer_parents_than_workers_fetches_their_pages_concurrently(make_client):
    api = fan_out_api([40, 40], latency=0.01)  # two lists of 8 pages, four workers
    client = make_client(api, page_size=5, max_concurrency=4)
    records = read_fan_out(client)
    assert [r["id"] for r in records] == expected(api, 2)
    assert api.peak == 4  # idle workers fetch pages of the lists beside the fan-out tasks' own


def test_a_page_that_fails_fails_the_fan_out_and_leaves_no_fetch_running(make_client):
    api = fan_out_api([40, 40], latency=0.005)

    def fetch(path: str, query: Mapping[str, str]) -> dict[str, Any]:
        if path == "/contacts/co_1/activities" and query["page"] == "5":
            raise ClarkyServerError("HTTP 500 internal_error (gave up after 5 retries)", path=path)
        return api(path, query)

    client = make_client(fetch, page_size=5, max_concurrency=4)
    with pytest.raises(ClarkyServerError, match="gave up after 5 retries"):
        read_fan_out(client)
    assert api.in_flight == 0


@pytest.mark.timeout(60)
def test_a_fan_out_on_a_single_worker_cannot_deadlock(make_client):
    api = fan_out_api([12, 0, 7, 30], latency=0.0)  # parents on 2 pages, lists of up to 6
    client = make_client(api, page_size=5, max_concurrency=1)
    records = read_fan_out(client)
    assert [r["id"] for r in records] == expected(api, 4)
    assert api.peak == 1 and len(api.threads) == 1


def test_one_pool_of_workers_serves_every_read_until_closed(make_client):
    api = FakeAPI({"/companies": contacts(50)}, latency=0.002)
    client = make_client(api, page_size=5, max_concurrency=2)
    assert not api.threads  # no worker before the first read
    for _ in range(3):
        assert len(list(ListReader(client, COMPANIES, None, {}))) == 50
    first = set(api.threads)
    assert len(first) <= 2 and all(t.name.startswith("clarky-read") for t in first)
    client.close()
    assert not any(t.is_alive() for t in first)
    assert len(list(ListReader(client, COMPANIES, None, {}))) == 50  # a closed client starts afresh
    assert api.threads - first
