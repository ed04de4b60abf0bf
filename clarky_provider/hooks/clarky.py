"""ClarkyHook: a read-only client of the Clarky REST API that survives the real API.

It pages through any catalog resource (child resources fan out over their parents), retries
what is transient (429 after ``Retry-After``; 5xx, resets, timeouts and broken bodies with
jittered exponential backoff), paces itself under the key's budget, and never lets the key
reach a log line or an exception.

This module is the connection and one request (pacing, retries, typed errors) over a
``requests.Session``, and the reads built on it; the rest lives beside it: ``network`` (what
a failed connection means), ``settings`` (the connection's checked settings), ``list_client``
(what list reads need of the hook: its GET, settings, counters and worker pool), ``workers``
(that pool), ``pages`` (one list's pages in order), ``listing`` (complete reads against
``total`` and the fan-out over parents), ``changes`` (which parents an incremental fan-out
reads: the catalog's change signal and the rotation), ``rate_limit`` (the key's budget,
shared across processes), ``stats`` (traffic counters) and ``bill`` (the cost of a read,
logged before it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from clarky_provider.compat import AirflowProviderDeprecationWarning, BaseHook
from clarky_provider.connection_form import UI_FIELD_BEHAVIOUR
from clarky_provider.exceptions import (
    ClarkyAPIError,
    ClarkyAuthError,
    ClarkyConfigError,
    ClarkyConnectionError,
    ClarkyError,
    ClarkyNotFoundError,
    ClarkyRateLimitError,
    ClarkyServerError,
)
from clarky_provider.hooks.answers import check_answer, json_object
from clarky_provider.hooks.bill import log_by_id_bill, log_fan_out_bill, log_list_bill
from clarky_provider.hooks.changes import ChangedParents, Rotation, check_fraction, day_number
from clarky_provider.hooks.list_client import ListClient, ReadConfig
from clarky_provider.hooks.listing import ListReader, distinct_records, parent_lists, window_units
from clarky_provider.hooks.network import network_error
from clarky_provider.hooks.pages import Page, resource_pages
from clarky_provider.hooks.rate_limit import RateLimiter
from clarky_provider.hooks.settings import ClarkySettings, check_overrides, read_settings
from clarky_provider.hooks.stats import RequestStats
from clarky_provider.normalize import require_timestamp
from clarky_provider.resources import (
    RESOURCES,
    Resource,
    encode_filters,
    get_resource,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD"})
#: 429s are waited out up to this many times per request (on top of the total-time bound).
MAX_RATE_LIMIT_WAITS = 20
#: Cap of one exponential backoff sleep, in seconds.
MAX_BACKOFF = 30.0
#: Retries of a connection that could not be made (refused, unknown host): enough for a
#: restarting gateway, few enough that a wrong Base URL fails in seconds.
MAX_CONNECT_RETRIES = 2


class ClarkyHook(BaseHook):
    """
    Read-only client of the Clarky API.

    :param clarky_conn_id: id of a ``clarky`` connection: the key in the password field, an
        optional base URL in host, and extras ``timeout``, ``page_size``, ``max_retries``,
        ``requests_per_minute`` and ``max_concurrency``.
    :param max_retry_seconds: total time one request may spend retrying before it gives up.
    :param overrides: values that take precedence over the connection's extras (e.g.
        ``page_size=50``, ``retry_backoff=0.1``).
    """

    conn_name_attr = "clarky_conn_id"
    default_conn_name = "clarky_default"
    conn_type = "clarky"
    hook_name = "Clarky"

    def __init__(
        self,
        clarky_conn_id: str = default_conn_name,
        *,
        max_retry_seconds: float = 900.0,
        **overrides: Any,
    ) -> None:
        super().__init__()
        check_overrides(overrides, "ClarkyHook", also_valid=("max_retry_seconds",))
        self.clarky_conn_id = clarky_conn_id
        self.max_retry_seconds = max_retry_seconds
        self._overrides = overrides
        self._settings: ClarkySettings | None = None
        self._session: requests.Session | None = None
        self._limiter: RateLimiter | None = None
        self._in_flight_slots: threading.BoundedSemaphore | None = None
        self._list_client: ListClient | None = None
        self._lazy_lock = threading.Lock()
        self.stats = RequestStats()

    # -- connection -------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form behaviour for Airflow versions that ask the hook (same data as provider info)."""
        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    @property
    def settings(self) -> ClarkySettings:
        """Connection settings, read and validated once."""
        if self._settings is None:
            conn = self.get_connection(self.clarky_conn_id)
            self._settings = read_settings(
                conn.host, conn.password, conn.extra_dejson, self.clarky_conn_id, self._overrides
            )
        return self._settings

    def get_conn(self) -> requests.Session:
        """The hook's ``requests.Session``: the bearer key, a connection pool sized for
        ``max_concurrency``, and the environment's proxies and CA bundle (``trust_env``)."""
        if self._session is None:
            settings = self.settings
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=settings.max_concurrency, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update(settings.request_headers())
            self._session = session
        return self._session

    @property
    def limiter(self) -> RateLimiter:
        """The key's pacing, shared with every thread and process on this host that uses the key."""
        if self._limiter is None:
            s = self.settings
            self._limiter = RateLimiter.shared(s.key_fingerprint, s.requests_per_minute)
        return self._limiter

    @property
    def _in_flight(self) -> threading.BoundedSemaphore:
        """Bounds requests in flight to ``max_concurrency`` from every thread that uses the hook.

        List reads are bounded already (only the ``max_concurrency`` read workers fetch); this
        also bounds requests made beside them, e.g. ``get_record`` from a user's own threads.
        """
        with self._lazy_lock:
            if self._in_flight_slots is None:
                self._in_flight_slots = threading.BoundedSemaphore(self.settings.max_concurrency)
            return self._in_flight_slots

    @property
    def _lists(self) -> ListClient:
        """What list reads use of the hook; one per hook, so its worker pool serves every read."""
        with self._lazy_lock:
            if self._list_client is None:
                settings = self.settings
                config = ReadConfig(page_size=settings.page_size, max_concurrency=settings.max_concurrency)
                self._list_client = ListClient(self._get, config, self.stats)
            return self._list_client

    def close(self) -> None:
        """Close the Session and stop the read workers; a closed hook makes fresh ones when used again."""
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._list_client is not None:
            self._list_client.close()

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated GET, with failures explained in plain words (never the key)."""
        try:
            payload = self.request("GET", "/contacts", {"page_size": "1"}, max_retries=0)
        except ClarkyConfigError as exc:
            return False, str(exc)
        except ClarkyAuthError:
            return False, (
                "Clarky rejected the API key (401): it is invalid or has been revoked. Create a new "
                "key in Clarky under Settings > API Keys and put it in the connection's password field."
            )
        except ClarkyError as exc:
            return False, self._explain(exc)
        total = (payload.get("pagination") or {}).get("total")
        return True, f"Connected to Clarky at {self.settings.base_url}; {total} contacts visible to this key."

    def _explain(self, exc: ClarkyError) -> str:
        if isinstance(exc, ClarkyServerError) and exc.status is None:
            return (
                f"Could not get an answer from {self.settings.base_url} ({exc.message}). Check the "
                "connection's Base URL, the network path from the worker, and the timeout extra."
            )
        if isinstance(exc, ClarkyAPIError):
            return exc.message
        return str(exc)

    # -- requests ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        """Send one read request with pacing and retries; returns the decoded JSON body."""
        method = method.upper()
        if method not in READ_METHODS:
            raise ClarkyConfigError(
                f"ClarkyHook is read-only: it sends GET and HEAD, not {method}. A read-scoped key is "
                "all this provider needs."
            )
        settings = self.settings
        retries_allowed = settings.max_retries if max_retries is None else max_retries
        deadline = time.monotonic() + self.max_retry_seconds
        failures = rate_limit_waits = 0
        while True:
            try:
                with self._in_flight:  # max_concurrency across every thread of this hook
                    with self.stats.waiting_for_budget():
                        self.limiter.acquire()
                    return self._send(method, path, params)
            except ClarkyAPIError as exc:
                error = exc
            if isinstance(error, ClarkyRateLimitError):
                rate_limit_waits += 1
                if rate_limit_waits > MAX_RATE_LIMIT_WAITS:
                    raise self._gave_up(error, f"{MAX_RATE_LIMIT_WAITS} rate-limit waits")
                retry_after = float(error.details.get("retry_after", 1.0))
                wait = retry_after + random.uniform(0, min(1.0, 0.1 * retry_after))
                reason = f"rate limited (429), Retry-After {retry_after:g}s"
            elif error.retryable:
                failures += 1
                allowed = retries_allowed
                if isinstance(error, ClarkyConnectionError):
                    allowed = min(retries_allowed, MAX_CONNECT_RETRIES)
                if failures > allowed:
                    raise self._gave_up(error, f"{allowed} retries") if allowed else error
                cap = min(MAX_BACKOFF, settings.retry_backoff * 2 ** (failures - 1))
                wait = random.uniform(cap / 2, cap)
                reason = (
                    error.message.rstrip(".")
                    if error.status is None
                    else f"HTTP {error.status} {error.code or ''}"
                )
            else:
                raise error
            if time.monotonic() + wait > deadline:
                raise self._gave_up(error, f"{self.max_retry_seconds:g}s of retrying")
            self.stats.add(retries=1)
            log.warning("Clarky %s %s: %s; retrying in %.2fs", method, path, reason.strip(), wait)
            if isinstance(error, ClarkyRateLimitError):
                self.limiter.pause(wait)  # every thread sharing the key waits, not just this one
            else:
                time.sleep(wait)

    def _get(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        """The :data:`~.list_client.Fetch` list reads are given: a GET through :meth:`request`."""
        return self.request("GET", path, query)

    @staticmethod
    def _gave_up(exc: ClarkyAPIError, after: str) -> ClarkyAPIError:
        return type(exc)(
            f"{exc.message} (gave up after {after})",
            status=exc.status,
            code=exc.code,
            details=exc.details,
            path=exc.path,
        )

    def _send(self, method: str, path: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        settings = self.settings
        url = settings.base_url + path
        try:
            # redirects are refused: the key would go with them
            response = self.get_conn().request(
                method, url, params=params, timeout=settings.timeout, allow_redirects=False
            )
            body = response.content
        except requests.RequestException as exc:
            self.stats.add(requests=1)
            raise network_error(
                exc,
                url,
                path,
                timeout=settings.timeout,
                scheme_assumed=settings.scheme_assumed,
                scrub=self._scrub,
            ) from None
        self.stats.add(requests=1)
        self._observe_budget(response.headers)
        if response.status_code == 429:
            self.stats.add(rate_limited=1)
        check_answer(response.status_code, response.reason, response.headers, body, path, self._scrub)
        return {} if method == "HEAD" else json_object(response.status_code, body, path)

    def _observe_budget(self, headers: Mapping[str, str]) -> None:
        remaining = self.limiter.observe_headers(headers)
        if remaining is not None:
            self.stats.budget_remaining = remaining

    def _scrub(self, text: str) -> str:
        """Remove the key from any text that came from elsewhere (server bodies, library errors)."""
        key = self._settings.api_key if self._settings else None
        return text.replace(key, "***") if key else text

    # -- reading ----------------------------------------------------------------------------

    def get_record(self, resource: str, record_id: str) -> dict[str, Any]:
        """One record by id (``GET /<resource>/{id}``); ``ClarkyNotFoundError`` when absent."""
        res = get_resource(resource)
        if res.item_path is None:
            raise ClarkyConfigError(f"Clarky resource {resource!r} has no single-record endpoint.")
        path = res.item_path.replace("{id}", quote(str(record_id), safe=""))
        return self.request("GET", path).get("data") or {}

    def get_records(self, resource: str, ids: Iterable[str]) -> RecordsById:
        """Exactly the records named, for a targeted re-sync: one ``GET /<resource>/{id}`` per
        id where the resource has an item endpoint; for a child resource (none has one) ``ids``
        are parent ids, and each parent's whole list is read, checked against its ``total``.
        Ids the API answers 404 for come back in ``missing`` (records, or parents, it no longer
        has, whose rows a load deletes). Several at once, on the hook's workers."""
        res = get_resource(resource)
        wanted = list(dict.fromkeys(str(i) for i in ids))
        res.check_readable_by_id()
        read_one: Callable[[str], list[dict[str, Any]]] = (
            partial(self._item, res) if res.item_path is not None else partial(self._whole_list, res)
        )
        log_by_id_bill(res.name, len(wanted), res.parent, self.settings.requests_per_minute)
        pending = iter(wanted)

        def next_read() -> Callable[[], tuple[str, list[dict[str, Any]] | None]] | None:
            record_id = next(pending, None)
            return None if record_id is None else partial(_or_none, read_one, record_id)

        found = RecordsById(res.name, res.parent_key or res.primary_key[0])
        for record_id, records in self._lists.workers.in_order(
            next_read, ahead=2 * self.settings.max_concurrency
        ):
            if records is None:
                found.missing.append(record_id)
            else:
                found.records.extend(records)
        return found

    def _item(self, res: Resource, record_id: str) -> list[dict[str, Any]]:
        record = self.get_record(res.name, record_id)
        self.stats.add(records=1)
        return [record]

    def _whole_list(self, res: Resource, parent_id: str) -> list[dict[str, Any]]:
        return list(ListReader(self._lists, res, parent_id, {}))

    def find_contact_by_email(self, email: str) -> dict[str, Any] | None:
        """The contact with this exact e-mail, or ``None`` (the API answers 404 for no match)."""
        try:
            return self.request("GET", "/contacts/by-email", {"email": email}).get("data")
        except ClarkyNotFoundError:
            return None

    def iter_pages(self, resource: str, *, parent_id: str | None = None, **filters: Any) -> Iterator[Page]:
        """Yield the pages of a resource in page order; child resources fan out over their parents."""
        res = get_resource(resource)
        params = encode_filters(res, filters)
        if res.parent_key is not None and parent_id is None:
            for parent in ListReader(self._lists, get_resource(res.parent or ""), None, {}, counted=False):
                yield from resource_pages(self._lists, res, str(parent["id"]), params)
        else:
            yield from resource_pages(self._lists, res, parent_id, params)

    def paginate(
        self,
        resource: str,
        *,
        parent_id: str | None = None,
        on_page: Callable[[Page], None] | None = None,
        changed_since: datetime | str | None = None,
        recheck_fraction: float | str = 0.0,
        recheck_day: date | int | str | None = None,
        **filters: Any,
    ) -> Iterator[dict[str, Any]]:
        """Yield every record once, each list checked against the ``total`` the API reported.

        Clarky lists are unordered pages over data that changes while we read, so one sweep can
        skip records and repeat others. Duplicates are dropped by id; a list read short of its
        ``total`` is re-read at the least cost the API allows (see :mod:`.listing`), and one
        that stays short raises :class:`ClarkyIncompleteReadError`. Child resources fan out over
        a complete read of their parents, several parents at once. ``on_page`` is called with
        each page as it arrives.

        ``changed_since`` reads a child resource incrementally where the catalog gives a change
        signal (``Resource.change_signal``: activities, messages): only parents whose signal
        fields (``last_contacted_at`` or ``last_message_at``, and ``created_at``) are at or after
        it, and each list only down to its first record older than it (the list is newest
        first). ``recheck_fraction`` (e.g. 1/7) re-reads that share of the parents whole on top,
        a different slice each ``recheck_day`` (default today, UTC), every parent once in
        ``1 / recheck_fraction`` days: what the signal cannot see (edits, deletes, backdated
        children) heals within that time (see :mod:`.changes`).
        """
        res = get_resource(resource)
        params = encode_filters(res, filters)
        since = _changed_since(res, changed_since)
        if res.parent_key is None or parent_id is not None:
            bill = self._list_bill(res) if parent_id is None else None
            yield from ListReader(
                self._lists, res, parent_id, params, on_page=on_page, stop_before=since, bill=bill
            )
            return
        choice = _choice(res, since, recheck_fraction, recheck_day)
        parents = self._changed_parents(res, choice)
        lists = parent_lists(
            self._lists, res, parents, params, on_page, stop_before=since, whole=choice.whole
        )
        yield from distinct_records(self.stats, lists)

    def paginate_units(
        self,
        resource: str,
        *,
        skip: Collection[str] = (),
        on_page: Callable[[Page], None] | None = None,
        changed_since: datetime | str | None = None,
        recheck_fraction: float | str = 0.0,
        recheck_day: date | int | str | None = None,
        **filters: Any,
    ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """A resumable read (``Resource.resumable``) as ``(unit, records)``, each unit read
        completely and checked against its ``total`` as in :meth:`paginate`; units named in
        ``skip`` are not read. A resumable load keeps each unit as it comes and, in its next
        try, skips them. A child resource's units are its parents (their ids), in parent order;
        a list with partition filters (contacts) comes in created-time windows
        (:func:`.listing.window_units`). ``changed_since`` and the rotation as in :meth:`paginate`.
        """
        res = get_resource(resource)
        if not res.resumable:
            resumable = ", ".join(sorted(r.name for r in RESOURCES.values() if r.resumable))
            raise ClarkyConfigError(
                f"{res.name!r} is read whole, not in units a load can resume from (resumable: {resumable})."
            )
        params = encode_filters(res, filters)
        since = _changed_since(res, changed_since)  # only child resources have a change signal
        units: Iterator[tuple[str, list[dict[str, Any]]]]
        if res.parent_key is not None:
            choice = _choice(res, since, recheck_fraction, recheck_day)
            parents = (
                p for p in self._changed_parents(res, choice, done=len(skip)) if str(p["id"]) not in skip
            )
            units = parent_lists(
                self._lists, res, parents, params, on_page, stop_before=since, whole=choice.whole
            )
        else:
            units = window_units(self._lists, res, params, skip, on_page=on_page, bill=self._list_bill(res))
        for unit, records in units:
            self.stats.add(records=len(records))
            yield unit, records

    def _list_bill(self, res: Resource) -> Callable[[Page], None]:
        """Logs a list read's bill once its first page tells its size."""
        budget = self.settings.requests_per_minute

        def bill(page: Page) -> None:
            log_list_bill(res.name, page.total or 0, page.total_pages or 1, budget)

        return bill

    def _changed_parents(
        self, res: Resource, choice: ChangedParents, done: int = 0
    ) -> Iterator[dict[str, Any]]:
        """The parents of child resource ``res`` that ``choice`` reads, from a complete read of
        them; the read's bill (less ``done`` parents an earlier try read) is logged when the
        first page tells its size."""
        parent = get_resource(res.parent or "")
        budget = self.settings.requests_per_minute
        since = choice.since

        def fan_out_bill(page: Page) -> None:
            mark = since.isoformat() if since else None
            recheck = float(choice.rotation.fraction)
            log_fan_out_bill(
                res.name,
                parent.name,
                page.total or 0,
                page.total_pages or 1,
                budget,
                since=mark,
                done=done,
                recheck=recheck,
            )

        return choice.select(ListReader(self._lists, parent, None, {}, counted=False, bill=fan_out_bill))

    def get_df(self, resource: str, **filters: Any) -> pd.DataFrame:
        """All records of a resource as a pandas DataFrame (common-sql's name), for notebooks and
        small resources; ``filters`` as in :meth:`paginate`."""
        import pandas as pd

        return pd.DataFrame.from_records(list(self.paginate(resource, **filters)))

    def get_pandas_df(self, resource: str, **filters: Any) -> pd.DataFrame:
        """Deprecated: use :meth:`get_df` (the name common-sql's hooks use)."""
        warnings.warn(
            "ClarkyHook.get_pandas_df is deprecated; use get_df.",
            AirflowProviderDeprecationWarning,
            stacklevel=2,
        )
        return self.get_df(resource, **filters)


def _changed_since(res: Resource, value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if res.change_signal is None:
        raise ClarkyConfigError(
            f"changed_since needs a child resource whose parents signal changes; {res.name!r} has none "
            f"(resources that do: {', '.join(sorted(r.name for r in RESOURCES.values() if r.change_signal))})."
        )
    return require_timestamp(value, "changed_since")


def _choice(
    res: Resource,
    since: datetime | None,
    recheck_fraction: float | str,
    recheck_day: date | int | str | None,
) -> ChangedParents:
    """Which parents a fan-out reads: those changed since ``since`` (all without it), plus the
    rotation's slice of the day when reading incrementally."""
    fraction = check_fraction(recheck_fraction)
    rotation = Rotation(fraction, day_number(recheck_day)) if since is not None else Rotation()
    return ChangedParents(res, since, rotation)


@dataclass
class RecordsById:
    """What :meth:`ClarkyHook.get_records` read: the records, and the ids the API answered 404
    for, which are values of ``key`` (``id``, or a child resource's parent key)."""

    resource: str
    key: str
    records: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _or_none(
    read: Callable[[str], list[dict[str, Any]]], record_id: str
) -> tuple[str, list[dict[str, Any]] | None]:
    """``(record_id, read(record_id))``, with None for a 404 (the API no longer has it)."""
    try:
        return record_id, read(record_id)
    except ClarkyNotFoundError:
        return record_id, None
