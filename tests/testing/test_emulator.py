"""The emulator behaves like the documented Clarky API, quirks and failures included."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import requests

from clarky_provider.normalize import parse_timestamp
from clarky_provider.resources import RESOURCES
from clarky_provider.testing import ClarkyEmulator, FaultPlan


@pytest.fixture(scope="module")
def emulator():
    with ClarkyEmulator(300, rate_limit=None) as emu:
        yield emu


def get(emu, path, key=None, **params):
    headers = {"Authorization": f"Bearer {key or emu.read_key}"} if key != "" else {}
    return requests.get(emu.api_url + path, params=params, headers=headers, timeout=10)


# -- auth and scopes ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["missing", "unknown", "revoked", "malformed"])
def test_bad_keys_get_401(emulator, which):
    key = {
        "missing": "",
        "unknown": "ck_live_" + "0" * 30,
        "revoked": emulator.revoked_key,
        "malformed": "hello",
    }[which]
    response = get(emulator, "/contacts", key=key)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_read_key_cannot_write_write_key_can_read(emulator):
    headers = {"Authorization": f"Bearer {emulator.read_key}", "Content-Type": "application/json"}
    response = requests.post(emulator.api_url + "/contacts", headers=headers, data="{}", timeout=10)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert get(emulator, "/contacts", key=emulator.write_key).status_code == 200


def test_keys_have_the_documented_shape(emulator):
    for key in (emulator.read_key, emulator.write_key, emulator.revoked_key):
        assert key.startswith("ck_live_") and len(key) in (38, 39)


# -- pagination ---------------------------------------------------------------------------


def test_default_page_size_and_totals(emulator):
    body = get(emulator, "/contacts").json()
    assert len(body["data"]) == 25
    assert body["pagination"] == {"page": 1, "page_size": 25, "total": 300, "total_pages": 12}


def test_pages_cover_the_dataset_exactly(emulator):
    ids = []
    for number in range(1, 4):
        ids += [r["id"] for r in get(emulator, "/contacts", page=number, page_size=100).json()["data"]]
    assert ids == [r["id"] for r in emulator.dataset["contacts"]]


def test_page_past_the_end_is_empty_with_totals(emulator):
    body = get(emulator, "/contacts", page=99, page_size=100).json()
    assert (
        body["data"] == [] and body["pagination"]["total"] == 300 and body["pagination"]["total_pages"] == 3
    )


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"page_size": 101}, 422),
        ({"page_size": 0}, 422),
        ({"page": 0}, 422),
        ({"page": "x"}, 422),
        ({"sort": "name"}, 400),
        ({"updated_after": "2026-01-01T00:00:00Z"}, 200),
    ],
)
def test_parameter_validation(emulator, params, status):
    response = get(emulator, "/contacts", **params)
    assert response.status_code == status
    if status >= 400:
        assert response.json()["error"]["code"] == ("validation_error" if status == 422 else "bad_request")


def test_unsupported_filter_on_companies_is_400(emulator):
    response = get(emulator, "/companies", updated_after="2026-01-01T00:00:00Z")
    assert response.status_code == 400 and "updated_after" in response.json()["error"]["message"]


def test_stages_are_unpaginated_and_ordered(emulator):
    pipeline = emulator.dataset["pipelines"][0]
    body = get(emulator, f"/pipelines/{pipeline['id']}/stages").json()
    assert "pagination" not in body
    assert [s["order_index"] for s in body["data"]] == list(range(6))
    assert get(emulator, f"/pipelines/{pipeline['id']}/stages", page=1).status_code == 400


def test_every_catalog_list_endpoint_is_served(emulator):
    truth = emulator.dataset
    for res in RESOURCES.values():
        if res.parent:
            parent_id = truth[res.parent][0]["id"]
            response = get(emulator, res.list_path(parent_id))
        else:
            response = get(emulator, res.path)
        assert response.status_code == 200, res.name
        assert isinstance(response.json()["data"], list)


def test_single_records_and_by_email(emulator):
    contact = next(c for c in emulator.dataset["contacts"] if c.get("emails"))
    assert get(emulator, f"/contacts/{contact['id']}").json() == {"data": contact}
    email = contact["emails"][0]
    email = email["email"] if isinstance(email, dict) else email
    assert get(emulator, "/contacts/by-email", email=email).json()["data"]["id"] is not None
    missing = get(emulator, "/contacts/by-email", email="nobody@nowhere.invalid")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert get(emulator, "/contacts/c_doesnotexist").status_code == 404
    assert get(emulator, "/pipelines/p_nope/stages").status_code == 404


# -- filters ------------------------------------------------------------------------------


def _all(emu, path, **params):
    out, number = [], 1
    while True:
        body = get(emu, path, page=number, page_size=100, **params).json()
        out += body["data"]
        if number >= body["pagination"]["total_pages"]:
            return out
        number += 1


def test_time_filters_are_inclusive(emulator):
    contacts = emulator.dataset["contacts"]
    pivot = sorted(contacts, key=lambda c: parse_timestamp(c["created_at"]))[150]
    after = _all(emulator, "/contacts", created_after=pivot["created_at"])
    before = _all(emulator, "/contacts", created_before=pivot["created_at"])
    assert pivot["id"] in {c["id"] for c in after} & {c["id"] for c in before}
    assert len(after) + len(before) == len(contacts) + 1
    updated_pivot = contacts[10]
    updated = _all(emulator, "/contacts", updated_after=updated_pivot["updated_at"])
    assert updated_pivot["id"] in {c["id"] for c in updated}
    bound = parse_timestamp(updated_pivot["updated_at"])
    assert all(parse_timestamp(c["updated_at"]) >= bound for c in updated)


def test_bad_timestamp_filter_is_422(emulator):
    assert get(emulator, "/contacts", updated_after="yesterday").status_code == 422


def test_soft_deleted_conversations_need_include_deleted(emulator):
    visible = _all(emulator, "/conversations")
    everything = _all(emulator, "/conversations", include_deleted="true")
    assert not any(c["deleted"] is True for c in visible)
    assert len(everything) > len(visible)


# -- data quirks --------------------------------------------------------------------------


def test_dataset_is_deterministic_and_has_every_quirk():
    with ClarkyEmulator(400, rate_limit=None) as a, ClarkyEmulator(400, rate_limit=None) as b:
        assert a.dataset == b.dataset
        contacts = a.dataset["contacts"]
    shapes = {type(e).__name__ for c in contacts for e in c.get("emails", [])}
    assert shapes == {"dict", "str"}
    ids = [c["id"] for c in contacts]
    assert any(i.startswith("c_01H") for i in ids) and any(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids)
    stamps = [c["created_at"] for c in contacts]
    assert any(s.endswith(".000Z") or re.search(r"\.\d{3}Z$", s) for s in stamps)
    assert any(re.search(r":\d\dZ$", s) for s in stamps)
    keys = {k for c in contacts for k in (c.get("custom_fields") or {})}
    assert "'; DROP TABLE contacts; --" in keys and any(len(k) > 63 for k in keys)
    assert any("x_engagement_score" in c for c in contacts)  # unknown new field
    assert any("workspace_id" not in c for c in contacts)  # sparse record
    assert any(
        any(ord(ch) > 0xFFFF for ch in (c.get("notes") or "") + c["last_name"]) for c in contacts
    ) or any("🎉" in json.dumps(c, ensure_ascii=False) for c in contacts)


# -- rate limiting ------------------------------------------------------------------------


def test_rate_limit_headers_429_and_recovery():
    with ClarkyEmulator(20, rate_limit=5, time_scale=0.02) as emu:  # a 1.2 s "minute"
        responses = [get(emu, "/agents") for _ in range(6)]
        for response in responses:
            assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
                response.headers
            )
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        assert [int(r.headers["X-RateLimit-Remaining"]) for r in responses[:5]] == [4, 3, 2, 1, 0]
        limited = responses[-1]
        assert limited.json()["error"]["code"] == "rate_limited"
        retry_after = float(limited.headers["Retry-After"])
        assert 0 < retry_after <= 1.2
        reset = float(limited.headers["X-RateLimit-Reset"])  # milliseconds on a scaled clock
        assert time.time() < reset <= time.time() + 1.2
        time.sleep(retry_after + 0.05)
        assert get(emu, "/agents").status_code == 200
        assert emu.stats.rate_limited == 1
        # the budget is per key: another key is unaffected
        assert get(emu, "/agents", key=emu.write_key).status_code == 200


# -- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "502", "503", "429", "drop", "truncate", "slow", "revoke"])
def test_fault_injection(kind):
    plan = FaultPlan(scheduled={2: kind}, retry_after=3, slow_seconds=50)
    with ClarkyEmulator(50, rate_limit=None, faults=plan, time_scale=0.01) as emu:
        assert get(emu, "/contacts").status_code == 200
        session = requests.Session()
        headers = {"Authorization": f"Bearer {emu.read_key}"}
        url = emu.api_url + "/contacts"
        if kind == "drop":
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                session.get(url, headers=headers, timeout=5)
        elif kind == "slow":
            with pytest.raises(requests.exceptions.ReadTimeout):
                session.get(url, headers=headers, timeout=0.2)
        else:
            response = session.get(url, headers=headers, timeout=5)
            if kind == "truncate":
                assert response.status_code == 200
                with pytest.raises(ValueError):
                    response.json()
            elif kind in ("502", "503"):
                assert response.status_code == int(kind) and response.text.startswith("<html>")
            elif kind == "429":
                assert response.status_code == 429 and float(
                    response.headers["Retry-After"]
                ) == pytest.approx(0.03)
            elif kind == "500":
                assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
            else:  # revoke: this and every later call get 401
                assert response.status_code == 401
                assert get(emu, "/contacts").status_code == 401
        assert emu.stats.faults_injected[kind] == 1
        if kind != "revoke":
            assert get(emu, "/contacts").status_code == 200


def test_fault_rates_are_seeded():
    def statuses():
        with ClarkyEmulator(20, rate_limit=None, faults=FaultPlan(rates={"500": 0.3}, seed=3)) as emu:
            return [get(emu, "/agents").status_code for _ in range(30)]

    first = statuses()
    assert first == statuses() and 500 in first and 200 in first


def test_latency_is_added():
    with ClarkyEmulator(10, rate_limit=None, latency=20, time_scale=0.01) as emu:
        started = time.monotonic()
        get(emu, "/agents")
        assert time.monotonic() - started >= 0.2


def test_concurrency_is_measured():
    with ClarkyEmulator(10, rate_limit=None, latency=0.2) as emu:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: get(emu, "/agents"), range(8)))
        assert emu.stats.peak_concurrency >= 2
        assert emu.stats.count("/agents", 200) == 8


# -- mutation -----------------------------------------------------------------------------


def test_mutation_while_paging_moves_records():
    with ClarkyEmulator(250, rate_limit=None, mutate_every=1, mutation=(5, 3, 2)) as emu:
        before = {c["id"] for c in emu.dataset["contacts"]}
        first = get(emu, "/contacts", page=1, page_size=100).json()
        second = get(emu, "/contacts", page=2, page_size=100).json()
        after = {c["id"] for c in emu.dataset["contacts"]}
    assert first["pagination"]["total"] == 250 and second["pagination"]["total"] == 253
    assert len(after - before) == 10 and len(before - after) == 4


def test_mutate_updates_updated_at():
    with ClarkyEmulator(50, rate_limit=None) as emu:
        changed = emu.mutate(updates=3, inserts=2)
        fresh = _all(emu, "/contacts", updated_after="2026-11-20T00:00:00Z")
    assert {c["id"] for c in fresh} == set(changed["updated"]) | set(changed["inserted"])


# -- CLI and pytest plugin ----------------------------------------------------------------


def test_cli_serves_until_terminated():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "clarky_provider.testing", "serve", "--port", str(port), "--contacts", "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        key = lines[2].split()[-1]
        response = requests.get(
            f"http://127.0.0.1:{port}/api/v1/contacts", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert response.json()["pagination"]["total"] == 30
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_pytest_plugin_points_the_connection_at_the_emulator(clarky_connection):
    from clarky_provider.hooks.clarky import ClarkyHook

    hook = ClarkyHook()
    assert [c["id"] for c in hook.paginate("contacts")] == [
        c["id"] for c in clarky_connection.dataset["contacts"]
    ]
