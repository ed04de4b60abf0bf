"""What a request that got no answer means: the HTTP client's exceptions as typed errors that
name the URL tried and the likely fix.

Retrying helps a reset connection or a slow server, not a TLS handshake with a plain-HTTP port,
a malformed URL or a certificate nobody trusts: those are configuration errors, raised at once.
A refused connection or an unknown host is a connection problem (retried briefly by the hook),
not a server error: nothing answered.

Two clients send Clarky requests: the hook's ``requests`` Session and the trigger's async
``httpx`` probe. Each has its own exception classes, sorted here into the same failures, which
:class:`_Failure` words once for both.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests
from urllib3.exceptions import NewConnectionError

from clarky_provider.exceptions import (
    ClarkyConfigError,
    ClarkyConnectionError,
    ClarkyError,
    ClarkyServerError,
)

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class _Failure:
    """One request that got no answer, and the typed error for each way that happens."""

    url: str
    path: str
    timeout: float
    scheme_assumed: bool
    #: the innermost cause as text, key removed
    detail: str

    def tls(self) -> ClarkyError | None:
        """A TLS failure that retrying cannot fix, or ``None`` for one it might."""
        if "WRONG_VERSION_NUMBER" in self.detail.upper() or "RECORD_LAYER_FAILURE" in self.detail.upper():
            assumed = "The Base URL has no scheme, so https was assumed. " if self.scheme_assumed else ""
            return ClarkyConfigError(
                f"{self.url} does not speak TLS: the server on that port answered in plain HTTP. {assumed}"
                "If the API is served over plain HTTP, start the connection's Base URL with http://."
            )
        if "CERTIFICATE_VERIFY_FAILED" in self.detail.upper():
            return ClarkyConfigError(
                f"The TLS certificate of {self.url} could not be verified ({self.detail}). If the API sits "
                "behind a proxy or gateway with a private CA, point REQUESTS_CA_BUNDLE at that CA's bundle."
            )
        return None

    def connect_timeout(self) -> ClarkyError:
        return ClarkyConnectionError(
            f"could not connect to {self.url} within {self.timeout:g}s. Check the connection's Base URL "
            "(host and port) and that this worker can reach it (firewall, proxy settings).",
            path=self.path,
        )

    def read_timeout(self) -> ClarkyError:
        return ClarkyServerError(
            f"no answer from {self.url} within {self.timeout:g}s (timeout)", path=self.path
        )

    def unusable_url(self, reason: str, *, socks: bool = False) -> ClarkyError:
        fix = (
            "The environment names a SOCKS proxy: install requests[socks], or add the API's host to NO_PROXY."
            if socks
            else "Check the connection's Base URL and any proxy variables (HTTPS_PROXY, ALL_PROXY)."
        )
        return ClarkyConfigError(f"Cannot send a request to {self.url}: {reason[:300].rstrip('.')}. {fix}")

    def proxy(self) -> ClarkyError:
        return ClarkyConnectionError(
            f"the proxy refused or failed the request to {self.url} ({self.detail}). Check HTTPS_PROXY / "
            "HTTP_PROXY, or add the API's host to NO_PROXY.",
            path=self.path,
        )

    def not_connected(self, reason: str) -> ClarkyError:
        return ClarkyConnectionError(
            f"could not connect to {self.url} ({reason}). Check the connection's Base URL "
            "(host and port) and that the API is reachable from this worker.",
            path=self.path,
        )

    def other(self) -> ClarkyError:
        return ClarkyServerError(f"network error talking to {self.url} ({self.detail})", path=self.path)


def network_error(
    exc: requests.RequestException | httpx.HTTPError,
    url: str,
    path: str,
    *,
    timeout: float,
    scheme_assumed: bool,
    scrub: Callable[[str], str],
) -> ClarkyError:
    """The typed error for ``exc``, raised by ``requests`` (the hook) or ``httpx`` (the async
    probe) while requesting ``url`` (no query string). Library text passes through ``scrub``,
    which removes the key wherever it might appear."""
    chain = _chain(exc)
    failure = _Failure(url, path, timeout, scheme_assumed, _detail(chain, scrub))
    if isinstance(exc, requests.RequestException):
        return _requests_error(exc, chain, failure, scrub)
    return _httpx_error(exc, chain, failure, scrub)


def _requests_error(
    exc: requests.RequestException, chain: list[BaseException], failure: _Failure, scrub: Callable[[str], str]
) -> ClarkyError:
    tls = failure.tls() if isinstance(exc, requests.exceptions.SSLError) else None
    if tls is not None:
        return tls
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return failure.connect_timeout()
    if isinstance(exc, requests.Timeout):
        return failure.read_timeout()
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)):
        return failure.unusable_url(scrub(str(exc)), socks="SOCKS" in str(exc))
    if isinstance(exc, requests.exceptions.ProxyError):
        return failure.proxy()
    if isinstance(exc, requests.ConnectionError) and _never_connected(chain):
        return failure.not_connected(scrub(_plain_reason(chain[-1])))
    return failure.other()


def _httpx_error(
    exc: httpx.HTTPError, chain: list[BaseException], failure: _Failure, scrub: Callable[[str], str]
) -> ClarkyError:
    import httpx

    tls = failure.tls() if any(isinstance(e, ssl.SSLError) for e in chain) else None
    if tls is not None:
        return tls
    if isinstance(exc, httpx.ConnectTimeout):
        return failure.connect_timeout()
    if isinstance(exc, httpx.TimeoutException):
        return failure.read_timeout()
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return failure.unusable_url(scrub(str(exc)))
    if isinstance(exc, httpx.ProxyError):
        return failure.proxy()
    if isinstance(exc, httpx.ConnectError):
        return failure.not_connected(scrub(_plain_reason(chain[-1])))
    return failure.other()


def _detail(chain: list[BaseException], scrub: Callable[[str], str]) -> str:
    cause = chain[-1]
    return scrub(f"{type(cause).__name__}: {cause}")[:300]


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, outermost first: requests wraps urllib3's error (in ``args`` or
    ``reason``), which wraps the socket's."""
    chain = [exc]
    while len(chain) < 10:
        current = chain[-1]
        inner = getattr(current, "reason", None) or current.__cause__ or current.__context__
        if inner is None and current.args and isinstance(current.args[0], BaseException):
            inner = current.args[0]
        if not isinstance(inner, BaseException) or inner in chain:
            break
        chain.append(inner)
    return chain


def _never_connected(chain: list[BaseException]) -> bool:
    """No connection was made (refused, unknown host, unreachable), as opposed to one that broke."""
    return any(isinstance(e, (NewConnectionError, ConnectionRefusedError, socket.gaierror)) for e in chain)


def _plain_reason(cause: BaseException) -> str:
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused: nothing listens on that port"
    if isinstance(cause, socket.gaierror):
        return "the host name does not resolve"
    text = str(cause)
    return f"{type(cause).__name__}: {text}"[:200]
