"""What a request that got no answer means: ``requests``' exceptions as typed errors that name
the URL tried and the likely fix.

Retrying helps a reset connection or a slow server, not a TLS handshake with a plain-HTTP port,
a malformed URL or a certificate nobody trusts: those are configuration errors, raised at once.
A refused connection or an unknown host is a connection problem (retried briefly by the hook),
not a server error: nothing answered.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import requests
from urllib3.exceptions import NewConnectionError

from clarky_provider.exceptions import (
    ClarkyConfigError,
    ClarkyConnectionError,
    ClarkyError,
    ClarkyServerError,
)


def network_error(
    exc: requests.RequestException,
    url: str,
    path: str,
    *,
    timeout: float,
    scheme_assumed: bool,
    scrub: Callable[[str], str],
) -> ClarkyError:
    """The typed error for ``exc``, raised while requesting ``url`` (no query string). Library
    text passes through ``scrub``, which removes the key wherever it might appear."""
    chain = _chain(exc)
    cause = chain[-1]
    detail = scrub(f"{type(cause).__name__}: {cause}")[:300]
    if isinstance(exc, requests.exceptions.SSLError):
        if "WRONG_VERSION_NUMBER" in detail.upper() or "RECORD_LAYER_FAILURE" in detail.upper():
            assumed = "The Base URL has no scheme, so https was assumed. " if scheme_assumed else ""
            return ClarkyConfigError(
                f"{url} does not speak TLS: the server on that port answered in plain HTTP. {assumed}"
                "If the API is served over plain HTTP, start the connection's Base URL with http://."
            )
        if "CERTIFICATE_VERIFY_FAILED" in detail.upper():
            return ClarkyConfigError(
                f"The TLS certificate of {url} could not be verified ({detail}). If the API sits behind "
                "a proxy or gateway with a private CA, point REQUESTS_CA_BUNDLE at that CA's bundle."
            )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ClarkyConnectionError(
            f"could not connect to {url} within {timeout:g}s. Check the connection's Base URL (host "
            "and port) and that this worker can reach it (firewall, proxy settings).",
            path=path,
        )
    if isinstance(exc, requests.Timeout):
        return ClarkyServerError(f"no answer from {url} within {timeout:g}s (timeout)", path=path)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)):
        socks = "SOCKS" in str(exc)
        fix = (
            "The environment names a SOCKS proxy: install requests[socks], or add the API's host to NO_PROXY."
            if socks
            else "Check the connection's Base URL and any proxy variables (HTTPS_PROXY, ALL_PROXY)."
        )
        return ClarkyConfigError(
            f"Cannot send a request to {url}: {scrub(str(exc))[:300].rstrip('.')}. {fix}"
        )
    if isinstance(exc, requests.exceptions.ProxyError):
        return ClarkyConnectionError(
            f"the proxy refused or failed the request to {url} ({detail}). Check HTTPS_PROXY / "
            "HTTP_PROXY, or add the API's host to NO_PROXY.",
            path=path,
        )
    if isinstance(exc, requests.ConnectionError) and _never_connected(chain):
        return ClarkyConnectionError(
            f"could not connect to {url} ({scrub(_plain_reason(cause))}). Check the connection's Base URL "
            "(host and port) and that the API is reachable from this worker.",
            path=path,
        )
    return ClarkyServerError(f"network error talking to {url} ({detail})", path=path)


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
