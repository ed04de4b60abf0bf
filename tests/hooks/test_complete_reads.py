"""Every list read is checked against the API's ``total``: recovered when the order changes, never silently short."""

from __future__ import annotations

import itertools
import threading

import pytest

from clarky_provider.exceptions import ClarkyConfigError, ClarkyIncompleteReadError
from clarky_provider.hooks import listing
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.hooks.listing import Window
from clarky_provider.testing import ClarkyEmulator, DatasetSize

# -- windows ------------------------------------------------------------------------------


def test_window_cuts_at_quantiles_and_covers_every_instant():
    windows = Window(None, None).split(list(range(0, 1000, 10)), 4)
    assert windows == [Window(None, 249), Window(250, 499), Window(500, 749), Window(750, None)]


def test_window_keeps_its_bounds_and_ignores_values_outside_them():
    windows = Window(100, 400).split([0, 150, 200, 250, 300, 350, 999], 2)
    assert windows[0].low == 100 and windows[-1].high == 400
    assert all(a.high + 1 == b.low for a, b in itertools.pairwise(windows))


def test_window_isolates_an_instant_that_holds_every_value():
    assert Window(0, 100).split([50] * 9, 4) == [Window(0, 49), Window(50, 50), Window(51, 100)]
    assert Window(50, 50).split([50] * 9, 4) == []  # one instant cannot be cut: it is swept instead


# -- against the emulator -----------------------------------------------------------------


def read(emu: ClarkyEmulator, monkeypatch: pytest.MonkeyPatch, resource: str, **filters):
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
    hook = ClarkyHook()
    return hook, list(hook.paginate(resource, **filters))


def ids_of(records) -> list[str]:
    return sorted(r["id"] for r in records)


@pytest.mark.parametrize("resource", ["contacts", "companies"])
def test_stable_order_costs_no_extra_request(monkeypatch, resource):
    with ClarkyEmulator(size=DatasetSize(contacts=3000, companies=3000), rate_limit=None) as emu:
        hook, records = read(emu, monkeypatch, resource)
        assert ids_of(records) == ids_of(emu.dataset[resource])
        assert emu.stats.count(f"/{resource}") == hook.stats.requests == 30
    assert hook.stats.total_reported == hook.stats.records == 3000
    assert hook.stats.recovery_requests == hook.stats.lists_recovered == 0


@pytest.mark.parametrize("resource", ["contacts", "companies"])
def test_order_changing_per_request_still_reads_every_record(monkeypatch, resource, caplog):
    size = DatasetSize(contacts=3000, companies=3000)
    with ClarkyEmulator(size=size, rate_limit=None, order="per_request") as emu:
        hook, records = read(emu, monkeypatch, resource)
        truth = emu.dataset[resource]
    assert len(records) == len({r["id"] for r in records}) == 3000
    assert ids_of(records) == ids_of(truth)
    assert hook.stats.total_reported == 3000 and hook.stats.lists_recovered == 1
    assert "repeated" in caplog.text  # the symptom is logged, with the strategy chosen
    if resource == "contacts":  # windows that each fit in one page: about as many requests as pages
        assert "created-time windows" in caplog.text
        assert hook.stats.requests <= 2.5 * 30


def test_windows_stay_inside_a_backfill_window(monkeypatch):
    with ClarkyEmulator(2000, rate_limit=None, order="per_request") as emu:
        created = sorted(c["created_at"] for c in emu.dataset["contacts"])
        start, end = created[300], created[1700]
        hook, records = read(emu, monkeypatch, "contacts", created_after=start, created_before=end)
        truth = [c for c in emu.dataset["contacts"] if start <= c["created_at"] <= end]
    assert hook.stats.recovery_requests > 0
    assert ids_of(records) == ids_of(truth)


def test_child_lists_are_each_checked_and_recovered(monkeypatch):
    size = DatasetSize(contacts=200, forms=2, submissions_per_form=350)
    with ClarkyEmulator(size=size, rate_limit=None, order="per_request") as emu:
        hook, records = read(emu, monkeypatch, "form_submissions")
        truth = emu.dataset["form_submissions"]
    assert ids_of(records) == ids_of(truth)
    assert hook.stats.total_reported == 700 and hook.stats.lists_read == 2
    assert hook.stats.records == 700  # the parents' (forms') records are not counted as submissions


def test_fan_out_counts_only_the_child_records(monkeypatch):
    with ClarkyEmulator(300, rate_limit=None) as emu:
        hook, records = read(emu, monkeypatch, "contact_activities")
        truth = emu.dataset["contact_activities"]
    assert hook.stats.records == len(records) == len(truth)
    assert hook.stats.total_reported == len(truth) and hook.stats.lists_read == 300


def test_lists_by_parent_are_whole_and_skip_the_parents_named(monkeypatch):
    """What a resumable load keeps: each parent's whole list; the parents it names as done
    cost no request (4 forms of 4 pages each: skipping 2 saves 8 requests)."""
    size = DatasetSize(contacts=200, forms=4, submissions_per_form=350)
    with ClarkyEmulator(size=size, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        forms = sorted(f["id"] for f in emu.dataset["forms"])
        every, some = ClarkyHook(), ClarkyHook()
        all_lists = dict(every.paginate_units("form_submissions"))
        lists = dict(some.paginate_units("form_submissions", skip={forms[0], forms[1]}))
        truth = emu.dataset["form_submissions"]
    assert sorted(all_lists) == forms and sorted(lists) == forms[2:]
    for form_id, records in all_lists.items():
        assert ids_of(records) == ids_of(r for r in truth if r["form_id"] == form_id)
        assert form_id not in lists or lists[form_id] == records
    assert every.stats.requests == 1 + 4 * 4 and some.stats.requests == 1 + 2 * 4
    assert some.stats.records == 2 * 350


def test_units_are_for_resumable_resources_only():
    with pytest.raises(ClarkyConfigError, match="contact_activities"):
        next(ClarkyHook().paginate_units("companies"))


def test_every_read_of_a_hook_runs_on_one_pool_of_workers_stopped_by_close(monkeypatch):
    def read_workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("clarky-read")}

    others = read_workers()  # idle workers of other tests' hooks that were never closed
    with ClarkyEmulator(300, rate_limit=None) as emu:
        hook, _ = read(emu, monkeypatch, "contacts")
        list(hook.paginate("contact_activities"))  # a fan-out, with each parent's list paged
        used = read_workers() - others
        assert 0 < len(used) <= hook.settings.max_concurrency
        hook.close()
        assert not any(worker.is_alive() for worker in used)
        assert len(list(hook.paginate("contacts"))) == 300  # a closed hook starts fresh workers
        hook.close()


def test_a_read_that_stays_short_fails_loudly_within_its_bound(monkeypatch):
    monkeypatch.setattr(listing, "RECOVERY_REQUESTS_PER_PAGE", 0)  # bound: 10 extra requests
    size = DatasetSize(contacts=200, companies=3000)
    with ClarkyEmulator(size=size, rate_limit=None, order="per_request") as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        hook = ClarkyHook()
        with pytest.raises(ClarkyIncompleteReadError, match=r"read \d+ of the 3000 records") as info:
            list(hook.paginate("companies"))
        requests = emu.stats.count("/companies")
    assert 0 < info.value.missing < 3000
    assert requests <= 30 + 10 + hook.settings.max_concurrency


def test_emulator_order_per_request_shuffles_only_unordered_lists(monkeypatch):
    size = DatasetSize(contacts=500, activities_per_contact=20)
    with ClarkyEmulator(size=size, rate_limit=None, order="per_request") as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        hook = ClarkyHook()
        first, again = ([r["id"] for r in next(hook.iter_pages("contacts")).records] for _ in range(2))
        assert first != again  # a fresh order per request
        contact_id = emu.dataset["contacts"][0]["id"]
        activities = [
            [a["id"] for a in next(hook.iter_pages("contact_activities", parent_id=contact_id)).records]
            for _ in range(2)
        ]
        assert len(activities[0]) >= 10 and activities[0] == activities[1]  # documented order holds
    with pytest.raises(ValueError, match="order must be one of stable, per_request"):
        ClarkyEmulator(10, order="random")


def test_emulator_logs_activities_and_messages_in_their_documented_order(monkeypatch):
    with ClarkyEmulator(size=DatasetSize(contacts=50, conversations=10), rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        before = {c["id"]: c for c in emu.dataset["contacts"]}
        (contact_id,) = emu.log_activities(1)
        (conversation_id,) = emu.log_messages(1)
        hook = ClarkyHook()
        (newest_activity, *_) = hook.paginate("contact_activities", parent_id=contact_id)
        contact = hook.get_record("contacts", contact_id)
        messages = [m["id"] for m in hook.paginate("conversation_messages", parent_id=conversation_id)]
        oldest_first = [
            m["id"] for m in hook.paginate("conversation_messages", parent_id=conversation_id, order="asc")
        ]
    assert contact["last_contacted_at"] == newest_activity["created_at"]  # its latest activity
    assert contact["updated_at"] == before[contact_id]["updated_at"]  # the docs do not say it moves
    assert messages[::-1] == oldest_first and len(messages) == 4


def test_a_window_minus_others_is_what_none_of_them_holds():
    assert Window(0, 99).minus([Window(10, 19), Window(50, 59)]) == [
        Window(0, 9),
        Window(20, 49),
        Window(60, 99),
    ]
    assert Window(None, None).minus([Window(None, 9), Window(20, None)]) == [Window(10, 19)]
    assert Window(0, 9).minus([Window(0, 9)]) == []
    assert Window(5, 9).minus([Window(20, 30)]) == [Window(5, 9)]
    assert all(Window.parse(w.name) == w for w in (Window(None, 5), Window(3, None), Window(-7, 8)))


@pytest.mark.parametrize("order", ["stable", "per_request"])
def test_windowed_units_hold_every_contact_once_and_skip_the_windows_named(monkeypatch, order):
    """A long contacts read comes as created-time windows, each whole; a resumed read reads
    only the gaps between the windows it is told are done, and together they are the list."""
    with ClarkyEmulator(6000, rate_limit=None, order=order) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(page_size=50))
        truth = ids_of(emu.dataset["contacts"])
        units = list(ClarkyHook().paginate_units("contacts"))
        assert len(units) >= 0.8 * listing.UNIT_MIN_WINDOWS  # 120 pages: more than UNIT_MIN_PAGES
        # one page of values cuts unevenly; a window more than twice its planned size is cut again
        planned = -(-6000 // listing.UNIT_MIN_WINDOWS)
        assert max(len(records) for _, records in units) <= listing.UNIT_MAX_SHARE * planned
        assert ids_of(r for _, records in units for r in records) == truth
        windows = [Window.parse(name) for name, _ in units]
        for window, (_, records) in zip(windows, units, strict=True):
            assert all(window.holds(listing._millis(r["created_at"])) for r in records)

        done = {name for name, _ in units[: len(units) // 2]}
        before = emu.stats.requests
        rest = list(ClarkyHook().paginate_units("contacts", skip=done))
        resumed = emu.stats.requests - before
    kept = [r for name, records in units if name in done for r in records]
    assert ids_of(kept + [r for _, records in rest for r in records]) == truth
    assert not done & {name for name, _ in rest}
    print(f"\n{order}: {len(units)} windows; the second half alone cost {resumed} requests")


def test_a_short_contacts_read_is_one_unit(monkeypatch):
    with ClarkyEmulator(300, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        hook = ClarkyHook()
        (unit,) = list(hook.paginate_units("contacts"))
    assert unit[0] == Window(None, None).name and ids_of(unit[1]) == ids_of(emu.dataset["contacts"])
    assert hook.stats.requests == 3 and hook.stats.records == 300  # as a plain read: no extra request
