"""Typed errors for the Clarky API.

Clarky wraps every error in ``{"error": {"code", "message", "details"}}``; callers branch on
the class (or ``code``), never on the message. No exception here ever carries the API key.
"""

from __future__ import annotations

from typing import Any

from clarky_provider.compat import AirflowException, AirflowFailException


class ClarkyError(AirflowException):
    """Base class of every error raised by this provider."""


class ClarkyConfigError(ClarkyError, AirflowFailException, ValueError):
    """Bad local input (connection, filter, table name...) detected before any request.

    An ``AirflowFailException``: retrying the task cannot fix it, so Airflow does not.
    """


class ClarkyLoadError(ClarkyError):
    """The warehouse refused the load (constraint, disk full, lost connection); nothing was written."""


class ClarkyIncompleteReadError(ClarkyError):
    """A list read ended short of the ``total`` the API reported, after every recovery allowed.

    Not an ``AirflowFailException``: the list's order may hold on a later try.
    """

    def __init__(
        self,
        resource: str,
        *,
        seen: int,
        total: int,
        parent_id: str | None,
        effort: str,
        consequence: str = "",
    ) -> None:
        self.resource, self.seen, self.total, self.parent_id = resource, seen, total, parent_id
        self.effort = effort
        self.missing = total - seen
        where = f"{resource} of {parent_id}" if parent_id else resource
        super().__init__(
            f"Clarky {where}: read {seen} of the {total} records the API reported ({self.missing} missing) "
            f"after {effort}. The list's order kept changing between page requests (or records kept "
            "moving), so a complete read could not be proven. "
            + (consequence + " " if consequence else "")
            + "Retry later; if it persists, load in smaller windows (window_start/window_end) or report "
            "it to Clarky support."
        )

    def with_consequence(self, consequence: str) -> ClarkyIncompleteReadError:
        """The same error, saying what it means for the load it stopped."""
        return ClarkyIncompleteReadError(
            self.resource,
            seen=self.seen,
            total=self.total,
            parent_id=self.parent_id,
            effort=self.effort,
            consequence=consequence,
        )


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
    """5xx, broken connections, timeouts and undecodable bodies: transient, retried with backoff."""

    retryable = True


class ClarkyConnectionError(ClarkyAPIError):
    """No connection could be made (refused, unknown host, proxy failure, connect timeout).

    Retried briefly (a restarting gateway), then reported with the URL tried: most often the
    connection's Base URL is wrong or the worker cannot reach it.
    """

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
