"""The bill before paying it: how many requests a read takes and how long at the key's budget.

Logged once a read knows its size (the first page of the list gives ``total_pages``; the
first page of the parents' list gives the number of child lists), so a user sees at the top
of the task log whether a run takes seconds or hours, and why.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """``45s``, ``3m12s``, ``7h05m``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 request``, ``3 requests``, ``1 retry``, ``2 retries``."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


def log_list_bill(resource: str, records: int, pages: int, requests_per_minute: float) -> None:
    log.info(
        "Clarky %s: %s in %s: %s, at least %s at %g requests/minute",
        resource,
        plural(records, "record"),
        plural(pages, "page"),
        plural(pages, "request"),
        duration(60 * pages / requests_per_minute),
        requests_per_minute,
    )


def log_fan_out_bill(
    resource: str,
    parent: str,
    parents: int,
    parent_pages: int,
    requests_per_minute: float,
    *,
    since: str | None,
    done: int = 0,
    recheck: float = 0.0,
) -> None:
    """A child resource costs the parents' pages plus at least one request per parent it reads;
    ``done`` parents were read by an earlier try of a resumed load and are not read again. An
    incremental read with a rotation (``recheck``: the share of parents re-read whole) adds
    about that share of the parents' lists."""
    if since is None:
        left = max(0, parents - done)
        requests = parent_pages + left
        which = f"one list for each of the {parents} {parent}"
    else:
        rechecked = round(recheck * parents)
        requests = parent_pages + rechecked
        which = f"one list for each of the {parent} changed since {since} (at most {parents})"
        if recheck:
            which += (
                f", plus about {plural(rechecked, 'list')} re-read whole by the rotation "
                f"(recheck_fraction {recheck:.4g} of {parents})"
            )
    if done:
        which += f", {done} of them already read by an earlier try"
    log.info(
        "Clarky %s: %s of %s, then %s: at least %s, %s at %g requests/minute",
        resource,
        plural(parent_pages, "page"),
        parent,
        which,
        plural(requests, "request"),
        duration(60 * requests / requests_per_minute),
        requests_per_minute,
    )


def log_by_id_bill(resource: str, ids: int, parent: str | None, requests_per_minute: float) -> None:
    """A targeted read: one request per record (item endpoint), or per parent's list (at least)."""
    what = plural(ids, "record") if parent is None else f"the lists of {plural(ids, parent.rstrip('s'))}"
    log.info(
        "Clarky %s: %s by id: %s%s, %s at %g requests/minute",
        resource,
        what,
        "" if parent is None else "at least ",
        plural(ids, "request"),
        duration(60 * ids / requests_per_minute),
        requests_per_minute,
    )
