"""The hook's HTTP client: pooled urllib3 connections, the environment's proxy and CA bundle.

A list read is a JSON GET per page, and a first load is bound by this process's CPU, not by
the API: ``requests`` spent about 1 ms of CPU a page on what such a read never uses (cookie
jars, redirect resolution, hooks, request preparation), a quarter of a 20,000-contact load
into SQLite (docs/benchmarks.md). This client sends the request through urllib3, the pool
``requests`` itself uses, and keeps what ``requests`` would have taken from the environment:
``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (HTTP proxies) and ``NO_PROXY``, and
``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` (else certifi's bundle). Redirects are not
followed: the key would go with them.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

from clarky_provider.exceptions import ClarkyConfigError


@dataclass(frozen=True)
class Response:
    """One answer: status, case-insensitive headers and the whole (decompressed) body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


class TransportError(Exception):
    """No answer: the connection failed or broke, or the server did not answer in time."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class HttpClient:
    """Requests to one base URL with fixed headers, at most ``max_connections`` open at once."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], timeout: float, max_connections: int
    ) -> None:
        self.base_url = base_url
        self.headers = {**urllib3.util.make_headers(accept_encoding=True), **headers}
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._pool = _pool_manager(proxy_for(base_url), maxsize=max_connections, **trusted_cas())

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """``method`` ``base_url + path`` with ``params`` as the query string; no retries.
        ``headers`` replace the client's own (a probe without the key, say)."""
        try:
            answer = self._pool.request(
                method,
                self.base_url + path,
                fields=dict(params or {}),
                headers=self.headers if headers is None else headers,
                timeout=self._timeout,
                retries=False,
                redirect=False,
            )
        except NewConnectionError as exc:  # a subclass of TimeoutError, but a refusal or DNS failure
            raise TransportError(f"{type(exc).__name__}: {exc}", timed_out=False) from None
        except TimeoutError:
            raise TransportError("timeout", timed_out=True) from None
        except HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}", timed_out=False) from None
        return Response(answer.status, answer.reason or "", answer.headers, answer.data)

    def close(self) -> None:
        self._pool.clear()


def _pool_manager(proxy: str | None, **options: Any) -> urllib3.PoolManager:
    """Direct connections, or through an HTTP(S) ``proxy`` (``user:password@`` in it authenticates)."""
    if proxy is None:
        return urllib3.PoolManager(**options)
    scheme = urlsplit(proxy).scheme
    if scheme not in ("http", "https"):
        raise ClarkyConfigError(
            f"The environment names a {scheme} proxy for the Clarky API; the hook speaks to HTTP and "
            "HTTPS proxies only. Set HTTPS_PROXY to an HTTP proxy, or add the API's host to NO_PROXY."
        )
    auth = urllib3.util.parse_url(proxy).auth
    headers = urllib3.util.make_headers(proxy_basic_auth=unquote(auth)) if auth else None
    return urllib3.ProxyManager(proxy, proxy_headers=headers, **options)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (as ``requests`` reads it), or None."""
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    if not proxies or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def trusted_cas() -> dict[str, str]:
    """The CAs ``requests`` would verify with: the environment's bundle (a file, or a directory
    of hashed certificates), else certifi's."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    return {"ca_cert_dir": bundle} if os.path.isdir(bundle) else {"ca_certs": bundle}
