"""Typed errors for the Clarky API.

Clarky wraps every error in ``{"error": {"code", "message", "details"}}``; callers branch on
the class (or ``code``), never on the message. No exception here ever carries the API key.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class ClarkyError(AirflowException):
    """Base class of every error raised by this provider."""


class ClarkyConfigError(ClarkyError, AirflowFailException, ValueError):
    """Bad local input (connection, filter, table name...) detected before any request.

    An ``AirflowFailException``: retrying the task cannot fix it, so Airflow does not.
    """


class ClarkyLoadError(ClarkyError):
    """The warehouse refused the load (constraint, disk full, lost connection); nothing was written."""


class ClarkyAPIError(ClarkyError):
    """An error answer from the Clarky API, parsed from its error envelope."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        path: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.path = path
        where = f" on GET {path}" if path else ""
        label = f"HTTP {status}" if status else "request failed"
        code_part = f" {code}" if code else ""
        super().__init__(f"Clarky API {label}{code_part}{where}: {message}")


class ClarkyBadRequestError(ClarkyAPIError):
    """400 ``bad_request`` or 422 ``validation_error``: the request itself is wrong."""


class ClarkyAuthError(ClarkyAPIError, AirflowFailException):
    """401: the key is missing, malformed, unknown or revoked. Rotate the key (no task retries)."""


class ClarkyPermissionError(ClarkyAPIError, AirflowFailException):
    """403: the key is valid but lacks the scope for this call (no task retries)."""


class ClarkyNotFoundError(ClarkyAPIError):
    """404: the record does not exist or belongs to another workspace."""


class ClarkyRateLimitError(ClarkyAPIError):
    """429 that persisted after every retry allowed."""

    retryable = True


class ClarkyServerError(ClarkyAPIError):
    """5xx, network failures, timeouts and undecodable bodies: transient, retried with backoff."""

    retryable = True


_BY_STATUS: dict[int, type[ClarkyAPIError]] = {
    400: ClarkyBadRequestError,
    401: ClarkyAuthError,
    403: ClarkyPermissionError,
    404: ClarkyNotFoundError,
    409: ClarkyBadRequestError,
    422: ClarkyBadRequestError,
    429: ClarkyRateLimitError,
}


def error_class_for_status(status: int) -> type[ClarkyAPIError]:
    """Map an HTTP status to the exception class that represents it."""
    if status >= 500:
        return ClarkyServerError
    return _BY_STATUS.get(status, ClarkyAPIError)
