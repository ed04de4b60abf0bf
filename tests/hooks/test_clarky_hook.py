"""ClarkyHook unit tests with requests-mock: pagination, retries, pacing, errors, secrets,
redirects, what requests takes from the environment (proxies, CA bundle), and the
``requests.Session`` a user can mock or mount an adapter on.

requests-mock answers at the Session's adapter, so everything above it runs for real: the hook,
requests' environment settings, urllib3's decoding of compressed bodies. What it cannot fake (a
TLS handshake, a refused port) is in test_network_errors.py; end to end, the emulator.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pendulum
import pytest
import requests
import requests_mock
from requests.adapters import HTTPAdapter

from clarky_provider.compat import AirflowProviderDeprecationWarning
from clarky_provider.exceptions import (
    ClarkyAuthError,
    ClarkyBadRequestError,
    ClarkyConfigError,
    ClarkyConnectionError,
    ClarkyError,
    ClarkyIncompleteReadError,
    ClarkyNotFoundError,
    ClarkyPermissionError,
    ClarkyServerError,
)
from clarky_provider.hooks import rate_limit
from clarky_provider.hooks.clarky import MAX_CONNECT_RETRIES, ClarkyHook
from clarky_provider.hooks.listing import RECOVERY_REQUESTS_PER_PAGE
from clarky_provider.normalize import format_timestamp, parse_timestamp, primary_email, primary_phone
from tests.conftest import TEST_KEY, set_clarky_conn

#: The API under the default Base URL; requests-mock answers it, nothing leaves the process.
API = "https://clarky.ai/api/v1"


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


@pytest.fixture
def api():
    """requests-mock for the test, case-sensitive so that query values are seen as sent."""
    with requests_mock.Mocker(case_sensitive=True) as mocker:
        yield mocker


@pytest.fixture
def hook(monkeypatch):
    """A hook on the default Base URL, unpaced, one request at a time, quick backoff."""
    set_clarky_conn(
        monkeypatch, extra={"requests_per_minute": 1_000_000, "max_concurrency": 1, "retry_backoff": 0.01}
    )
    return ClarkyHook()


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
def test_bad_key_rejected_before_any_request(monkeypatch, api, password, expected):
    set_clarky_conn(monkeypatch, password=password)
    with pytest.raises(ClarkyConfigError, match=expected) as info:
        ClarkyHook().request("GET", "/contacts")
    assert api.call_count == 0
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


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"page_size": 500}, "ClarkyHook 'page_size' must be between 1 and 100, got 500."),
        ({"timeout": "soon"}, "ClarkyHook 'timeout' must be a positive number, got 'soon'."),
        ({"max_concurrency": 2.5}, "ClarkyHook 'max_concurrency' must be an integer, got 2.5."),
        ({"pagesize": 50}, "ClarkyHook has no pagesize; valid names: max_retry_seconds, timeout, page_size,"),
    ],
)
def test_bad_overrides_are_blamed_on_where_they_came_from(monkeypatch, api, overrides, expected):
    # the connection's extras are fine: the error must not send the user to the connection
    set_clarky_conn(monkeypatch, extra={"page_size": 100})
    with pytest.raises(ClarkyConfigError) as info:
        ClarkyHook(**overrides)
    message = str(info.value)
    assert message.startswith(expected), message
    assert "connection" not in message
    assert api.call_count == 0


def test_overrides_take_precedence_over_the_extras(monkeypatch):
    set_clarky_conn(monkeypatch, extra={"page_size": 100, "timeout": 30})
    settings = ClarkyHook(page_size=50, timeout=5).settings
    assert (settings.page_size, settings.timeout) == (50, 5.0)


def test_settings_repr_hides_key(hook):
    assert TEST_KEY not in repr(hook.settings)


def test_bearer_header_and_defaults(hook, api):
    api.get(f"{API}/contacts", **page(contacts("c_1"), 1, 1))
    list(hook.paginate("contacts"))
    (sent,) = api.request_history
    assert sent.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["User-Agent"].startswith("airflow-provider-clarky/")
    assert sent.qs == {"page": ["1"], "page_size": ["100"]}
    assert sent.timeout == hook.settings.timeout == 30.0


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE", "PUT"])
def test_hook_is_read_only(hook, api, method):
    with pytest.raises(ClarkyConfigError, match="read-only"):
        hook.request(method, "/contacts")
    assert api.call_count == 0


def test_head_is_allowed(hook, api):
    api.head(f"{API}/contacts", status_code=200)
    assert hook.request("HEAD", "/contacts") == {}


# -- the requests.Session -------------------------------------------------------------------


def test_get_conn_is_a_requests_session_pooled_for_max_concurrency(monkeypatch):
    set_clarky_conn(monkeypatch, extra={"max_concurrency": 7})
    hook = ClarkyHook()
    session = hook.get_conn()
    assert isinstance(session, requests.Session)
    assert hook.get_conn() is session  # one per hook, reused by every request
    assert session.trust_env  # proxies and CA bundles come from the environment
    for url in (API, "http://127.0.0.1:8080/api/v1"):
        adapter = session.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        assert adapter.poolmanager.connection_pool_kw["maxsize"] == 7
        assert adapter.max_retries.total == 0  # the hook retries, not urllib3
    hook.close()  # a closed hook makes a fresh Session when used again
    assert hook.get_conn() is not session
    hook.close()


def test_an_adapter_mounted_on_get_conn_serves_the_hook(hook):
    # the Session get_conn() returns is the one every request goes through
    adapter = requests_mock.Adapter()
    adapter.register_uri("GET", f"{API}/contacts/c_1", json={"data": {"id": "c_1"}})
    hook.get_conn().mount("https://", adapter)
    assert hook.get_record("contacts", "c_1") == {"id": "c_1"}
    assert adapter.call_count == 1
    assert adapter.last_request.headers["Authorization"] == f"Bearer {TEST_KEY}"


def test_a_users_requests_mock_intercepts_get_record_and_paginate(monkeypatch):
    """As in a user's DAG test: their own connection and their own requests_mock.Mocker()."""
    monkeypatch.setenv("AIRFLOW_CONN_CRM", json.dumps({"conn_type": "clarky", "password": TEST_KEY}))
    hook = ClarkyHook("crm")
    hook.get_conn()  # a Session made before the mocker starts is intercepted as well
    with requests_mock.Mocker() as mocker:
        mocker.get(f"{API}/contacts/c_1", json={"data": {"id": "c_1", "first_name": "Ada"}})
        mocker.get(f"{API}/contacts", **page(contacts("c_1", "c_2"), 1, 2))
        assert hook.get_record("contacts", "c_1") == {"id": "c_1", "first_name": "Ada"}
        assert [c["id"] for c in hook.paginate("contacts", tags="vip")] == ["c_1", "c_2"]
    assert [r.path for r in mocker.request_history] == ["/api/v1/contacts/c_1", "/api/v1/contacts"]
    assert mocker.last_request.qs["tags"] == ["vip"]


# -- what requests takes from the environment, redirects, compression ------------------------


def unset(monkeypatch, names):
    """Remove environment variables in either case (requests reads proxy ones in both)."""
    for name in names:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_the_environments_proxy_reaches_the_request(monkeypatch, hook, api):
    unset(monkeypatch, ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"))
    proxy = "http://user:p%40ss@proxy.example:3128"
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    api.get(f"{API}/contacts", **page(contacts("c_1"), 1, 1))
    list(hook.paginate("contacts"))
    assert api.last_request.proxies["https"] == proxy


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_environments_ca_bundle_reaches_the_request(monkeypatch, hook, api, tmp_path, variable):
    unset(monkeypatch, ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"))
    bundle = tmp_path / "private-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")  # requests only passes the path on
    monkeypatch.setenv(variable, str(bundle))
    api.get(f"{API}/contacts", **page(contacts("c_1"), 1, 1))
    list(hook.paginate("contacts"))
    assert api.last_request.verify == str(bundle)


def test_redirect_is_refused_not_followed(hook, api):
    moved = f"{API}/moved/contacts"  # mocked too: following it would be counted
    api.get(f"{API}/contacts", status_code=302, headers={"Location": moved})
    api.get(moved, **page(contacts("c_1"), 1, 1))
    with pytest.raises(ClarkyConfigError, match="redirect") as info:
        hook.request("GET", "/contacts")
    assert api.call_count == 1
    message = str(info.value)
    assert "HTTP 302" in message and repr(moved) in message and "does not follow" in message
    assert TEST_KEY not in message


def test_compressed_answers_are_asked_for_and_decoded(hook, api):
    body = gzip.compress(json.dumps(page(contacts("c_1", "c_2"), 1, 2)["json"]).encode())
    api.get(f"{API}/contacts", content=body, headers={"Content-Encoding": "gzip"})
    assert [r["id"] for r in hook.paginate("contacts")] == ["c_1", "c_2"]
    assert "gzip" in api.last_request.headers["Accept-Encoding"]


# -- retries ------------------------------------------------------------------------------


def test_429_waits_retry_after_then_retries(hook, api, fake_clock):
    api.get(
        f"{API}/contacts",
        [error(429, "rate_limited", **{"Retry-After": "7"}), page(contacts("c_1"), 1, 1)],
    )
    assert [r["id"] for r in hook.paginate("contacts")] == ["c_1"]
    assert api.call_count == 2
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
        {"exc": requests.exceptions.ConnectionError("Connection aborted: connection reset by peer")},
        {"exc": requests.exceptions.ReadTimeout("Read timed out. (read timeout=30)")},
        {"status_code": 200, "text": '{"data": [{"id": "c_1"'},
    ],
    ids=["500", "502-html", "503-html", "504", "reset", "timeout", "truncated-json"],
)
def test_transient_failures_are_retried(hook, api, fake_clock, failure):
    api.get(f"{API}/contacts", [failure, failure, page(contacts("c_1"), 1, 1)])
    assert [r["id"] for r in hook.paginate("contacts")] == ["c_1"]
    assert api.call_count == 3
    assert len([s for s in fake_clock.sleeps if s > 0]) == 2


def test_a_connection_that_cannot_be_made_is_retried_briefly(hook, api, fake_clock):
    # max_retries is 5, but a connection nobody accepts is most often a wrong Base URL
    api.get(f"{API}/contacts", exc=requests.exceptions.ConnectTimeout("connect timed out"))
    with pytest.raises(ClarkyConnectionError) as info:
        hook.request("GET", "/contacts")
    assert not isinstance(info.value, ClarkyServerError)
    assert api.call_count == 1 + MAX_CONNECT_RETRIES < 1 + hook.settings.max_retries
    message = str(info.value)
    assert f"could not connect to {API}/contacts within 30s" in message
    assert "Base URL" in message and f"gave up after {MAX_CONNECT_RETRIES} retries" in message


def test_backoff_grows_exponentially_with_jitter(monkeypatch, api, fake_clock):
    set_clarky_conn(monkeypatch, extra={"requests_per_minute": 1_000_000, "max_retries": 4})
    api.get(f"{API}/contacts", status_code=500, json={"error": {"code": "internal_error", "message": "x"}})
    with pytest.raises(ClarkyServerError, match="gave up after 4 retries"):
        ClarkyHook().request("GET", "/contacts")
    sleeps = [s for s in fake_clock.sleeps if s > 0]
    assert len(sleeps) == 4
    for attempt, slept in enumerate(sleeps):
        assert 2**attempt / 2 <= slept <= 2**attempt


def test_persistent_5xx_gives_up_with_clear_error(hook, api, fake_clock):
    api.get(f"{API}/contacts", status_code=502, text="<html>Bad Gateway</html>")
    with pytest.raises(ClarkyServerError) as info:
        hook.request("GET", "/contacts")
    assert api.call_count == 1 + hook.settings.max_retries
    message = str(info.value)
    assert "HTTP 502" in message and "non-JSON body" in message and "gave up after 5 retries" in message


def test_retrying_is_bounded_by_total_time(monkeypatch, api, fake_clock):
    set_clarky_conn(
        monkeypatch, extra={"requests_per_minute": 1_000_000, "max_retries": 100, "retry_backoff": 5}
    )
    api.get(f"{API}/contacts", exc=requests.exceptions.ConnectionError("connection reset by peer"))
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
def test_client_errors_fail_at_once(hook, api, status, code, exc_type):
    api.get(f"{API}/contacts", **error(status, code, "bad thing", **{}))
    with pytest.raises(exc_type) as info:
        hook.request("GET", "/contacts")
    assert api.call_count == 1
    assert (
        info.value.status == status and info.value.code == code and info.value.message.startswith("bad thing")
    )


def test_401_says_to_rotate_the_key(hook, api):
    api.get(f"{API}/contacts", **error(401, "unauthorized", "Missing or invalid API key"))
    with pytest.raises(ClarkyAuthError, match="invalid or revoked; rotate it"):
        list(hook.paginate("contacts"))


def test_error_details_are_kept(hook, api):
    body = {
        "error": {
            "code": "validation_error",
            "message": "page_size too big",
            "details": {"field": "page_size"},
        }
    }
    api.get(f"{API}/contacts", status_code=422, json=body)
    with pytest.raises(ClarkyBadRequestError) as info:
        hook.request("GET", "/contacts")
    assert info.value.details == {"field": "page_size"}


# -- pacing -------------------------------------------------------------------------------


def test_requests_are_paced_under_the_budget(monkeypatch, api, fake_clock):
    set_clarky_conn(monkeypatch, extra={"requests_per_minute": 120, "max_concurrency": 1})
    api.get(f"{API}/agents", json={"data": []})
    hook = ClarkyHook()
    for _ in range(11):
        hook.request("GET", "/agents")
    # 10 gaps at 99% of 120/min: 10 * 60 / 118.8 s
    assert rate_limit.UTILISATION == 0.99
    assert fake_clock.now - 1_000.0 == pytest.approx(10 * 60 / (120 * 0.99))


def test_exhausted_budget_header_pauses_until_reset(hook, api, fake_clock):
    reset = int(fake_clock.epoch) + 20
    api.get(
        f"{API}/agents",
        json={"data": []},
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset), "X-RateLimit-Limit": "120"},
    )
    hook.request("GET", "/agents")
    hook.request("GET", "/agents")
    assert max(fake_clock.sleeps) == pytest.approx(20, abs=0.01)


# -- pagination ---------------------------------------------------------------------------


def test_pages_until_total_pages(hook, api):
    api.get(
        f"{API}/contacts",
        [page(contacts(*[f"c_{i}" for i in range(100)]), 1, 102), page(contacts("c_100", "c_101"), 2, 102)],
    )
    assert len(list(hook.paginate("contacts"))) == 102
    assert api.call_count == 2


def test_total_pages_is_reread_on_every_page(hook, api):
    full = [f"c_{i}" for i in range(300)]
    api.get(
        f"{API}/contacts",
        [
            page(contacts(*full[:100]), 1, 200),
            page(contacts(*full[100:200]), 2, 300),  # the CRM grew while we paged
            page(contacts(*full[200:]), 3, 300),
        ],
    )
    assert len(list(hook.paginate("contacts"))) == 300


def test_stops_on_empty_page_but_a_short_read_never_passes(hook, api):
    # the totals promise 500 records, the pages end after one: paging stops at the empty page,
    # recovery re-reads within its bound, and the read fails instead of passing for complete
    api.get(f"{API}/companies", [page(contacts("co_1"), 1, 500), page([], 2, 500)])
    with pytest.raises(ClarkyIncompleteReadError, match="read 1 of the 500 records") as info:
        list(hook.paginate("companies"))
    assert info.value.missing == 499
    assert api.call_count <= 2 + RECOVERY_REQUESTS_PER_PAGE * 5 + 10


def test_missing_pagination_object_reads_until_short_page(hook, api):
    api.get(
        f"{API}/companies",
        [
            {"json": {"data": contacts(*[f"co_{i}" for i in range(100)])}},
            {"json": {"data": contacts("co_x")}},
        ],
    )
    assert len(list(hook.paginate("companies"))) == 101
    assert api.call_count == 2


def test_duplicate_ids_across_pages_are_dropped(hook, api):
    first = contacts(*[f"c_{i}" for i in range(100)])
    api.get(
        f"{API}/contacts",
        [page(first, 1, 101), page(contacts("c_99", "c_5", "9f1c6a9e-8c3b-4ea2-bf8c-5b08f7a4d6c2"), 2, 101)],
    )
    ids = [r["id"] for r in hook.paginate("contacts")]
    assert len(ids) == len(set(ids)) == 101
    assert "9f1c6a9e-8c3b-4ea2-bf8c-5b08f7a4d6c2" in ids
    assert hook.stats.duplicates_dropped == 2


def test_concurrent_pages_arrive_in_page_order(monkeypatch, api):
    set_clarky_conn(
        monkeypatch, extra={"requests_per_minute": 1_000_000, "max_concurrency": 4, "page_size": 10}
    )
    ids = [f"c_{i:03d}" for i in range(95)]

    def respond(request, context):
        number = int(request.qs["page"][0])
        return page(contacts(*ids[(number - 1) * 10 : number * 10]), number, 95, 10)["json"]

    api.get(f"{API}/contacts", json=respond)
    assert [r["id"] for r in ClarkyHook().paginate("contacts")] == ids


def test_child_resources_fan_out_and_carry_parent_id(hook, api):
    api.get(f"{API}/pipelines", **page([{"id": "p_1"}, {"id": "p_2"}], 1, 2))
    api.get(f"{API}/pipelines/p_1/stages", json={"data": [{"id": "ps_1", "order_index": 0}]})
    api.get(f"{API}/pipelines/p_2/stages", json={"data": [{"id": "ps_2", "pipeline_id": "p_2"}]})
    stages = list(hook.paginate("pipeline_stages"))
    assert [(s["id"], s["pipeline_id"]) for s in stages] == [("ps_1", "p_1"), ("ps_2", "p_2")]
    assert all("page" not in r.qs for r in api.request_history[1:])


def test_unsupported_filter_is_rejected_locally(hook, api):
    with pytest.raises(
        ClarkyConfigError, match="'updated_after' is not supported by Clarky resource 'companies'"
    ):
        list(hook.paginate("companies", updated_after="2026-01-01T00:00:00Z"))
    assert api.call_count == 0


def test_unknown_resource_lists_valid_names(hook):
    with pytest.raises(ClarkyConfigError, match=r"Unknown Clarky resource 'deals'.*contacts"):
        list(hook.paginate("deals"))


def test_timestamp_filters_are_sent_as_utc(hook, api):
    api.get(f"{API}/contacts", **page([], 1, 0))
    local = pendulum.datetime(2026, 1, 15, 11, 0, 0, tz="Europe/Zurich")
    list(
        hook.paginate("contacts", updated_after=local, created_before=datetime(2026, 2, 1, 0, 0, 0, 500_000))
    )
    qs = api.request_history[0].qs
    assert qs["updated_after"] == ["2026-01-15T10:00:00Z"]
    assert qs["created_before"] == ["2026-02-01T00:00:00.500Z"]


def test_get_record_and_find_by_email(hook, api):
    api.get(f"{API}/contacts/c_1", json={"data": {"id": "c_1"}})
    api.get(f"{API}/contacts/by-email", [{"json": {"data": {"id": "c_1"}}}, error(404, "not_found")])
    assert hook.get_record("contacts", "c_1") == {"id": "c_1"}
    assert hook.find_contact_by_email("ada@example.com") == {"id": "c_1"}
    assert hook.find_contact_by_email("nobody@example.com") is None


def test_get_df_is_a_dataframe_of_the_records(hook, api):
    api.get(f"{API}/contacts", **page(contacts("c_1", "c_2"), 1, 2))
    frame = hook.get_df("contacts", tags="vip")
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_dict("records") == contacts("c_1", "c_2")
    assert api.last_request.qs["tags"] == ["vip"]  # filters as in paginate


def test_get_pandas_df_is_a_deprecated_alias_of_get_df(hook, api):
    api.get(f"{API}/contacts", **page(contacts("c_1", "c_2"), 1, 2))
    with pytest.warns(AirflowProviderDeprecationWarning, match="get_pandas_df is deprecated; use get_df"):
        frame = hook.get_pandas_df("contacts")
    pd.testing.assert_frame_equal(frame, hook.get_df("contacts"))


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


def test_test_connection_ok(hook, api):
    api.get(f"{API}/contacts", **page(contacts("c_1"), 1, 42, 1))
    ok, message = hook.test_connection()
    assert ok and "42 contacts" in message


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (error(401, "unauthorized"), "invalid or has been revoked"),
        (
            {"exc": requests.exceptions.ConnectionError("connection reset by peer")},
            "Could not get an answer from https://clarky.ai/api/v1",
        ),
        (
            {"exc": requests.exceptions.ReadTimeout("Read timed out.")},
            f"no answer from {API}/contacts within 30s (timeout)",
        ),
    ],
    ids=["401", "reset", "timeout"],
)
def test_test_connection_explains_failures(hook, api, failure, expected):
    # refused ports, TLS to a plain-HTTP port and malformed URLs: test_network_errors.py
    api.get(f"{API}/contacts", **failure)
    ok, message = hook.test_connection()
    assert not ok and expected in message
    assert api.call_count == hook.stats.requests == 1  # no retries behind the Test button
    assert TEST_KEY not in message


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("ck_live_short", "The API key is 13 characters long"),
        ("sk_live_" + "x" * 30, "The API key does not start with 'ck_live_'"),
    ],
)
def test_malformed_key_message_names_no_temporary_connection_id(monkeypatch, api, password, expected):
    # the UI's and REST API's Test exports the form as a connection with a random id, as here
    transient = "2E0I2IVl"
    set_clarky_conn(monkeypatch, conn_id=transient, password=password)
    ok, message = ClarkyHook(transient).test_connection()
    assert not ok and message.startswith(expected)
    assert transient not in message and password not in message
    assert api.call_count == 0


# -- secrets ------------------------------------------------------------------------------


def test_key_never_appears_in_logs_or_errors(hook, api, fake_clock, caplog):
    """Drive every error path with a known key and look for it in everything we produced."""
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
        "/reset": {"exc": requests.exceptions.ConnectionError(f"reset while sending Bearer {TEST_KEY}")},
        "/timeout": {"exc": requests.exceptions.ReadTimeout(f"slow answer to Bearer {TEST_KEY}")},
        "/connect": {"exc": requests.exceptions.ConnectTimeout(f"no connection for Bearer {TEST_KEY}")},
        "/truncated": {"status_code": 200, "text": '{"data": ['},
        "/redirect": {"status_code": 301, "headers": {"Location": f"https://evil.example/?key={TEST_KEY}"}},
    }
    for path, response in paths.items():
        api.get(API + path, **response)
    api.get(f"{API}/contacts", **error(401, "unauthorized"))
    texts = []
    with caplog.at_level(logging.DEBUG):
        for path in paths:
            try:
                hook.request("GET", path)
            except ClarkyError as exc:
                texts += [str(exc), repr(exc), getattr(exc, "message", "")]
        texts.append(hook.test_connection()[1])
    texts += [record.getMessage() for record in caplog.records]
    assert len(texts) > len(paths)
    for text in texts:
        assert TEST_KEY not in text
    assert any("***" in text for text in texts)  # the echoed key was scrubbed, not dropped silently


# -- progress -------------------------------------------------------------------------------


def test_progress_lines_are_compact_and_keyless(monkeypatch, api, fake_clock, caplog):
    from clarky_provider.operators.progress import ProgressLog

    set_clarky_conn(monkeypatch, extra={"requests_per_minute": 120, "max_concurrency": 1})
    ids = [f"c_{i}" for i in range(300)]
    headers = {"X-RateLimit-Remaining": "37", "X-RateLimit-Reset": str(int(fake_clock.epoch) + 60)}
    api.get(
        f"{API}/contacts",
        [{**page(contacts(*ids[n * 100 : (n + 1) * 100]), n + 1, 300), "headers": headers} for n in range(3)],
    )
    hook = ClarkyHook()
    progress = ProgressLog("contacts", hook.stats, interval=0.0)
    with caplog.at_level(logging.INFO, logger="clarky_provider.operators.progress"):
        assert len(list(hook.paginate("contacts", on_page=progress.page))) == 300
        progress.finish()
    lines = [r.getMessage() for r in caplog.records if r.name == "clarky_provider.operators.progress"]
    assert len(lines) == 4
    assert lines[0] == (
        "contacts: page 1/3, 0 of 300 records (0%), 0 records/s, 1 request, 37 left in the key's rate "
        "window, 0 retries"
    )
    assert re.fullmatch(
        r"contacts: page 2/3, 100 of 300 records \(33%\), \d+ records/s, 2 requests, 37 left in the "
        r"key's rate window, 0 retries, ETA \d+s",
        lines[1],
    ), lines[1]
    # two paced gaps of 60/118.8 s: wall time waiting for the budget, in plain words
    assert re.fullmatch(
        r"contacts: page 3/3, 300 of 300 records \(100%\), \d+ records/s, 3 requests, 37 left in the "
        r"key's rate window, 0 retries, 1s waiting for the key's budget - done",
        lines[-1],
    ), lines[-1]
    assert hook.stats.budget_wait_seconds == pytest.approx(2 * 60 / (120 * 0.99))
    assert all("\n" not in line and TEST_KEY not in line for line in lines)


def test_huge_and_precise_numbers_decode_exactly(hook, api):
    body = '{"data": [{"id": "c_1", "deal_value": 123456789012345678901234567890, "x": 0.30000000000000004, "y": 1e-7}]}'
    api.get(f"{API}/contacts", text=body)
    (record,) = hook.paginate("contacts")
    assert record["deal_value"] == 123456789012345678901234567890
    assert record["x"] == 0.1 + 0.2 and record["y"] == 1e-7


def test_list_that_changes_while_paged_is_read_again(hook, api, caplog):
    # co_new is inserted at the front once page 1 has been served: co_99 shifts onto page 2's
    # first slot, so the first sweep never sees co_new and the count comes up one short.
    listing = [f"co_{i}" for i in range(101)]

    def respond(request, context):
        number = int(request.qs["page"][0])
        served = contacts(*listing[(number - 1) * 100 : number * 100])
        if number == 1 and "co_new" not in listing:
            listing.insert(0, "co_new")
        return page(served, number, len(listing))["json"]

    api.get(f"{API}/companies", json=respond)
    ids = [r["id"] for r in hook.paginate("companies")]
    assert sorted(ids) == sorted(listing) and len(ids) == 102
    assert api.call_count == 3  # the re-sweep stops at the page that completes the count
    assert (
        "101 of 102 records seen after one sweep (1 missing, pages repeated records); re-reading with further sweeps"
        in caplog.text
    )
    assert hook.stats.total_reported == 102 and hook.stats.recovery_requests == 1
