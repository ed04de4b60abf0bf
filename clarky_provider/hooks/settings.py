"""The ``clarky`` connection's settings, read and checked once, before any request.

Errors name the extra and the fix, never the key; the key never appears in a ``repr``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clarky_provider.connection_form import EXTRA_DEFAULTS
from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.resources import API_PREFIX, DEFAULT_HOST, KEY_LENGTHS, KEY_PREFIX, MAX_PAGE_SIZE


@dataclass(frozen=True)
class ClarkySettings:
    """Validated connection settings; ``repr`` never shows the key."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = float(EXTRA_DEFAULTS["timeout"])
    page_size: int = int(EXTRA_DEFAULTS["page_size"])
    max_retries: int = int(EXTRA_DEFAULTS["max_retries"])
    requests_per_minute: float = float(EXTRA_DEFAULTS["requests_per_minute"])
    max_concurrency: int = int(EXTRA_DEFAULTS["max_concurrency"])
    retry_backoff: float = float(EXTRA_DEFAULTS["retry_backoff"])

    @property
    def key_fingerprint(self) -> str:
        """A non-reversible id of the key, safe to log and to key shared limiters by."""
        return hashlib.sha256(self.api_key.encode()).hexdigest()[:12]


def validate_api_key(key: str | None) -> str:
    """Check the key's shape before any request; errors say what to fix, never the key.

    They say "the API key", not the connection id: a connection tested from the UI or the REST
    API has a random temporary id that would mean nothing to the user.
    """
    if not key:
        raise ClarkyConfigError(
            f"The connection has no API key. Put your Clarky key ({KEY_PREFIX}...) in the "
            "connection's password field (labelled 'API key')."
        )
    key = key.strip()
    if not key.startswith(KEY_PREFIX):
        raise ClarkyConfigError(
            f"The API key does not start with {KEY_PREFIX!r}. Copy the full key from Clarky's "
            "Settings > API Keys into the connection's password field (labelled 'API key')."
        )
    if len(key) not in KEY_LENGTHS:
        raise ClarkyConfigError(
            f"The API key is {len(key)} characters long; Clarky keys are "
            f"{KEY_LENGTHS[0]}-{KEY_LENGTHS[-1]}. It was probably truncated or has extra characters: "
            "paste it again into the connection's password field."
        )
    return key


def _base_url(host: str | None) -> str:
    url = (host or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def _int_extra(extras: Mapping[str, Any], name: str, conn_id: str, low: int, high: int | None) -> int:
    value = extras.get(name, EXTRA_DEFAULTS[name])
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ClarkyConfigError(
            f"Extra {name!r} of connection {conn_id!r} must be an integer, got {value!r}."
        ) from None
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ClarkyConfigError(f"Extra {name!r} of connection {conn_id!r} must be {bounds}, got {number}.")
    return number


def _float_extra(extras: Mapping[str, Any], name: str, conn_id: str) -> float:
    value = extras.get(name, EXTRA_DEFAULTS[name])
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number <= 0:
        raise ClarkyConfigError(
            f"Extra {name!r} of connection {conn_id!r} must be a positive number, got {value!r}."
        )
    return number


def read_settings(
    host: str | None, password: str | None, extras: Mapping[str, Any], conn_id: str
) -> ClarkySettings:
    """Validated settings from a connection's fields and extras (with any overrides merged in)."""
    return ClarkySettings(
        base_url=_base_url(host),
        api_key=validate_api_key(password),
        timeout=_float_extra(extras, "timeout", conn_id),
        page_size=_int_extra(extras, "page_size", conn_id, 1, MAX_PAGE_SIZE),
        max_retries=_int_extra(extras, "max_retries", conn_id, 0, None),
        requests_per_minute=_float_extra(extras, "requests_per_minute", conn_id),
        max_concurrency=_int_extra(extras, "max_concurrency", conn_id, 1, 32),
        retry_backoff=_float_extra(extras, "retry_backoff", conn_id),
    )
