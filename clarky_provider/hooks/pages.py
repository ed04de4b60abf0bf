"""Pages of Clarky lists: the unit every read is made of, fetched in page order.

``resource_pages`` streams one list's pages: page 1, then pages 2..N with up to
``max_concurrency`` submitted to the client's workers (``total_pages`` re-read from every
page), or on until a short page when the API sends no ``pagination``. Whether those pages add
up to the whole list is :mod:`.listing`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from clarky_provider.exceptions import ClarkyServerError
from clarky_provider.hooks.list_client import ListClient
from clarky_provider.resources import Resource

#: Pages fetched when the API omits ``pagination`` and never returns a short page.
MAX_PAGES_WITHOUT_TOTALS = 1_000_000


@dataclass(frozen=True)
class Page:
    """One page of a list endpoint, with the totals the API reported alongside it."""

    resource: str
    number: int
    records: list[dict[str, Any]]
    total: int | None = None
    total_pages: int | None = None
    parent_id: str | None = None
    #: A page of a time window read to recover records a sweep missed (not a page of the full list).
    window: bool = False


def resource_pages(
    client: ListClient, res: Resource, parent_id: str | None, params: dict[str, str]
) -> Generator[Page, None, None]:
    path = res.list_path(parent_id)
    if not res.paginated:
        yield fetch_page(client, res, path, params, None, parent_id)
        return
    first = fetch_page(client, res, path, params, 1, parent_id)
    yield first
    if not first.records:
        return
    if first.total_pages is None:
        yield from _pages_without_totals(client, res, path, params, parent_id, len(first.records))
        return
    yield from _concurrent_pages(client, res, path, params, parent_id, first.total_pages)


def _pages_without_totals(
    client: ListClient,
    res: Resource,
    path: str,
    params: dict[str, str],
    parent_id: str | None,
    first_size: int,
) -> Iterator[Page]:
    """No ``pagination`` object: read on until a short or empty page (sequentially)."""
    size = first_size
    number = 1
    while size >= client.config.page_size and number < MAX_PAGES_WITHOUT_TOTALS:
        number += 1
        page = fetch_page(client, res, path, params, number, parent_id)
        yield page
        size = len(page.records)


def _concurrent_pages(
    client: ListClient,
    res: Resource,
    path: str,
    params: dict[str, str],
    parent_id: str | None,
    total_pages: int,
) -> Iterator[Page]:
    """Pages 2..N with up to ``max_concurrency`` submitted at once, yielded in page order.

    ``total_pages`` is re-read from every page, so growth during the run is followed and
    shrinkage ends at the first empty page.
    """
    next_number = 2

    def next_page() -> Callable[[], Page] | None:
        nonlocal next_number
        if next_number > total_pages:
            return None
        next_number += 1
        return partial(fetch_page, client, res, path, params, next_number - 1, parent_id)

    pages = client.workers.in_order(next_page, ahead=client.config.max_concurrency)
    try:
        for page in pages:
            yield page
            if not page.records:
                return
            if page.total_pages is not None:
                total_pages = page.total_pages
    finally:
        pages.close()


def fetch_page(
    client: ListClient,
    res: Resource,
    path: str,
    params: dict[str, str],
    number: int | None,
    parent_id: str | None,
) -> Page:
    query = dict(params)
    if number is not None:
        query.update(page=str(number), page_size=str(client.config.page_size))
    payload = client.get(path, query)
    records = payload.get("data")
    if not isinstance(records, list):
        raise ClarkyServerError(
            f"list response has no 'data' array (got {type(records).__name__})", path=path
        )
    if res.parent_key and parent_id is not None:
        for record in records:
            if record.get(res.parent_key) is None:
                record[res.parent_key] = parent_id
    pagination = payload.get("pagination") or {}
    client.stats.add(pages=1)
    return Page(
        resource=res.name,
        number=number or 1,
        records=records,
        total=as_int(pagination.get("total")),
        total_pages=as_int(pagination.get("total_pages")),
        parent_id=parent_id,
    )


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
