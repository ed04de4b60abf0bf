"""What the hook says when a request gets no answer from the API, over real sockets on loopback.

requests-mock answers above the network, so it cannot fake what these need: a TLS handshake
with a plain-HTTP port, a refused port, a certificate nobody trusts. Each error must name the
URL tried and the likely fix, and is retried only where retrying can help. Every server, socket
and hook a test opens is closed by the test.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from clarky_provider.exceptions import ClarkyConfigError, ClarkyConnectionError, ClarkyServerError
from clarky_provider.hooks.clarky import MAX_CONNECT_RETRIES, ClarkyHook
from tests.conftest import TEST_KEY, set_clarky_conn

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def unset(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> None:
    """Remove environment variables in either case (requests reads proxy ones in both)."""
    for name in names:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Straight to loopback: a proxy named by the machine's environment would answer instead."""
    unset(monkeypatch, PROXY_VARIABLES)


@pytest.fixture
def connect(monkeypatch):
    """``connect(host)``: a hook on a connection with that Base URL (quick backoff, unpaced,
    the default 5 retries); its Session is closed after the test."""
    hooks: list[ClarkyHook] = []

    def make(host: str) -> ClarkyHook:
        set_clarky_conn(
            monkeypatch, host=host, extra={"requests_per_minute": 1_000_000, "retry_backoff": 0.01}
        )
        hooks.append(ClarkyHook())
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


class _EmptyPage(BaseHTTPRequestHandler):
    """Answers every GET with an empty Clarky page (what a plain-HTTP API would say)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"data": [], "pagination": {"page": 1, "page_size": 1, "total": 0}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a TLS hello read as HTTP is answered 400 and would be logged here


class LoopbackApi(ThreadingHTTPServer):
    """An API on a free loopback port, plain HTTP or (with ``tls``) HTTPS, that counts the
    connections it accepted: a retry would be a second one."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _EmptyPage)
        self.tls = tls
        self.connections = 0

    @property
    def port(self) -> int:
        return self.server_address[1]

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        self.connections += 1
        if self.tls is None:
            return sock, address
        try:  # a failed handshake is an OSError, which the server skips
            return self.tls.wrap_socket(sock, server_side=True), address
        except OSError:
            sock.close()
            raise


@contextmanager
def loopback_api(tls: ssl.SSLContext | None = None) -> Iterator[LoopbackApi]:
    server = LoopbackApi(tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listened on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# -- a Base URL without a scheme, at a plain-HTTP port --------------------------------------


def test_no_scheme_at_a_plain_http_port_fails_at_once_saying_to_use_http(connect):
    # the case: 127.0.0.1:PORT is taken as https, and the server answers the TLS hello
    # in plain HTTP; retrying cannot help, so one attempt, and the fix in the message
    with loopback_api() as server:
        hook = connect(f"127.0.0.1:{server.port}")
        with pytest.raises(ClarkyConfigError) as info:
            hook.request("GET", "/contacts")
        assert server.connections == 1
        assert hook.stats.requests == 1 and hook.stats.retries == 0
        message = str(info.value)
        assert message.startswith(f"https://127.0.0.1:{server.port}/api/v1/contacts does not speak TLS")
        assert "The Base URL has no scheme, so https was assumed." in message
        assert "start the connection's Base URL with http://" in message

        # and the fix works
        ok, said = connect(f"http://127.0.0.1:{server.port}").test_connection()
        assert ok, said
        assert (
            said
            == f"Connected to Clarky at http://127.0.0.1:{server.port}/api/v1; 0 contacts visible to this key."
        )


# -- a port nothing listens on -----------------------------------------------------------


def test_a_refused_port_is_a_connection_error_naming_the_url_after_brief_retries(connect):
    with refused_port() as port:
        hook = connect(f"http://127.0.0.1:{port}")
        with pytest.raises(ClarkyConnectionError) as info:
            hook.request("GET", "/contacts")
    assert not isinstance(info.value, ClarkyServerError)  # nothing answered: not the server's fault
    # retried, but fewer times than a server error would be: a wrong Base URL fails in seconds
    assert hook.settings.max_retries > MAX_CONNECT_RETRIES
    assert hook.stats.requests == 1 + MAX_CONNECT_RETRIES and hook.stats.retries == MAX_CONNECT_RETRIES
    message = str(info.value)
    assert f"could not connect to http://127.0.0.1:{port}/api/v1/contacts (connection refused" in message
    assert "Check the connection's Base URL (host and port)" in message
    assert f"gave up after {MAX_CONNECT_RETRIES} retries" in message
    assert info.value.status is None and info.value.path == "/contacts"


# -- a Base URL requests could not use --------------------------------------------------------


@pytest.mark.parametrize("host", ["http://127.0.0.1:99999", "ftp://x", "127.0.0.1:port"])
def test_a_malformed_base_url_is_refused_before_any_request(connect, monkeypatch, host):
    def send(*args, **kwargs):
        raise AssertionError("a request was sent")

    monkeypatch.setattr(requests.Session, "send", send)
    hook = connect(host)
    with pytest.raises(ClarkyConfigError) as info:
        hook.request("GET", "/contacts")
    assert str(info.value) == (
        f"The connection's Base URL {host!r} is not an http(s) URL with a host. Set it to the API's "
        "address, e.g. https://clarky.ai or http://127.0.0.1:8080 (/api/v1 is appended)."
    )
    assert hook.stats.requests == 0


# -- the connection's Test ------------------------------------------------------------------


@pytest.mark.parametrize("case", ["no scheme", "refused", "bad port", "not http"])
def test_test_connection_says_what_is_wrong_with_the_base_url(connect, case):
    with loopback_api() as server, refused_port() as port:
        host, expected = {
            "no scheme": (
                f"127.0.0.1:{server.port}",
                [
                    f"https://127.0.0.1:{server.port}/api/v1/contacts does not speak TLS",
                    "https was assumed",
                    "start the connection's Base URL with http://",
                ],
            ),
            "refused": (
                f"http://127.0.0.1:{port}",
                [f"could not connect to http://127.0.0.1:{port}/api/v1/contacts", "refused", "Base URL"],
            ),
            "bad port": (
                "http://127.0.0.1:99999",
                ["Base URL 'http://127.0.0.1:99999' is not an http(s) URL"],
            ),
            "not http": ("ftp://x", ["Base URL 'ftp://x' is not an http(s) URL"]),
        }[case]
        hook = connect(host)
        ok, message = hook.test_connection()
        assert server.connections == (1 if case == "no scheme" else 0)
    assert not ok
    for part in expected:
        assert part in message, message
    assert hook.stats.requests == (0 if case in ("bad port", "not http") else 1)  # Test never retries
    assert TEST_KEY not in message


# -- TLS certificates and proxies, as requests reads them from the environment ---------------


@pytest.fixture
def tls_server_context(tmp_path) -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and that certificate
    as a CA bundle that trusts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clarky test")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "loopback.pem", tmp_path / "loopback.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)


def test_a_certificate_no_bundle_trusts_is_a_config_error_naming_the_fix(
    connect, monkeypatch, tls_server_context
):
    unset(monkeypatch, CA_VARIABLES)  # requests' own bundle (certifi), which does not hold ours
    context, _ = tls_server_context
    with loopback_api(context) as server:
        hook = connect(f"https://127.0.0.1:{server.port}")
        with pytest.raises(ClarkyConfigError) as info:
            hook.request("GET", "/contacts")
        assert server.connections == 1  # not retried: the next handshake would fail the same way
    message = str(info.value)
    assert message.startswith(f"The TLS certificate of https://127.0.0.1:{server.port}/api/v1/contacts")
    assert (
        "CERTIFICATE_VERIFY_FAILED" in message and "point REQUESTS_CA_BUNDLE at that CA's bundle" in message
    )


def test_the_environments_ca_bundle_is_trusted_in_the_handshake(connect, monkeypatch, tls_server_context):
    unset(monkeypatch, CA_VARIABLES)
    context, bundle = tls_server_context
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    with loopback_api(context) as server:
        ok, message = connect(f"https://127.0.0.1:{server.port}").test_connection()
    assert ok, message


@pytest.mark.skipif(importlib.util.find_spec("socks") is not None, reason="PySocks is installed")
def test_a_socks_proxy_without_pysocks_is_a_config_error_naming_the_fix(connect, monkeypatch):
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with refused_port() as port:  # whatever happens, nothing there answers
        hook = connect(f"http://127.0.0.1:{port}")
        with pytest.raises(ClarkyConfigError) as info:
            hook.request("GET", "/contacts")
    message = str(info.value)
    assert message.startswith(f"Cannot send a request to http://127.0.0.1:{port}/api/v1/contacts")
    assert "install requests[socks], or add the API's host to NO_PROXY" in message
    assert hook.stats.requests == 1 and hook.stats.retries == 0
