"""A scripted HTTP server on loopback, for the hook's tests of what the emulator does not do.

Each route answers from a list of responses in turn (the last one repeats), or from a
function of the request; it can also break the connection or answer too late. The hook talks
to it over real sockets, so its HTTP client is what is tested, never a mock of it.

    http_stub.get("/contacts", [{"status_code": 500}, {"json": {"data": []}}])
    set_clarky_conn(monkeypatch, host=http_stub.api_url)
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/api/v1"
#: Longest a "timeout" response holds the connection before closing it (the client gives up first).
HOLD_SECONDS = 5.0


@dataclass(frozen=True)
class SentRequest:
    """A request the stub received: the path under the API prefix, the query and the headers."""

    method: str
    path: str
    qs: dict[str, list[str]]
    headers: Message  # names are case-insensitive
    #: The request target as sent: an absolute URL when it came through a proxy.
    target: str


Response = dict[str, Any]


@dataclass
class _Route:
    responses: list[Response]
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, request: SentRequest) -> Response:
        with self.lock:
            response = self.responses[min(self.served, len(self.responses) - 1)]
            self.served += 1
        body = response.get("json")
        return {**response, "json": body(request)} if callable(body) else response


@dataclass
class HttpStub:
    """The server's routes and what it received; ``url`` is its root, ``api_url`` the API's."""

    url: str = ""
    routes: dict[tuple[str, str], _Route] = field(default_factory=dict)
    request_history: list[SentRequest] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    #: The certificate an HTTPS stub presents, as a CA bundle that trusts it (set by its fixture).
    tls_certificate: str | None = None

    @property
    def api_url(self) -> str:
        return self.url + PREFIX

    @property
    def call_count(self) -> int:
        return len(self.request_history)

    def get(self, path: str, responses: list[Response] | None = None, **response: Any) -> None:
        """Answer ``GET path`` (under the API prefix) with ``responses`` in turn, or ``response``.

        A response has ``status_code`` (200), a body as ``json`` (a value, or a function of the
        request returning one), ``text`` or ``body`` (bytes, as sent), and ``headers``;
        ``fail="reset"`` closes the connection without an answer, ``fail="timeout"`` holds it
        until the client gives up.
        """
        self._route("GET", path, responses, response)

    def head(self, path: str, responses: list[Response] | None = None, **response: Any) -> None:
        self._route("HEAD", path, responses, response)

    def _route(self, method: str, path: str, responses: list[Response] | None, response: Response) -> None:
        self.routes[method, path] = _Route(responses or [response])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests look at request_history, not at a log

    def _answer(self, method: str) -> None:
        stub = self.server.stub
        url = urlsplit(self.path)
        path = url.path.removeprefix(PREFIX)
        request = SentRequest(method, path, parse_qs(url.query), self.headers, self.path)
        stub.request_history.append(request)
        route = stub.routes.get((method, path))
        response = (
            route.next(request) if route else {"status_code": 404, "json": {"error": {"code": "not_found"}}}
        )
        if response.get("fail") == "reset":
            self.close_connection = True
            return
        if response.get("fail") == "timeout":
            stub.released.wait(HOLD_SECONDS)
            self.close_connection = True
            return
        if "json" in response:
            body = json.dumps(response["json"]).encode()
        elif "body" in response:
            body = response["body"]
        else:
            body = str(response.get("text", "")).encode()
        self.send_response(response.get("status_code", 200))
        for name, value in (response.get("headers") or {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: HttpStub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stub = stub


def serve(tls: ssl.SSLContext | None = None) -> Iterator[HttpStub]:
    """Run a stub on a free loopback port for the duration of a test, then stop it; with
    ``tls`` (a server context) it speaks HTTPS."""
    stub = HttpStub()
    server = _Server(stub)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    stub.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
