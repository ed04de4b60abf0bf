"""An async count of a Clarky list: one GET of a one-record page, for change probes.

The triggerer runs every trigger on one event loop, so a probe must never block it: ``httpx``'s
``AsyncClient`` (a dependency of Airflow's core) instead of the hook's ``requests`` Session, and
the key's budget taken with :meth:`RateLimiter.acquire_async`, the same slots and state file the
hook's syncs take theirs from. Settings, headers read, typed errors and scrubbing are the hook's
(:mod:`.settings`, :mod:`.rate_limit`, :mod:`.answers`, :mod:`.network`). There are no retries
here: a trigger's next poll is its retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx

from clarky_provider.exceptions import ClarkyServerError
from clarky_provider.hooks.answers import check_answer, json_object
from clarky_provider.hooks.network import network_error
from clarky_provider.hooks.pages import as_int
from clarky_provider.hooks.rate_limit import RateLimiter
from clarky_provider.hooks.settings import ClarkySettings
from clarky_provider.resources import MIN_PAGE_SIZE


@dataclass(frozen=True)
class ListCount:
    """What one probe saw: how many records the list holds, the one record it returned (any of
    them: most lists have no documented order), and the server's clock when it answered."""

    total: int
    sample: dict[str, Any] | None
    #: the answer's ``Date`` header (whole seconds, rounded down), or ``None`` without one
    server_time: datetime | None


class ListProbe:
    """Counts lists with one request each, paced on the key's budget shared with every sync.

    One connection pool per probe (a trigger keeps one for its life); close it with
    :meth:`aclose` or ``async with``.
    """

    def __init__(self, settings: ClarkySettings, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.limiter = limiter or RateLimiter.shared(settings.key_fingerprint, settings.requests_per_minute)
        self._client = httpx.AsyncClient(
            headers=settings.request_headers(),
            timeout=settings.timeout,
            follow_redirects=False,  # the key would go with a redirect
            trust_env=True,  # proxies and CA bundle from the environment, as the hook's Session
        )

    async def count(self, path: str, params: Mapping[str, str]) -> ListCount:
        """``GET path?params&page_size=1``: the list's ``total``. Raises the typed error of a
        failed request; a 429's ``Retry-After`` is in the error's ``details["retry_after"]``."""
        await self.limiter.acquire_async()
        url = self.settings.base_url + path
        query = {**params, "page_size": str(MIN_PAGE_SIZE)}
        try:
            response = await self._client.get(url, params=query)
            body = response.content
        except httpx.HTTPError as exc:
            raise network_error(
                exc,
                url,
                path,
                timeout=self.settings.timeout,
                scheme_assumed=self.settings.scheme_assumed,
                scrub=self.scrub,
            ) from None
        self.limiter.observe_headers(response.headers)
        check_answer(response.status_code, response.reason_phrase, response.headers, body, path, self.scrub)
        payload = json_object(response.status_code, body, path)
        return _list_count(payload, path, response.headers.get("Date"))

    def scrub(self, text: str) -> str:
        """Remove the key from any text that came from elsewhere (server bodies, library errors)."""
        return text.replace(self.settings.api_key, "***")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ListProbe:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _list_count(payload: dict[str, Any], path: str, date: str | None) -> ListCount:
    total = as_int((payload.get("pagination") or {}).get("total"))
    if total is None:
        raise ClarkyServerError("list answer has no pagination.total to count changes by", path=path)
    records = payload.get("data") or []
    sample = records[0] if isinstance(records, list) and records and isinstance(records[0], dict) else None
    return ListCount(total=total, sample=sample, server_time=_http_date(date))


def _http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` (RFC 9110: whole seconds, GMT) as an aware datetime; ``None`` if absent or
    unreadable."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
