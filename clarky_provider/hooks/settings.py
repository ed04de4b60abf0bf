"""The ``clarky`` connection's settings, read and checked once, before any request.

Errors name the extra and the fix, never the key; the key never appears in a ``repr``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from clarky_provider import __version__
from clarky_provider.connection_form import EXTRA_DEFAULTS
from clarky_provider.exceptions import ClarkyConfigError
from clarky_provider.resources import (
    API_PREFIX,
    DEFAULT_HOST,
    KEY_LENGTHS,
    KEY_PREFIX,
    MAX_PAGE_SIZE,
    MIN_PAGE_SIZE,
)


@dataclass(frozen=True)
class ClarkySettings:
    """Validated connection settings; ``repr`` never shows the key."""

    base_url: str
    api_key: str = field(repr=False)
    #: The Base URL had no scheme and https was assumed (errors say so: a plain-HTTP port
    #: answers TLS with garbage).
    scheme_assumed: bool = False
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

    def request_headers(self) -> dict[str, str]:
        """What every request carries: the bearer key, JSON, and who is asking (the hook's
        Session and the async probe send the same)."""
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "User-Agent": f"airflow-provider-clarky/{__version__}",
        }


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


def _base_url(host: str | None) -> tuple[str, bool]:
    """The API's base URL and whether its scheme was assumed; a URL requests could not use is
    refused here, before any request, instead of failing (and being retried) on every one."""
    url = (host or DEFAULT_HOST).strip()
    assumed = "://" not in url
    url = ("https://" + url if assumed else url).rstrip("/")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ClarkyConfigError(
            f"The connection's Base URL {host!r} is not an http(s) URL with a host. Set it to the "
            f"API's address, e.g. {DEFAULT_HOST} or http://127.0.0.1:8080 (/api/v1 is appended)."
        )
    return (url if url.endswith(API_PREFIX) else url + API_PREFIX), assumed


#: Names a setting by where its value came from: "Extra 'page_size' of connection 'x'",
#: "clarky_hook_params 'page_size'".
Label = Callable[[str], str]


def _int_setting(low: int, high: int | None) -> Callable[[Mapping[str, Any], str, Label], int]:
    def check(values: Mapping[str, Any], name: str, label: Label) -> int:
        value = values.get(name, EXTRA_DEFAULTS[name])
        try:
            number = int(value)
            if number != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise ClarkyConfigError(f"{label(name)} must be an integer, got {value!r}.") from None
        if number < low or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ClarkyConfigError(f"{label(name)} must be {bounds}, got {number}.")
        return number

    return check


def _positive_number(values: Mapping[str, Any], name: str, label: Label) -> float:
    value = values.get(name, EXTRA_DEFAULTS[name])
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number <= 0:
        raise ClarkyConfigError(f"{label(name)} must be a positive number, got {value!r}.")
    return number


#: How each setting (a connection extra, or a per-task override) is checked.
_CHECKS: dict[str, Callable[[Mapping[str, Any], str, Label], Any]] = {
    "timeout": _positive_number,
    "page_size": _int_setting(MIN_PAGE_SIZE, MAX_PAGE_SIZE),
    "max_retries": _int_setting(0, None),
    "requests_per_minute": _positive_number,
    "max_concurrency": _int_setting(1, 32),
    "retry_backoff": _positive_number,
}


def check_overrides(overrides: Mapping[str, Any], source: str, *, also_valid: tuple[str, ...] = ()) -> None:
    """Check per-task overrides of the extras before anything runs; errors name ``source``
    (``clarky_hook_params``, ``ClarkyHook``), where the user has to fix them."""
    unknown = sorted(set(overrides) - set(_CHECKS) - set(also_valid))
    if unknown:
        valid = ", ".join([*also_valid, *_CHECKS])
        raise ClarkyConfigError(f"{source} has no {', '.join(unknown)}; valid names: {valid}.")
    for name in set(overrides) & set(_CHECKS):
        _CHECKS[name](overrides, name, lambda setting: f"{source} {setting!r}")


def read_settings(
    host: str | None,
    password: str | None,
    extras: Mapping[str, Any],
    conn_id: str,
    overrides: Mapping[str, Any] | None = None,
) -> ClarkySettings:
    """Validated settings from a connection's fields and extras; ``overrides`` (already checked
    by :func:`check_overrides`) take precedence."""
    values = {**extras, **(overrides or {})}

    def label(name: str) -> str:
        return f"Extra {name!r} of connection {conn_id!r}"

    base_url, scheme_assumed = _base_url(host)
    checked = {name: check(values, name, label) for name, check in _CHECKS.items()}
    return ClarkySettings(
        base_url=base_url, api_key=validate_api_key(password), scheme_assumed=scheme_assumed, **checked
    )
