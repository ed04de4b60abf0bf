"""What an answer that is not a page of data means: the typed error of an error answer, of a
redirect, and a 429's ``Retry-After``, from the status, headers and body alone.

Free of any HTTP client, so the hook's ``requests`` answers and the trigger's ``httpx`` ones
(the async probe) are read by the same rules: the error envelope's ``code``, ``message`` and
``details``, text scrubbed of the key, a 401 that says how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from clarky_provider.exceptions import (
    ClarkyConfigError,
    ClarkyServerError,
    error_class_for_status,
)
from clarky_provider.jsoncodec import loads

#: What a 401 means and how to fix it, added to the server's message.
UNAUTHORIZED_FIX = " - the key is invalid or revoked; rotate it in Clarky's Settings > API Keys."


def check_answer(
    status: int,
    reason: str | None,
    headers: Mapping[str, str],
    body: bytes,
    path: str,
    scrub: Callable[[str], str],
) -> None:
    """Raise the typed error of an answer that is not a success: a redirect, which is never
    followed (``redirect_error``), or an error (status 400 and up) from Clarky's error
    envelope, a 429 carrying its ``Retry-After`` in ``details["retry_after"]`` (seconds)."""
    if 300 <= status < 400:
        raise redirect_error(path, status, scrub(str(headers.get("Location"))))
    if status < 400:
        return
    code = message = None
    details: dict[str, Any] = {}
    try:
        envelope = loads(body).get("error") or {}
        code, message = envelope.get("code"), envelope.get("message")
        details = dict(envelope.get("details") or {})
    except (ValueError, AttributeError):
        message = f"{reason or 'error'} (non-JSON body, {len(body)} bytes)"
    if status == 429:
        details["retry_after"] = retry_after(headers.get("Retry-After"))
    message = scrub(str(message or reason or "error"))
    if status == 401:
        message += UNAUTHORIZED_FIX
    raise error_class_for_status(status)(message, status=status, code=code, details=details, path=path)


def json_object(status: int, body: bytes, path: str) -> dict[str, Any]:
    """A successful answer's body, which must be a JSON object (a truncated one is a server error)."""
    try:
        payload = loads(body)
    except ValueError:
        raise ClarkyServerError(
            f"HTTP {status} body is not valid JSON ({len(body)} bytes, truncated?)", path=path
        ) from None
    if not isinstance(payload, dict):
        raise ClarkyServerError("response body is not a JSON object", path=path)
    return payload


def redirect_error(path: str, status: int, location: str) -> ClarkyConfigError:
    """A redirect is never followed (the key would go with it): the Base URL is not the API's."""
    return ClarkyConfigError(
        f"Clarky answered {path} with HTTP {status}, a redirect to {location!r}, which the provider "
        "does not follow (the key would go with it). Set the connection's Base URL to the API's address."
    )


def retry_after(value: str | None) -> float:
    """``Retry-After`` in seconds (Clarky documents seconds; anything unreadable means 1 s)."""
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0
