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
``total`` and the fan-out over parents), ``rate_limit`` (the key's budget, shared across
processes), ``stats`` (traffic counters) and ``bill`` (the cost of a read, logged before it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from clarky_provider import __version__
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
    error_class_for_status,
)
from clarky_provider.hooks.bill import log_fan_out_bill, log_list_bill
from clarky_provider.hooks.list_client import ListClient, ReadConfig
from clarky_provider.hooks.listing import ListReader, distinct_records, parent_lists, window_units
from clarky_provider.hooks.network import network_error
from clarky_provider.hooks.pages import Page, as_int, resource_pages
from clarky_provider.hooks.rate_limit import RateLimiter
from clarky_provider.hooks.settings import ClarkySettings, check_overrides, read_settings
from clarky_provider.hooks.stats import RequestStats
from clarky_provider.jsoncodec import loads
from clarky_provider.normalize import parse_timestamp, require_timestamp
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
            session.headers.update(
                {
                    "Authorization": f"Bearer {settings.api_key}",
                    "Accept": "application/json",
                    "User-Agent": f"airflow-provider-clarky/{__version__}",
                }
            )
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
        if response.status_code >= 400:
            raise self._api_error(response, body, path)
        if response.status_code >= 300:
            location = self._scrub(str(response.headers.get("Location")))
            raise ClarkyConfigError(
                f"Clarky answered {path} with HTTP {response.status_code}, a redirect to {location!r}, "
                "which the hook does not follow (the key would go with it). Set the connection's "
                "Base URL to the API's address."
            )
        if method == "HEAD":
            return {}
        try:
            payload = loads(body)
        except ValueError:
            raise ClarkyServerError(
                f"HTTP {response.status_code} body is not valid JSON ({len(body)} bytes, truncated?)",
                path=path,
            ) from None
        if not isinstance(payload, dict):
            raise ClarkyServerError("response body is not a JSON object", path=path)
        return payload

    def _observe_budget(self, headers: Mapping[str, str]) -> None:
        try:
            remaining = int(headers["X-RateLimit-Remaining"])
            reset = float(headers["X-RateLimit-Reset"])
        except (KeyError, ValueError):
            return
        self.stats.budget_remaining = remaining
        # the limit lets the limiter tell "low" from "plenty" (other hosts spend the same budget)
        self.limiter.observe(remaining, reset, as_int(headers.get("X-RateLimit-Limit")))

    def _api_error(self, response: requests.Response, body: bytes, path: str) -> ClarkyAPIError:
        status = response.status_code
        code = message = None
        details: dict[str, Any] = {}
        try:
            envelope = loads(body).get("error") or {}
            code, message = envelope.get("code"), envelope.get("message")
            details = dict(envelope.get("details") or {})
        except (ValueError, AttributeError):
            message = f"{response.reason or 'error'} (non-JSON body, {len(body)} bytes)"
        if status == 429:
            details["retry_after"] = _retry_after(response.headers.get("Retry-After"))
            self.stats.add(rate_limited=1)
        message = self._scrub(str(message or response.reason or "error"))
        if status == 401:
            message += " - the key is invalid or revoked; rotate it in Clarky's Settings > API Keys."
        return error_class_for_status(status)(message, status=status, code=code, details=details, path=path)

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
        signal (``contact_activities``): only parents whose change fields
        (``last_contacted_at``, ``created_at``) are at or after it, and each list only down to
        its first record older than it (the list is newest first).
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
        parents = self._changed_parents(res, since)
        lists = parent_lists(self._lists, res, parents, params, on_page, stop_before=since)
        yield from distinct_records(self.stats, lists)

    def paginate_units(
        self,
        resource: str,
        *,
        skip: Collection[str] = (),
        on_page: Callable[[Page], None] | None = None,
        changed_since: datetime | str | None = None,
        **filters: Any,
    ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """A resumable read (``Resource.resumable``) as ``(unit, records)``, each unit read
        completely and checked against its ``total`` as in :meth:`paginate`; units named in
        ``skip`` are not read. A resumable load keeps each unit as it comes and, in its next
        try, skips them. A child resource's units are its parents (their ids), in parent order;
        a list with partition filters (contacts) comes in created-time windows
        (:func:`.listing.window_units`).
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
            parents = (
                p for p in self._changed_parents(res, since, done=len(skip)) if str(p["id"]) not in skip
            )
            units = parent_lists(self._lists, res, parents, params, on_page, stop_before=since)
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
        self, res: Resource, since: datetime | None, done: int = 0
    ) -> Iterator[dict[str, Any]]:
        """The parents of child resource ``res`` (those changed since ``since``, if given), read
        completely; the read's bill (less ``done`` parents an earlier try read) is logged when
        the first page tells its size."""
        parent = get_resource(res.parent or "")
        budget = self.settings.requests_per_minute

        def fan_out_bill(page: Page) -> None:
            mark = since.isoformat() if since else None
            log_fan_out_bill(
                res.name, parent.name, page.total or 0, page.total_pages or 1, budget, since=mark, done=done
            )

        parents: Iterator[dict[str, Any]] = iter(
            ListReader(self._lists, parent, None, {}, counted=False, bill=fan_out_bill)
        )
        if since is not None:
            parents = (p for p in parents if _changed(p, res.parent_change_fields, since))
        return parents

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
    if not res.parent_change_fields:
        raise ClarkyConfigError(
            f"changed_since needs a child resource whose parents signal changes; {res.name!r} has none "
            f"(resources that do: {', '.join(sorted(r.name for r in RESOURCES.values() if r.parent_change_fields))})."
        )
    return require_timestamp(value, "changed_since")


def _changed(parent: dict[str, Any], fields: tuple[str, ...], since: datetime) -> bool:
    """Whether any change field of ``parent`` is at or after ``since`` (unreadable values count as changed)."""
    for name in fields:
        try:
            moment = parse_timestamp(parent.get(name))
        except (TypeError, ValueError):
            return True
        if moment is not None and moment >= since:
            return True
    return False


def _retry_after(value: str | None) -> float:
    """``Retry-After`` in seconds (Clarky documents seconds; anything unreadable means 1 s)."""
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0
