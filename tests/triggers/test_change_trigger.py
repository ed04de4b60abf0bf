"""ClarkyChangeTrigger polled against the emulator: one request per poll, an event within two
polls of a change, nothing while nothing changes, the key nowhere, 429s and outages waited out.

Each test drives ``trigger.run()`` on its own event loop (``asyncio.run``) with a short poll
interval, as the triggerer would, and cancels it at the end; every emulator is stopped by the
test that starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import structlog.testing

from clarky_provider.exceptions import ClarkyAuthError, ClarkyConfigError
from clarky_provider.hooks import rate_limit
from clarky_provider.hooks.probe import ListCount, ListProbe
from clarky_provider.hooks.rate_limit import RateLimiter
from clarky_provider.hooks.settings import read_settings
from clarky_provider.normalize import parse_timestamp
from clarky_provider.testing import ClarkyEmulator
from clarky_provider.testing.faults import FaultPlan
from clarky_provider.triggers import change
from clarky_provider.triggers.change import ClarkyChangeTrigger
from tests.conftest import TEST_KEY

#: Seconds between polls in these tests: long enough for a loaded two-core machine to keep the
#: cadence (a poll takes a few milliseconds on loopback), short enough for quick tests.
POLL = 0.4


@pytest.fixture(autouse=True)
def _no_remembered_failures():
    """A trigger waits out another's recent fatal error on the same connection (in-process)."""
    change._fatal_errors.clear()
    yield
    change._fatal_errors.clear()


class TriggerLogs:
    """The trigger's log lines, whichever logging its Airflow minor gives triggers: structlog
    (3.1 and later) or the standard library's (3.0, through pytest's ``caplog``)."""

    def __init__(self, structured: list[dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
        self._structured, self._caplog = structured, caplog

    def lines(self, level: str | None = None) -> list[str]:
        found = [(r["log_level"], str(r["event"])) for r in self._structured]
        found += [(r.levelname.lower(), r.getMessage()) for r in self._caplog.records]
        return [text for lvl, text in found if level is None or lvl == level]


@pytest.fixture
def trigger_logs(caplog: pytest.LogCaptureFixture) -> Iterator[TriggerLogs]:
    caplog.set_level(logging.DEBUG, logger="clarky_provider")
    with structlog.testing.capture_logs() as structured:
        yield TriggerLogs(structured, caplog)


@pytest.fixture
def emu(monkeypatch):
    with ClarkyEmulator(50, rate_limit=None) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emulator.connection_uri())
        yield emulator


class Run:
    """A trigger's ``run()`` on the current loop, its events collected as they come."""

    def __init__(self, trigger: ClarkyChangeTrigger) -> None:
        self.trigger = trigger
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        async for event in self.trigger.run():
            self.events.append(event.payload)

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until ``done()``; whether it came true. Re-raises the trigger's error."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            if self.task.done():
                self.task.result()
                return done()
            await asyncio.sleep(0.01)
        return done()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def drive(trigger: ClarkyChangeTrigger, scenario: Callable[[Run], Awaitable[None]]) -> None:
    async def main() -> None:
        run = Run(trigger)
        try:
            await scenario(run)
        finally:
            await run.stop()

    asyncio.run(main())


def polls(emulator: ClarkyEmulator) -> int:
    return emulator.stats.count("/contacts")


# -- polling --------------------------------------------------------------------------------


def test_no_event_while_nothing_changes_and_one_request_per_poll(emu, monkeypatch):
    """Every poll (a call of the probe's ``count``, spied on) is exactly one request at the
    emulator, a contacts count; nothing changes, so nothing fires."""
    starts: list[float] = []
    polled: list[ListCount] = []
    count = ListProbe.count

    async def spy(self: ListProbe, path: str, params: Mapping[str, str]) -> ListCount:
        starts.append(time.monotonic())
        polled.append(await count(self, path, params))
        return polled[-1]

    monkeypatch.setattr(ListProbe, "count", spy)
    trigger = ClarkyChangeTrigger(poll_interval=POLL)
    events: list[dict] = []

    async def scenario(run: Run) -> None:
        assert await run.until(lambda: len(polled) >= 6, timeout=20)
        events.extend(run.events)  # stopped right after a poll: none is in flight

    drive(trigger, scenario)
    assert emu.stats.requests == len(polled) == emu.stats.count("/contacts", 200)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= POLL * 0.9, gaps  # at the poll interval, not faster
    assert {answer.total for answer in polled} == {0}
    assert events == []


def test_an_update_fires_within_two_polls_with_the_count_and_the_new_mark(emu):
    trigger = ClarkyChangeTrigger(poll_interval=POLL)
    seen: dict[str, Any] = {}

    async def scenario(run: Run) -> None:
        await run.until(lambda: polls(emu) >= 2, timeout=10)
        assert run.events == []
        (updated,) = emu.mutate(updates=1)["updated"]
        seen["updated"] = updated
        seen["polls_before"] = polls(emu)
        seen["fired"] = await run.until(lambda: bool(run.events), timeout=3 * POLL + 2)
        seen["polls_to_event"] = polls(emu) - seen["polls_before"]
        # the same change is not reported again by the polls whose overlap still counts it
        await run.until(lambda: polls(emu) >= seen["polls_before"] + seen["polls_to_event"] + 3, timeout=10)
        seen["events"] = list(run.events)

    drive(trigger, scenario)
    assert seen["fired"], "no event within three polls of the update"
    assert 1 <= seen["polls_to_event"] <= 2
    (event,) = seen["events"]
    assert event["resource"] == "contacts" and event["changed"] == 1
    updated_at = parse_timestamp(
        next(c for c in emu.dataset["contacts"] if c["id"] == seen["updated"])["updated_at"]
    )
    since, mark = parse_timestamp(event["since"]), parse_timestamp(event["mark"])
    # the count started before the change, and the next one starts at the server's clock minus the overlap
    assert since <= updated_at
    assert updated_at - timedelta(seconds=change.DEFAULT_OVERLAP + 1) <= mark <= updated_at
    assert since <= mark


def test_every_later_change_fires_again(emu):
    trigger = ClarkyChangeTrigger(poll_interval=POLL, overlap=0)

    async def scenario(run: Run) -> None:
        await run.until(lambda: polls(emu) >= 1, timeout=10)
        for expected in (1, 2, 3):
            emu.mutate(updates=1, inserts=1)
            assert await run.until(lambda n=expected: len(run.events) >= n, timeout=3 * POLL + 2)
            # a whole second passes, so the next change's Date is past this mark's second
            await asyncio.sleep(1.1)

    drive(trigger, scenario)


def test_since_counts_what_changed_before_the_start(emu):
    emu.mutate(updates=3)
    trigger = ClarkyChangeTrigger(poll_interval=POLL, since=datetime.now(timezone.utc) - timedelta(minutes=1))

    async def scenario(run: Run) -> None:
        assert await run.until(lambda: bool(run.events), timeout=5)

    drive(trigger, scenario)


# -- the key, serialisation ---------------------------------------------------------------------


def test_serialize_round_trips_with_the_connection_id_only(emu):
    trigger = ClarkyChangeTrigger(
        resource="contacts", clarky_conn_id="clarky_default", poll_interval=30, since="2026-01-02T03:04:05Z"
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "clarky_provider.triggers.change.ClarkyChangeTrigger"
    assert kwargs == {
        "resource": "contacts",
        "clarky_conn_id": "clarky_default",
        "poll_interval": 30.0,
        "overlap": change.DEFAULT_OVERLAP,
        "since": "2026-01-02T03:04:05Z",
    }
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert emu.read_key not in json.dumps(kwargs) + repr(trigger) + repr(again)


def test_airflow_serialises_the_trigger_without_the_key(emu):
    """What the DAG processor stores for an AssetWatcher: the trigger's classpath and kwargs."""
    from airflow.sdk import Asset, AssetWatcher
    from airflow.serialization.serialized_objects import BaseSerialization

    asset = Asset("clarky.contacts", watchers=[AssetWatcher(name="w", trigger=ClarkyChangeTrigger())])
    stored = json.dumps(BaseSerialization.serialize(asset))
    assert "ClarkyChangeTrigger" in stored
    assert emu.read_key not in stored


def test_the_key_is_in_no_event_log_line_or_error(emu, trigger_logs):
    trigger = ClarkyChangeTrigger(poll_interval=POLL)
    events: list[dict] = []

    async def scenario(run: Run) -> None:
        await run.until(lambda: polls(emu) >= 1, timeout=10)
        emu.mutate(updates=2)
        assert await run.until(lambda: bool(run.events), timeout=3 * POLL + 2)
        events.extend(run.events)
        emu.revoke(emu.read_key)
        await run.until(lambda: run.task.done(), timeout=3 * POLL + 2)

    with pytest.raises(ClarkyAuthError) as failure:
        drive(trigger, scenario)
    assert events
    logs = trigger_logs.lines()
    assert any("changed at or after" in line for line in logs), logs
    text = json.dumps(events) + repr(logs) + str(failure.value) + repr(failure.value.__dict__)
    assert emu.read_key not in text


# -- errors -------------------------------------------------------------------------------------


def test_a_429_is_waited_out_on_the_shared_budget_and_polling_goes_on(monkeypatch):
    """The 429's Retry-After pauses the key's budget in the state file, so another process on
    the host (a sync) waits too; the trigger polls again after it, and still sees the change."""
    faults = FaultPlan(scheduled={2: "429"}, retry_after=2.0)
    with ClarkyEmulator(50, rate_limit=None, faults=faults, record_admissions=True) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        settings = read_settings(
            emu.base_url, emu.read_key, {"requests_per_minute": emu.requests_per_minute}, "c"
        )
        # what a sync task in another process on this host would hold
        sync = RateLimiter(settings.requests_per_minute, settings.key_fingerprint, rate_limit.state_dir())
        trigger = ClarkyChangeTrigger(poll_interval=POLL)
        seen: dict[str, Any] = {}

        async def scenario(run: Run) -> None:
            assert await run.until(lambda: emu.stats.count("/contacts", 429) == 1, timeout=10)
            limited_at = time.monotonic()
            await asyncio.sleep(0.3)  # the trigger reads the answer and pauses the budget
            seen["sync_wait"] = await asyncio.to_thread(sync.acquire)
            assert await run.until(lambda: emu.stats.count("/contacts", 200) >= 2, timeout=10)
            seen["gap"] = time.monotonic() - limited_at
            emu.mutate(updates=1)
            seen["fired"] = await run.until(lambda: bool(run.events), timeout=3 * POLL + 2)

        drive(trigger, scenario)
    assert emu.stats.count("/contacts", 429) == 1
    assert seen["sync_wait"] >= 2 - 0.3 - 0.2  # Retry-After, in the shared state file
    assert seen["gap"] >= 2 - 0.2  # the trigger's next poll waited for it too
    assert seen["fired"]


def test_server_errors_and_dropped_connections_do_not_stop_it(monkeypatch, trigger_logs):
    faults = FaultPlan(scheduled={2: "500", 3: "503", 4: "drop", 5: "truncate"})
    with ClarkyEmulator(50, rate_limit=None, faults=faults) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        trigger = ClarkyChangeTrigger(poll_interval=POLL)

        async def scenario(run: Run) -> None:
            assert await run.until(lambda: emu.stats.requests >= 6, timeout=15)
            emu.mutate(updates=1)
            assert await run.until(lambda: bool(run.events), timeout=3 * POLL + 2)

        drive(trigger, scenario)
    warnings = trigger_logs.lines("warning")
    assert len(warnings) == 4 and all("polling again" in line for line in warnings), warnings


def test_an_unreachable_api_is_polled_again_at_the_interval(monkeypatch, trigger_logs):
    """Nothing listens on the port: a connection error is a failed poll, not the end."""
    from tests.e2e.deployment import free_port

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLARKY_DEFAULT",
        json.dumps({"conn_type": "clarky", "host": f"http://127.0.0.1:{free_port()}", "password": TEST_KEY}),
    )
    trigger = ClarkyChangeTrigger(poll_interval=0.2)

    def warnings() -> list[str]:
        return trigger_logs.lines("warning")

    async def scenario(run: Run) -> None:
        assert await run.until(lambda: len(warnings()) >= 3, timeout=10)
        assert not run.task.done()

    drive(trigger, scenario)
    assert all("could not connect to http://127.0.0.1:" in line for line in warnings()), warnings()
    assert [line.split(" in a row")[0][-1] for line in warnings()[:3]] == ["1", "2", "3"]
    assert TEST_KEY not in repr(trigger_logs.lines())


def test_a_revoked_key_stops_it_with_the_fix_and_a_restart_waits_one_interval(emu):
    emu.revoke(emu.read_key)
    trigger = ClarkyChangeTrigger(poll_interval=1.0)

    async def scenario(run: Run) -> None:
        await run.until(lambda: run.task.done(), timeout=10)

    with pytest.raises(ClarkyAuthError, match=r"Settings > API Keys") as failure:
        drive(trigger, scenario)
    assert "clarky_default" in str(failure.value)
    assert polls(emu) == 1

    # the triggerer restarts a failed trigger at once; the restart waits out one interval first
    started = time.monotonic()
    with pytest.raises(ClarkyAuthError):
        drive(ClarkyChangeTrigger(poll_interval=1.0), scenario)
    assert time.monotonic() - started >= 0.8
    assert polls(emu) == 2


def test_a_bad_connection_is_a_config_error_naming_the_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", json.dumps({"conn_type": "clarky", "password": "nope"}))

    async def scenario(run: Run) -> None:
        await run.until(lambda: run.task.done(), timeout=10)

    with pytest.raises(ClarkyConfigError, match=r"connection 'clarky_default'.*does not start with"):
        drive(ClarkyChangeTrigger(poll_interval=POLL), scenario)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resource": "companies"}, r"cannot watch .companies.*contacts"),
        ({"resource": "nope"}, "Unknown Clarky resource"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"overlap": -1}, "overlap"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ClarkyConfigError, match=message):
        ClarkyChangeTrigger(**kwargs)
