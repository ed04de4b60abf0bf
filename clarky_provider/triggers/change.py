"""ClarkyChangeTrigger: an event when a Clarky resource changed, for Airflow's event-driven scheduling.

An Asset with ``AssetWatcher(name=..., trigger=ClarkyChangeTrigger(...))`` runs the DAGs
scheduled on it when the trigger fires. Each poll spends one request of the key's budget,
``GET /contacts?updated_after=<mark>&page_size=1``, and reads ``total``: how many contacts
changed at or after the mark (:mod:`.mark` says how the mark moves). The resource's path,
change filter and change field come from the catalog. docs/triggers.md has the whole story.

The trigger runs in the triggerer, on one event loop with every other trigger: the poll is an
``httpx`` request and the pacing an ``asyncio`` wait (:class:`~.hooks.probe.ListProbe`); only
reading the connection, once per start, runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

from clarky_provider.compat import BaseEventTrigger, TriggerEvent
from clarky_provider.exceptions import (
    ClarkyAPIError,
    ClarkyAuthError,
    ClarkyConfigError,
    ClarkyError,
    ClarkyPermissionError,
    ClarkyRateLimitError,
)
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.hooks.probe import ListCount, ListProbe
from clarky_provider.hooks.settings import ClarkySettings
from clarky_provider.normalize import format_timestamp, require_timestamp
from clarky_provider.resources import RESOURCES, Resource, encode_filters, get_resource
from clarky_provider.triggers.mark import Change, ChangeMark

#: Default seconds between polls: 1,440 requests a day, 0.8% of a 120-per-minute key's budget.
DEFAULT_POLL_INTERVAL = 60.0
#: Default overlap, in seconds, of one poll's count with the next (see :mod:`.mark`).
DEFAULT_OVERLAP = 5.0

#: When a trigger of a connection last ended on an error waiting cannot fix, in this process.
#: The triggerer restarts a trigger that ended within about a second; a restart on such a
#: connection waits out one poll interval first, so a revoked key costs one request a poll,
#: as a healthy trigger does, instead of one a second.
_fatal_errors: dict[str, float] = {}


def watchable_resources() -> list[str]:
    """Resources whose lists can be counted by change time (a change filter and field in the catalog)."""
    return sorted(name for name, res in RESOURCES.items() if _watchable(res))


def _watchable(res: Resource) -> bool:
    return (
        res.incremental_filter is not None
        and res.cursor_field is not None
        and res.parent_key is None
        and res.paginated
    )


class ClarkyChangeTrigger(BaseEventTrigger):
    """Fires when records of a Clarky resource changed, polling with one request per poll.

    The event's payload: ``resource``, ``changed`` (records changed at or after ``since``),
    ``since`` and ``mark`` (the next poll's bound), ISO 8601 UTC. It never holds the key, nor
    does :meth:`serialize` (the connection id only).

    :param resource: a resource with a change filter in the catalog (``contacts``).
    :param clarky_conn_id: the ``clarky`` connection; its key's budget is shared with the syncs
        on this host.
    :param poll_interval: seconds between polls (each one request).
    :param overlap: seconds each poll's count overlaps the previous one's, for changes that
        become visible a little after their ``updated_at`` (see docs/triggers.md).
    :param since: count changes from this time at the first poll instead of from the trigger's
        start. The DAG file fixes it, so every restart of the trigger counts from it again:
        leave it unset in an ``AssetWatcher``.
    """

    def __init__(
        self,
        resource: str = "contacts",
        clarky_conn_id: str = ClarkyHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        overlap: float = DEFAULT_OVERLAP,
        since: datetime | str | None = None,
    ) -> None:
        super().__init__()
        res = get_resource(resource)
        if not _watchable(res):
            raise ClarkyConfigError(
                f"ClarkyChangeTrigger cannot watch {res.name!r}: its list has no change filter in "
                f"the API. Resources it can watch: {', '.join(watchable_resources())}."
            )
        if not float(poll_interval) > 0:
            raise ClarkyConfigError(
                f"poll_interval must be a positive number of seconds, got {poll_interval!r}."
            )
        if not float(overlap) >= 0:
            raise ClarkyConfigError(f"overlap must be zero or more seconds, got {overlap!r}.")
        self.resource = res.name
        self.clarky_conn_id = clarky_conn_id
        self.poll_interval = float(poll_interval)
        self.overlap = float(overlap)
        # kept as the API's string: the kwargs identify the trigger, so they must not vary by parse
        self.since = None if since is None else format_timestamp(since, name="since")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Only what re-creates the trigger: the connection id, never its key."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "resource": self.resource,
                "clarky_conn_id": self.clarky_conn_id,
                "poll_interval": self.poll_interval,
                "overlap": self.overlap,
                "since": self.since,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until cancelled; yield an event for every poll that found changes."""
        await self._wait_out_a_recent_fatal_error()
        res = get_resource(self.resource)
        try:
            settings = await _read_settings(self.clarky_conn_id)
            async with ListProbe(settings) as probe:
                async for change in self._changes(probe, res):
                    yield TriggerEvent(self._payload(change))
        except Exception as exc:  # a missing connection too: the triggerer restarts us at once
            _fatal_errors[self.clarky_conn_id] = time.monotonic()
            if isinstance(exc, ClarkyError):
                raise self._explained(exc) from None
            raise

    async def _changes(self, probe: ListProbe, res: Resource) -> AsyncIterator[Change]:
        """The changes each poll finds, one request per poll, at a steady cadence."""
        overlap = timedelta(seconds=self.overlap)
        first = require_timestamp(self.since, "since") if self.since else datetime.now(timezone.utc) - overlap
        mark = ChangeMark(first, overlap, res.primary_key, res.cursor_field or "")
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        failures = 0
        while True:
            seen = await self._poll(probe, res, mark, failures)
            if seen is None:
                failures += 1
            else:
                failures = 0
                self.log.debug(
                    "Clarky %s: %d changed at or after %s", res.name, seen.total, format_timestamp(mark.bound)
                )
                change = mark.after(seen, datetime.now(timezone.utc))
                if change is not None:
                    yield change
            next_poll = max(next_poll + self.poll_interval, loop.time())
            await asyncio.sleep(next_poll - loop.time())

    async def _poll(
        self, probe: ListProbe, res: Resource, mark: ChangeMark, failures: int
    ) -> ListCount | None:
        """One probe; ``None`` when it failed in a way a later poll can get past (a 429, a 5xx,
        a network error), after pausing the key's budget for a 429's ``Retry-After``."""
        params = encode_filters(res, {res.incremental_filter or "": mark.bound})
        try:
            return await probe.count(res.path, params)
        except ClarkyAPIError as exc:
            if not exc.retryable:
                raise
            if isinstance(exc, ClarkyRateLimitError):
                retry_after = float(exc.details.get("retry_after", 1.0))
                wait = retry_after + random.uniform(0, min(1.0, 0.1 * retry_after))
                probe.limiter.pause(wait)  # the syncs on this host sharing the key wait too
                reason = f"rate limited (429), Retry-After {retry_after:g}s: the next poll waits for it"
            else:
                reason = (
                    exc.message.rstrip(".")
                    if exc.status is None
                    else f"HTTP {exc.status} {exc.code or ''}".strip()
                )
            self.log.warning(
                "Clarky %s change poll %d in a row failed (%s); polling again in %gs, from the same mark",
                res.name,
                failures + 1,
                reason,
                self.poll_interval,
            )
            return None

    def _payload(self, change: Change) -> dict[str, Any]:
        self.log.info(
            "Clarky %s: %d changed at or after %s; next poll counts from %s",
            self.resource,
            change.changed,
            format_timestamp(change.since),
            format_timestamp(change.mark),
        )
        return {
            "resource": self.resource,
            "changed": change.changed,
            "since": format_timestamp(change.since),
            "mark": format_timestamp(change.mark),
        }

    def _explained(self, exc: ClarkyError) -> ClarkyError:
        """The error a user reads in the triggerer's log: what to fix, on which connection."""
        where = f"ClarkyChangeTrigger on connection {self.clarky_conn_id!r} stopped"
        if isinstance(exc, ClarkyAuthError):
            return ClarkyAuthError(
                f"{where}: Clarky rejected the API key (401, invalid or revoked). Create a key in "
                "Clarky's Settings > API Keys and put it in the connection's password field; the "
                "triggerer restarts the trigger, which reads the connection again.",
                status=exc.status,
                code=exc.code,
                path=exc.path,
            )
        if isinstance(exc, ClarkyPermissionError):
            return ClarkyPermissionError(
                f"{where}: the API key may not read {exc.path} (403). Use a key with the read scope.",
                status=exc.status,
                code=exc.code,
                path=exc.path,
            )
        return type(exc)(f"{where}: {exc}") if isinstance(exc, ClarkyConfigError) else exc

    async def _wait_out_a_recent_fatal_error(self) -> None:
        failed_at = _fatal_errors.get(self.clarky_conn_id)
        if failed_at is not None:
            await asyncio.sleep(max(0.0, failed_at + self.poll_interval - time.monotonic()))


async def _read_settings(conn_id: str) -> ClarkySettings:
    """The hook's checked settings of the connection, read in a worker thread: a connection
    lookup is synchronous, and the triggerer's event loop must not wait on it."""
    from asgiref.sync import sync_to_async

    def read() -> ClarkySettings:
        return ClarkyHook(conn_id).settings

    return await sync_to_async(read)()
