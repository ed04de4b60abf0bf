"""Turn the API's inconsistent values into one shape (SPEC section 9).

E-mails and phone numbers arrive as objects or as plain strings, timestamps with or without
milliseconds, and any field may be missing. These helpers are pure and cheap: they run once
per record on the hot path.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from clarky_provider.exceptions import ClarkyConfigError


def parse_timestamp(value: Any) -> datetime | None:
    """Parse an ISO 8601 value (``...Z``, ``...000Z``, offsets) into an aware UTC datetime."""
    if value is None or value == "":
        return None
    if value.__class__ is str:  # hot path: "...Z" parses as it is on Python 3.11+
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is timezone.utc:
            return parsed
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def require_timestamp(value: Any, name: str) -> datetime:
    """Parse a user-supplied timestamp; a ``ClarkyConfigError`` naming the parameter if it is not one."""
    try:
        dt = parse_timestamp(value)
    except (TypeError, ValueError):
        dt = None
    if dt is None:
        raise ClarkyConfigError(
            f"{name}={value!r} is not an ISO 8601 timestamp; pass a datetime or a string such as "
            "'2026-01-15T10:00:00Z'."
        )
    return dt


def format_timestamp(value: Any, *, name: str = "timestamp") -> str:
    """Format a datetime, pendulum DateTime or ISO string as the UTC ``Z`` string the API takes.

    Naive datetimes are taken as UTC. Malformed strings raise before any request is sent.
    """
    dt = require_timestamp(value, name)
    millis = dt.microsecond // 1000
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{millis:03d}Z" if millis else f"{base}Z"


def minus_one_millisecond(value: datetime) -> datetime:
    """The last instant before ``value`` at the API's precision: turns an exclusive end inclusive."""
    return value - timedelta(milliseconds=1)


def _primary(items: Any, key: str) -> str | None:
    """Pick the primary entry of a list that holds either objects ``{key, is_primary}`` or strings."""
    if not isinstance(items, list) or not items:
        return None
    first: str | None = None
    for item in items:
        if isinstance(item, dict):
            value = item.get(key)
            if item.get("is_primary") and value:
                return str(value)
        else:
            value = item
        if first is None and value:
            first = str(value)
    return first


def primary_email(record: dict[str, Any]) -> str | None:
    """The primary e-mail, from either documented shape; the first one when none is flagged."""
    return _primary(record.get("emails"), "email")


def primary_phone(record: dict[str, Any]) -> str | None:
    """The primary phone number, with the same tolerance as :func:`primary_email`."""
    return _primary(record.get("phone_numbers"), "phone_number")
