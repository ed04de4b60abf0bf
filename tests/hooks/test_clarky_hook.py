"""ClarkyHook unit tests against a scripted HTTP server on loopback (tests/http_stub.py):
pagination, retries, pacing, errors, secrets, proxies and redirects."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
import shutil
import socket
import subprocess
from datetime import datetime, timedelta, timezone

import pendulum
import pytest

from clarky_provider.exceptions import (
    ClarkyAuthError,
    ClarkyBadRequestError,
    ClarkyConfigError,
    ClarkyError,
    ClarkyIncompleteReadError,
    ClarkyNotFoundError,
    ClarkyPermissionError,
    ClarkyServerError,
)
from clarky_provider.hooks import rate_limit
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.hooks.listing import RECOVERY_REQUESTS_PER_PAGE
from clarky_provider.normalize import format_timestamp, parse_timestamp, primary_email, primary_phone
from tests.conftest import TEST_KEY, set_clarky_conn


def page(records, page_no, total, page_size=100):
    total_pages = -(-total // page_size)
    return {
        "json": {
            "data": records,
            "pagination": {
                "page": page_no,
                "page_size": page_size,
                "total": total,
                "total_pages": total_pages,
            },
        }
    }


def contacts(*ids):
    return [{"id": i, "first_name": "Ada"} for i in ids]


def error(status, code, message="nope", **headers):
    return {"status_code": status, "json": {"error": {"code": code, "message": message}}, "headers": headers}


def stub_hook(monkeypatch, http_stub, **extra):
    """A hook whose connection points at the stub, unpaced, one request at a time, quick backoff."""
    set_clarky_conn(
        monkeypatch,
        host=http_stub.api_url,
        extra={"requests_per_minute": 1_000_000, "max_concurrency": 1, "retry_backoff": 0.01, **extra},
    )
    return ClarkyHook()


@pytest.fixture
def hook(monkeypatch, http_stub):
    return stub_hook(monkeypatch, http_stub)


@pytest.fixture
def refused_url():
    """An API URL on loopback that refuses connections: its port is bound but never listened on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"


# -- connection and key -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        (None, "has no API key"),
        ("sk_live_" + "x" * 30, "does not start with 'ck_live_'"),
        ("ck_live_short", "is 13 characters long"),
        ("ck_live_" + "x" * 40, "is 48 characters long"),
    ],
)
def test_bad_key_rejected_before_any_request(monkeypatch, http_stub, password, expected):
    set_clarky_conn(monkeypatch, host=http_stub.api_url, password=password)
    with pytest.raises(ClarkyConfigError, match=expected) as info:
        ClarkyHook().request("GET", "/contacts")
    assert http_stub.call_count == 0
    if password:
        assert password not in str(info.value)


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        (None, "https://clarky.ai/api/v1"),
        ("https://eu.clarky.ai/", "https://eu.clarky.ai/api/v1"),
        ("clarky.example.com", "https://clarky.example.com/api/v1"),
        ("http://127.0.0.1:8080/api/v1", "http://127.0.0.1:8080/api/v1"),
    ],
)
def test_base_url_from_host(monkeypatch, host, base_url):
    set_clarky_conn(monkeypatch, host=host)
    assert ClarkyHook().settings.base_url == base_url


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"page_size": 101}, "'page_size' of connection 'clarky_default' must be between 1 and 100"),
        ({"page_size": "ten"}, "'page_size' .* must be an integer"),
        ({"timeout": 0}, "'timeout' .* must be a positive number"),
        ({"max_concurrency": 0}, "'max_concurrency' .* between 1 and 32"),
    ],
)
def test_bad_extras_name_the_field(monkeypatch, extra, expected):
    set_clarky_conn(monkeypatch, extra=extra)
    with pytest.raises(ClarkyConfigError, match=expected):
        _ = ClarkyHook().settings


def test_settings_repr_hides_key(hook):
    assert TEST_KEY not in repr(hook.settings)


def test_bearer_header_and_defaults(hook, http_stub):
    http_stub.get("/contacts", **page(contacts("c_1"), 1, 1))
    list(hook.paginate("contacts"))
    sent = http_stub.request_history[0]
    assert sent.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert sent.qs == {"page": ["1"], "page_size": ["100"]}


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE", "PUT"])
def test_hook_is_read_only(hook, http_stub, method):
    with pytest.raises(ClarkyConfigError, match="read-only"):
        hook.request(method, "/contacts")
    assert http_stub.call_count == 0


def test_head_is_allowed(hook, http_stub):
    http_stub.head("/contacts", status_code=200)
    assert hook.request("HEAD", "/contacts") == {}


# -- proxies and redirects ------------------------------------------------------------------

#: A host that never resolves (RFC 6761): only a proxy can reach it, here the stub.
PROXIED_API = "http://clarky.invalid/api/v1"


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def unset(monkeypatch, names):
    """Remove environment variables in either case (the proxy ones are read in both)."""
    for name in names:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def use_stub_as_proxy(monkeypatch, http_stub):
    """The environment names the stub as its HTTP proxy, with a user and a %-encoded password."""
    unset(monkeypatch, PROXY_VARIABLES)
    monkeypatch.setenv("HTTP_PROXY", http_stub.url.replace("http://", "http://user:p%40ss@"))


def test_http_proxy_from_the_environment_is_used_and_authenticated(monkeypatch, http_stub):
    use_stub_as_proxy(monkeypatch, http_stub)
    set_clarky_conn(monkeypatch, host=PROXIED_API, extra={"requests_per_minute": 1_000_000})
    http_stub.get("/contacts", **page(contacts("c_1", "c_2"), 1, 2))
    assert [r["id"] for r in ClarkyHook().paginate("contacts")] == ["c_1", "c_2"]
    (sent,) = http_stub.request_history
    headers = {name.lower(): value for name, value in sent.headers.items()}  # names as sent
    # a proxy request: the absolute URL as the target, the proxy's credentials decoded
    assert sent.target == f"{PROXIED_API}/contacts?page=1&page_size=100"
    assert headers["host"] == "clarky.invalid"
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert headers["authorization"] == f"Bearer {TEST_KEY}"


def test_no_proxy_bypasses_the_proxy(monkeypatch, http_stub, refused_url):
    use_stub_as_proxy(monkeypatch, http_stub)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    set_clarky_conn(monkeypatch, host=refused_url, extra={"requests_per_minute": 1_000_000, "max_retries": 0})
    # straight to the refusing port instead of through the stub, which would have answered
    with pytest.raises(ClarkyServerError, match="network error") as info:
        ClarkyHook().request("GET", "/contacts")
    assert info.value.status is None
    assert http_stub.call_count == 0


def test_a_socks_proxy_is_refused_with_the_fix(monkeypatch, http_stub):
    unset(monkeypatch, PROXY_VARIABLES)
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    set_clarky_conn(monkeypatch, host=http_stub.api_url, extra={"requests_per_minute": 1_000_000})
    with pytest.raises(ClarkyConfigError, match=r"socks5 proxy .* HTTP and HTTPS proxies only.*NO_PROXY"):
        ClarkyHook().request("GET", "/contacts")
    assert http_stub.call_count == 0


def test_redirect_is_refused_not_followed(hook, http_stub):
    moved = f"{http_stub.api_url}/moved/contacts"  # on the stub: following it would be counted
    http_stub.get("/contacts", status_code=302, headers={"Location": moved})
    http_stub.get("/moved/contacts", **page(contacts("c_1"), 1, 1))
    with pytest.raises(ClarkyConfigError, match="redirect") as info:
        hook.request("GET", "/contacts")
    assert http_stub.call_count == 1
    message = str(info.value)
    assert "HTTP 302" in message and repr(moved) in message and "does not follow" in message
    assert TEST_KEY not in message


def test_compressed_answers_are_asked_for_and_decoded(hook, http_stub):
    body = gzip.compress(json.dumps(page(contacts("c_1", "c_2"), 1, 2)["json"]).encode())
    http_stub.get("/contacts", body=body, headers={"Content-Encoding": "gzip"})
    assert [r["id"] for r in hook.paginate("contacts")] == ["c_1", "c_2"]
    assert "gzip" in http_stub.request_history[0].headers["Accept-Encoding"]


@pytest.fixture
def https_stub(tmp_path):
    """The scripted server over TLS, with a self-signed certificate for 127.0.0.1 (in
    ``tls_certificate``, the CA bundle that trusts it)."""
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tests.http_stub import serve

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
    cert_file, key_file = tmp_path / "stub.pem", tmp_path / "stub.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    for stub in serve(context):
        stub.tls_certificate = str(cert_file)
        yield stub


@pytest.mark.parametrize(
    ("variable", "form"),
    [("REQUESTS_CA_BUNDLE", "file"), ("CURL_CA_BUNDLE", "file"), ("REQUESTS_CA_BUNDLE", "directory")],
)
def test_https_trusts_the_ca_bundle_the_environment_names(monkeypatch, https_stub, tmp_path, variable, form):
    unset(monkeypatch, CA_VARIABLES)
    bundle = https_stub.tls_certificate
    if form == "directory":  # OpenSSL's layout: each certificate under its subject hash
        subject_hash = subprocess.run(
            ["openssl", "x509", "-hash", "-noout", "-in", bundle], capture_output=True, text=True, check=True
        ).stdout.strip()
        (tmp_path / "cas").mkdir()
        shutil.copy(bundle, tmp_path / "cas" / f"{subject_hash}.0")
        bundle = str(tmp_path / "cas")
    monkeypatch.setenv(variable, bundle)
    set_clarky_conn(monkeypatch, host=https_stub.api_url, extra={"requests_per_minute": 1_000_000})
    https_stub.get("/contacts", **page(contacts("c_1"), 1, 1))
    assert https_stub.api_url.startswith("https://")
    assert [r["id"] for r in ClarkyHook().paginate("contacts")] == ["c_1"]


def test_https_refuses_a_certificate_no_bundle_trusts(monkeypatch, https_stub):
    unset(monkeypatch, CA_VARIABLES)  # certifi's bundle, which does not hold the stub's
    set_clarky_conn(
        monkeypatch, host=https_stub.api_url, extra={"requests_per_minute": 1_000_000, "max_retries": 0}
    )
    https_stub.get("/contacts", **page(contacts("c_1"), 1, 1))
    with pytest.raises(ClarkyServerError, match=r"network error .*SSLError.*CERTIFICATE_VERIFY_FAILED"):
        ClarkyHook().request("GET", "/contacts")
    assert https_stub.call_count == 0


# -- retries ------------------------------------------------------------------------------


def test_429_waits_retry_after_then_retries(hook, http_stub, fake_clock):
    http_stub.get(
        "/contacts",
        [error(429, "rate_limited", **{"Retry-After": "7"}), page(contacts("c_1"), 1, 1)],
    )
    assert [r["id"] for r in hook.paginate("contacts")] == ["c_1"]
    assert http_stub.call_count == 2
    waited = max(fake_clock.sleeps)
    assert 7.0 <= waited <= 7.7  # Retry-After plus at most 10% jitter
    assert hook.stats.rate_limited == 1 and hook.stats.retries == 1


@pytest.mark.parametrize(
    "failure",
    [
        error(500, "internal_error"),
        {"status_code": 502, "text": "<html><body>Bad Gateway</body></html>"},
        {"status_code": 503, "text": "<html>down</html>"},
        {"status_code": 504, "text": ""},
        {"fail": "reset"},
        {"fail": "timeout"},
        {"status_code": 200, "text": '{"data": [{"id": "c_1"'},
    ],
    ids=["500", "502-html", "503-html", "504", "reset", "timeout", "truncated-json"],
)
def test_transient_failures_are_retried(monkeypatch, http_stub, fake_clock, failure):
    # a "timeout" failure is waited out for real: the client gives up after the timeout extra
    hook = stub_hook(monkeypatch, http_stub, **({"timeout": 0.2} if failure.get("fail") == "timeout" else {}))
    http_stub.get("/contacts", [failure, failure, page(contacts("c_1"), 1, 1)])
    assert [r["id"] for r in hook.paginate("contacts")] == ["c_1"]
    assert http_stub.call_count == 3
    assert len([s for s in fake_clock.sleeps if s > 0]) == 2


def test_backoff_grows_exponentially_with_jitter(monkeypatch, http_stub, fake_clock):
    set_clarky_conn(
        monkeypatch, host=http_stub.api_url, extra={"requests_per_minute": 1_000_000, "max_retries": 4}
    )
    http_stub.get("/contacts", status_code=500, json={"error": {"code": "internal_error", "message": "x"}})
    with pytest.raises(ClarkyServerError, match="gave up after 4 retries"):
        ClarkyHook().request("GET", "/contacts")
    sleeps = [s for s in fake_clock.sleeps if s > 0]
    assert len(sleeps) == 4
    for attempt, slept in enumerate(sleeps):
        assert 2**attempt / 2 <= slept <= 2**attempt


def test_persistent_5xx_gives_up_with_clear_error(hook, http_stub, fake_clock):
    http_stub.get("/contacts", status_code=502, text="<html>Bad Gateway</html>")
    with pytest.raises(ClarkyServerError) as info:
        hook.request("GET", "/contacts")
    assert http_stub.call_count == 1 + hook.settings.max_retries
    message = str(info.value)
    assert "HTTP 502" in message and "non-JSON body" in message and "gave up after 5 retries" in message


def test_retrying_is_bounded_by_total_time(monkeypatch, http_stub, fake_clock):
    set_clarky_conn(
        monkeypatch,
        host=http_stub.api_url,
        extra={"requests_per_minute": 1_000_000, "max_retries": 100, "retry_backoff": 5},
    )
    http_stub.get("/contacts", fail="reset")
    with pytest.raises(ClarkyServerError, match="gave up after 60s of retrying"):
        ClarkyHook(max_retry_seconds=60).request("GET", "/contacts")
    assert fake_clock.now - 1_000.0 <= 60


@pytest.mark.parametrize(
    ("status", "code", "exc_type"),
    [
        (400, "bad_request", ClarkyBadRequestError),
        (401, "unauthorized", ClarkyAuthError),
        (403, "forbidden", ClarkyPermissionError),
        (404, "not_found", ClarkyNotFoundError),
        (422, "validation_error", ClarkyBadRequestError),
    ],
)
def test_client_errors_fail_at_once(hook, http_stub, status, code, exc_type):
    http_stub.get("/contacts", **error(status, code, "bad thing", **{}))
    with pytest.raises(exc_type) as info:
        hook.request("GET", "/contacts")
    assert http_stub.call_count == 1
    assert (
        info.value.status == status and info.value.code == code and info.value.message.startswith("bad thing")
    )


def test_401_says_to_rotate_the_key(hook, http_stub):
    http_stub.get("/contacts", **error(401, "unauthorized", "Missing or invalid API key"))
    with pytest.raises(ClarkyAuthError, match="invalid or revoked; rotate it"):
        list(hook.paginate("contacts"))


def test_error_details_are_kept(hook, http_stub):
    body = {
        "error": {
            "code": "validation_error",
            "message": "page_size too big",
            "details": {"field": "page_size"},
        }
    }
    http_stub.get("/contacts", status_code=422, json=body)
    with pytest.raises(ClarkyBadRequestError) as info:
        hook.request("GET", "/contacts")
    assert info.value.details == {"field": "page_size"}


# -- pacing -------------------------------------------------------------------------------


def test_requests_are_paced_under_the_budget(monkeypatch, http_stub, fake_clock):
    set_clarky_conn(
        monkeypatch, host=http_stub.api_url, extra={"requests_per_minute": 120, "max_concurrency": 1}
    )
    http_stub.get("/agents", json={"data": []})
    hook = ClarkyHook()
    for _ in range(11):
        hook.request("GET", "/agents")
    # 10 gaps at 99% of 120/min: 10 * 60 / 118.8 s
    assert rate_limit.UTILISATION == 0.99
    assert fake_clock.now - 1_000.0 == pytest.approx(10 * 60 / (120 * 0.99))


def test_exhausted_budget_header_pauses_until_reset(hook, http_stub, fake_clock):
    reset = int(fake_clock.epoch) + 20
    http_stub.get(
        "/agents",
        json={"data": []},
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset), "X-RateLimit-Limit": "120"},
    )
    hook.request("GET", "/agents")
    hook.request("GET", "/agents")
    assert max(fake_clock.sleeps) == pytest.approx(20, abs=0.01)


# -- pagination ---------------------------------------------------------------------------


def test_pages_until_total_pages(hook, http_stub):
    http_stub.get(
        "/contacts",
        [page(contacts(*[f"c_{i}" for i in range(100)]), 1, 102), page(contacts("c_100", "c_101"), 2, 102)],
    )
    assert len(list(hook.paginate("contacts"))) == 102
    assert http_stub.call_count == 2


def test_total_pages_is_reread_on_every_page(hook, http_stub):
    full = [f"c_{i}" for i in range(300)]
    http_stub.get(
        "/contacts",
        [
            page(contacts(*full[:100]), 1, 200),
            page(contacts(*full[100:200]), 2, 300),  # the CRM grew while we paged
            page(contacts(*full[200:]), 3, 300),
        ],
    )
    assert len(list(hook.paginate("contacts"))) == 300


def test_stops_on_empty_page_but_a_short_read_never_passes(hook, http_stub):
    # the totals promise 500 records, the pages end after one: paging stops at the empty page,
    # recovery re-reads within its bound, and the read fails instead of passing for complete
    http_stub.get("/companies", [page(contacts("co_1"), 1, 500), page([], 2, 500)])
    with pytest.raises(ClarkyIncompleteReadError, match="read 1 of the 500 records") as info:
        list(hook.paginate("companies"))
    assert info.value.missing == 499
    assert http_stub.call_count <= 2 + RECOVERY_REQUESTS_PER_PAGE * 5 + 10


def test_missing_pagination_object_reads_until_short_page(hook, http_stub):
    http_stub.get(
        "/companies",
        [
            {"json": {"data": contacts(*[f"co_{i}" for i in range(100)])}},
            {"json": {"data": contacts("co_x")}},
        ],
    )
    assert len(list(hook.paginate("companies"))) == 101
    assert http_stub.call_count == 2


def test_duplicate_ids_across_pages_are_dropped(hook, http_stub):
    first = contacts(*[f"c_{i}" for i in range(100)])
    http_stub.get(
        "/contacts",
        [page(first, 1, 101), page(contacts("c_99", "c_5", "9f1c6a9e-8c3b-4ea2-bf8c-5b08f7a4d6c2"), 2, 101)],
    )
    ids = [r["id"] for r in hook.paginate("contacts")]
    assert len(ids) == len(set(ids)) == 101
    assert "9f1c6a9e-8c3b-4ea2-bf8c-5b08f7a4d6c2" in ids
    assert hook.stats.duplicates_dropped == 2


def test_concurrent_pages_arrive_in_page_order(monkeypatch, http_stub):
    set_clarky_conn(
        monkeypatch,
        host=http_stub.api_url,
        extra={"requests_per_minute": 1_000_000, "max_concurrency": 4, "page_size": 10},
    )
    ids = [f"c_{i:03d}" for i in range(95)]

    def respond(request):
        number = int(request.qs["page"][0])
        return page(contacts(*ids[(number - 1) * 10 : number * 10]), number, 95, 10)["json"]

    http_stub.get("/contacts", json=respond)
    assert [r["id"] for r in ClarkyHook().paginate("contacts")] == ids


def test_child_resources_fan_out_and_carry_parent_id(hook, http_stub):
    http_stub.get("/pipelines", **page([{"id": "p_1"}, {"id": "p_2"}], 1, 2))
    http_stub.get("/pipelines/p_1/stages", json={"data": [{"id": "ps_1", "order_index": 0}]})
    http_stub.get("/pipelines/p_2/stages", json={"data": [{"id": "ps_2", "pipeline_id": "p_2"}]})
    stages = list(hook.paginate("pipeline_stages"))
    assert [(s["id"], s["pipeline_id"]) for s in stages] == [("ps_1", "p_1"), ("ps_2", "p_2")]
    assert all("page" not in r.qs for r in http_stub.request_history[1:])


def test_unsupported_filter_is_rejected_locally(hook, http_stub):
    with pytest.raises(
        ClarkyConfigError, match="'updated_after' is not supported by Clarky resource 'companies'"
    ):
        list(hook.paginate("companies", updated_after="2026-01-01T00:00:00Z"))
    assert http_stub.call_count == 0


def test_unknown_resource_lists_valid_names(hook):
    with pytest.raises(ClarkyConfigError, match=r"Unknown Clarky resource 'deals'.*contacts"):
        list(hook.paginate("deals"))


def test_timestamp_filters_are_sent_as_utc(hook, http_stub):
    http_stub.get("/contacts", **page([], 1, 0))
    local = pendulum.datetime(2026, 1, 15, 11, 0, 0, tz="Europe/Zurich")
    list(
        hook.paginate("contacts", updated_after=local, created_before=datetime(2026, 2, 1, 0, 0, 0, 500_000))
    )
    qs = http_stub.request_history[0].qs
    assert qs["updated_after"] == ["2026-01-15T10:00:00Z"]
    assert qs["created_before"] == ["2026-02-01T00:00:00.500Z"]


def test_get_record_and_find_by_email(hook, http_stub):
    http_stub.get("/contacts/c_1", json={"data": {"id": "c_1"}})
    http_stub.get("/contacts/by-email", [{"json": {"data": {"id": "c_1"}}}, error(404, "not_found")])
    assert hook.get_record("contacts", "c_1") == {"id": "c_1"}
    assert hook.find_contact_by_email("ada@example.com") == {"id": "c_1"}
    assert hook.find_contact_by_email("nobody@example.com") is None


def test_get_pandas_df(hook, http_stub):
    http_stub.get("/contacts", **page(contacts("c_1", "c_2"), 1, 2))
    frame = hook.get_pandas_df("contacts")
    assert list(frame["id"]) == ["c_1", "c_2"]


# -- the API's inconsistencies -------------------------------------------------------------


def test_emails_as_objects_and_as_strings():
    as_objects = {
        "emails": [{"email": "a@x.com", "is_primary": False}, {"email": "b@x.com", "is_primary": True}]
    }
    unflagged = {"emails": [{"email": "a@x.com"}, {"email": "b@x.com"}]}
    as_strings = {"emails": ["a@x.com", "b@x.com"]}
    assert primary_email(as_objects) == "b@x.com"
    assert primary_email(unflagged) == "a@x.com"
    assert primary_email(as_strings) == "a@x.com"
    assert primary_email({}) is None and primary_email({"emails": []}) is None
    assert primary_phone({"phone_numbers": ["+15550001"]}) == "+15550001"


def test_both_timestamp_precisions_parse_to_the_same_instant():
    seconds = parse_timestamp("2026-01-12T14:30:00Z")
    millis = parse_timestamp("2026-01-12T14:30:00.000Z")
    assert seconds == millis == datetime(2026, 1, 12, 14, 30, tzinfo=timezone.utc)
    assert parse_timestamp("2026-01-12T15:30:00.250+01:00") == seconds + timedelta(milliseconds=250)


def test_malformed_timestamp_filter_names_the_parameter():
    with pytest.raises(ClarkyConfigError, match="updated_after='last tuesday' is not an ISO 8601 timestamp"):
        format_timestamp("last tuesday", name="updated_after")


# -- test_connection ----------------------------------------------------------------------


def test_test_connection_ok(hook, http_stub):
    http_stub.get("/contacts", **page(contacts("c_1"), 1, 42, 1))
    ok, message = hook.test_connection()
    assert ok and "42 contacts" in message


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (error(401, "unauthorized"), "invalid or has been revoked"),
        ("refused", "Could not get an answer"),
        ({"fail": "timeout"}, "no answer within 0.2s"),
    ],
    ids=["401", "refused", "timeout"],
)
def test_test_connection_explains_failures(monkeypatch, http_stub, refused_url, failure, expected):
    if failure == "refused":  # nothing listens at the host: the one attempt never reaches a server
        set_clarky_conn(monkeypatch, host=refused_url)
        hook = ClarkyHook()
    else:
        http_stub.get("/contacts", **failure)
        hook = stub_hook(monkeypatch, http_stub, **({"timeout": 0.2} if "fail" in failure else {}))
    ok, message = hook.test_connection()
    assert not ok and expected in message
    assert hook.stats.requests == 1
    assert http_stub.call_count == (0 if failure == "refused" else 1)
    assert TEST_KEY not in message


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("ck_live_short", "The API key is 13 characters long"),
        ("sk_live_" + "x" * 30, "The API key does not start with 'ck_live_'"),
    ],
)
def test_malformed_key_message_names_no_temporary_connection_id(monkeypatch, http_stub, password, expected):
    # the UI's and REST API's Test exports the form as a connection with a random id, as here
    transient = "2E0I2IVl"
    set_clarky_conn(monkeypatch, conn_id=transient, host=http_stub.api_url, password=password)
    ok, message = ClarkyHook(transient).test_connection()
    assert not ok and message.startswith(expected)
    assert transient not in message and password not in message
    assert http_stub.call_count == 0


# -- secrets ------------------------------------------------------------------------------


def test_key_never_appears_in_logs_or_errors(monkeypatch, http_stub, fake_clock, caplog):
    """Drive every error path with a known key and look for it in everything we produced."""
    hook = stub_hook(monkeypatch, http_stub, timeout=0.2)  # "/timeout" waits it out, once per attempt
    echo = {"error": {"code": "bad_request", "message": f"bad header Bearer {TEST_KEY}"}}
    paths = {
        "/r400": {"status_code": 400, "json": echo},
        "/r401": error(401, "unauthorized"),
        "/r403": error(403, "forbidden"),
        "/r404": error(404, "not_found"),
        "/r422": error(422, "validation_error"),
        "/r429": error(429, "rate_limited", **{"Retry-After": "1"}),
        "/r500": error(500, "internal_error"),
        "/r502": {"status_code": 502, "text": f"<html>{TEST_KEY}</html>"},
        "/reset": {"fail": "reset"},
        "/timeout": {"fail": "timeout"},
        "/truncated": {"status_code": 200, "text": '{"data": ['},
    }
    for path, response in paths.items():
        http_stub.get(path, **response)
    http_stub.get("/contacts", **error(401, "unauthorized"))
    texts = []
    with caplog.at_level(logging.DEBUG):
        for path in paths:
            try:
                hook.request("GET", path)
            except ClarkyError as exc:
                texts += [str(exc), repr(exc), exc.message]
        texts.append(hook.test_connection()[1])
    texts += [record.getMessage() for record in caplog.records]
    assert len(texts) > len(paths)
    for text in texts:
        assert TEST_KEY not in text
    assert any("***" in text for text in texts)  # the echoed key was scrubbed, not dropped silently


# -- progress -------------------------------------------------------------------------------


def test_progress_lines_are_compact_and_keyless(monkeypatch, http_stub, fake_clock, caplog):
    from clarky_provider.hooks.progress import ProgressLog

    set_clarky_conn(
        monkeypatch, host=http_stub.api_url, extra={"requests_per_minute": 120, "max_concurrency": 1}
    )
    ids = [f"c_{i}" for i in range(300)]
    headers = {"X-RateLimit-Remaining": "37", "X-RateLimit-Reset": str(int(fake_clock.epoch) + 60)}
    http_stub.get(
        "/contacts",
        [{**page(contacts(*ids[n * 100 : (n + 1) * 100]), n + 1, 300), "headers": headers} for n in range(3)],
    )
    hook = ClarkyHook()
    progress = ProgressLog("contacts", hook.stats, interval=0.0)
    with caplog.at_level(logging.INFO, logger="clarky_provider.hooks.progress"):
        assert len(list(hook.paginate("contacts", on_page=progress.page))) == 300
        progress.finish()
    lines = [r.getMessage() for r in caplog.records if r.name == "clarky_provider.hooks.progress"]
    assert len(lines) == 4
    assert lines[0] == (
        "contacts: page 1/3, 0 of 300 records (0%), 0 rec/s, 37 requests left in the rate window, 0 retries"
    )
    assert re.fullmatch(
        r"contacts: page 2/3, 100 of 300 records \(33%\), \d+ rec/s, 37 requests left in the rate window, "
        r"0 retries, ETA \d+s",
        lines[1],
    ), lines[1]
    assert lines[-1].startswith("contacts: page 3/3, 300 of 300 records (100%),") and lines[-1].endswith(
        "- done"
    )
    assert all("\n" not in line and TEST_KEY not in line for line in lines)


def test_huge_and_precise_numbers_decode_exactly(hook, http_stub):
    body = '{"data": [{"id": "c_1", "deal_value": 123456789012345678901234567890, "x": 0.30000000000000004, "y": 1e-7}]}'
    http_stub.get("/contacts", text=body)
    (record,) = hook.paginate("contacts")
    assert record["deal_value"] == 123456789012345678901234567890
    assert record["x"] == 0.1 + 0.2 and record["y"] == 1e-7


def test_list_that_changes_while_paged_is_read_again(hook, http_stub, caplog):
    # co_new is inserted at the front once page 1 has been served: co_99 shifts onto page 2's
    # first slot, so the first sweep never sees co_new and the count comes up one short.
    listing = [f"co_{i}" for i in range(101)]

    def respond(request):
        number = int(request.qs["page"][0])
        served = contacts(*listing[(number - 1) * 100 : number * 100])
        if number == 1 and "co_new" not in listing:
            listing.insert(0, "co_new")
        return page(served, number, len(listing))["json"]

    http_stub.get("/companies", json=respond)
    ids = [r["id"] for r in hook.paginate("companies")]
    assert sorted(ids) == sorted(listing) and len(ids) == 102
    assert http_stub.call_count == 3  # the re-sweep stops at the page that completes the count
    assert (
        "101 of 102 records seen after one sweep (1 missing, pages repeated records); re-reading with further sweeps"
        in caplog.text
    )
    assert hook.stats.total_reported == 102 and hook.stats.recovery_requests == 1
