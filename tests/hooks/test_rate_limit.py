"""The key's budget is shared by every process on a host (one state file) and paced from the server's headers."""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import json
import logging
import math
import os
import random
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from pathlib import Path

import pytest

from clarky_provider.hooks import rate_limit
from clarky_provider.hooks.clarky import ClarkyHook
from clarky_provider.hooks.rate_limit import RateLimiter
from clarky_provider.testing import ClarkyEmulator
from tests.conftest import TEST_KEY, set_clarky_conn

API = "https://clarky.ai/api/v1"

INTERVAL = 60 / (120 * 0.99)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "limits"


def limiter(folder: Path, key_id: str = "0123abcd4567", rpm: float = 120) -> RateLimiter:
    """A limiter on the state folder; two of them behave as two processes on one host would."""
    return RateLimiter(rpm, key_id, folder)


# -- spacing, one host ------------------------------------------------------------------------


def test_starts_are_spaced_at_99_percent_of_the_budget(folder, fake_clock):
    one = limiter(folder)
    assert [one.acquire() for _ in range(4)] == pytest.approx([0, INTERVAL, INTERVAL, INTERVAL])
    assert fake_clock.now - 1_000.0 == pytest.approx(3 * INTERVAL)


def test_two_processes_on_one_folder_take_turns(folder, fake_clock):
    first, second = limiter(folder), limiter(folder)
    waits = [first.acquire(), second.acquire(), first.acquire(), second.acquire()]
    # together they get one budget: every start one interval after the previous, whoever asks
    assert waits == pytest.approx([0, INTERVAL, INTERVAL, INTERVAL])


def test_separate_folders_pace_separately(tmp_path, fake_clock):
    """What two hosts (or the old per-process limiter) do: each spends the whole budget."""
    first, second = limiter(tmp_path / "host-a"), limiter(tmp_path / "host-b")
    assert [first.acquire(), second.acquire()] == [0, 0]


def test_other_keys_and_budgets_have_their_own_state(folder, fake_clock):
    base = limiter(folder)
    base.acquire()
    assert limiter(folder, key_id="ffff00001111").acquire() == 0
    assert limiter(folder, rpm=60).acquire() == 0
    assert limiter(folder).acquire() == pytest.approx(INTERVAL)


def test_threads_and_processes_never_get_the_same_slot(folder, monkeypatch):
    """Eight threads over two limiters (two processes' worth) on a frozen clock: every slot once."""
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    limiters = [limiter(folder), limiter(folder)]
    waits: list[float] = []
    lock = threading.Lock()

    def work(one: RateLimiter) -> None:
        for _ in range(25):
            wait = one.acquire()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=work, args=(limiters[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(waits) == pytest.approx([k * INTERVAL for k in range(200)])


# -- pauses reach every process on the host ----------------------------------------------------


def test_retry_after_pauses_the_other_processes(folder, fake_clock):
    first, second = limiter(folder), limiter(folder)
    first.pause(5)
    assert second.acquire() == pytest.approx(5)


def test_exhausted_budget_pauses_the_other_processes_until_reset(folder, fake_clock):
    first, second = limiter(folder), limiter(folder)
    first.observe(0, fake_clock.epoch + 20.25, 120)
    assert second.acquire() == pytest.approx(20.25)


def test_a_pause_holds_callers_already_waiting_for_their_slot(folder, fake_clock, monkeypatch):
    """A caller asleep until its slot must not start into a 429 pause another process just set."""
    first, second = limiter(folder), limiter(folder)
    first.acquire()
    sleep = fake_clock.sleep

    def sleep_while_the_other_process_hits_a_429(seconds: float) -> None:
        if not fake_clock.sleeps:
            first.pause(5)
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep_while_the_other_process_hits_a_429)
    assert second.acquire() == pytest.approx(5)
    assert fake_clock.sleeps == pytest.approx([INTERVAL, 5 - INTERVAL])


# -- the async path (the triggerer's event loop) shares the same slots and state file ----------


@pytest.fixture
def fake_async_sleep(fake_clock, monkeypatch):
    """``asyncio.sleep`` on the fake clock, as ``time.sleep`` is."""

    async def sleep(seconds: float) -> None:
        fake_clock.sleep(seconds)

    monkeypatch.setattr(rate_limit.asyncio, "sleep", sleep)
    return fake_clock


def test_budget_headers_of_either_client_are_observed(folder, fake_clock):
    """``observe_headers`` reads requests' and httpx's header mappings alike (any case)."""
    import httpx

    first, second = limiter(folder), limiter(folder)
    headers = httpx.Headers(
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(fake_clock.epoch + 20.25)}
    )
    assert first.observe_headers(headers) == 0
    assert second.acquire() == pytest.approx(20.25)
    assert first.observe_headers({"X-RateLimit-Limit": "120"}) is None  # no budget headers: nothing


def test_async_and_sync_callers_on_one_state_file_take_turns(folder, fake_async_sleep):
    """A trigger's poll (async, in the triggerer) and a sync task (another process) share slots."""
    trigger, sync = limiter(folder), limiter(folder)
    waits = [
        sync.acquire(),
        asyncio.run(trigger.acquire_async()),
        sync.acquire(),
        asyncio.run(trigger.acquire_async()),
    ]
    assert waits == pytest.approx([0, INTERVAL, INTERVAL, INTERVAL])
    assert trigger.waited_seconds == pytest.approx(2 * INTERVAL)


def test_a_sync_callers_429_holds_an_async_caller_already_waiting(folder, fake_async_sleep, monkeypatch):
    trigger, sync = limiter(folder), limiter(folder)
    sync.acquire()
    clock = fake_async_sleep

    async def sleep_while_the_sync_task_hits_a_429(seconds: float) -> None:
        if not clock.sleeps:
            sync.pause(5)
        clock.sleep(seconds)

    monkeypatch.setattr(rate_limit.asyncio, "sleep", sleep_while_the_sync_task_hits_a_429)
    assert asyncio.run(trigger.acquire_async()) == pytest.approx(5)
    assert clock.sleeps == pytest.approx([INTERVAL, 5 - INTERVAL])


def test_async_waits_leave_the_event_loop_free_and_interleave_with_a_threads(folder):
    """Real clock: a thread's sync acquires and a coroutine's async ones on one state file get
    distinct slots one interval apart, while another coroutine keeps running on the loop."""
    rpm = 600  # ~0.1 s slots
    interval = 60 / (rpm * rate_limit.UTILISATION)
    starts: list[float] = []
    lock = threading.Lock()

    def sync_task() -> None:
        one = limiter(folder, rpm=rpm)
        for _ in range(5):
            one.acquire()
            with lock:
                starts.append(time.time())

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(ticker())
        thread = threading.Thread(target=sync_task)
        thread.start()
        one = limiter(folder, rpm=rpm)
        for _ in range(5):
            await one.acquire_async()
            with lock:
                starts.append(time.time())
        await asyncio.to_thread(thread.join, 30)
        beat.cancel()
        return ticks

    ticks = asyncio.run(main())
    starts.sort()
    assert len(starts) == 10
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= interval * 0.9, gaps
    assert ticks >= 0.5 * (starts[-1] - starts[0]) / 0.01  # the loop ran while the coroutine waited


# -- pacing from the server's headers (what other hosts spend) ---------------------------------


def test_low_remaining_spreads_what_is_left_until_the_reset(folder, fake_clock):
    first, second = limiter(folder), limiter(folder)
    first.acquire()
    first.observe(3, fake_clock.epoch + 10.5, 120)  # 3 of 120 left, reset in 10.5 s
    assert second.acquire() == pytest.approx(10.5 / 4)
    assert second.acquire() == pytest.approx(INTERVAL)  # the stretch is per answer, not sticky


@pytest.mark.parametrize(
    ("remaining", "limit"),
    [(12, 120), (60, 120), (3, None)],
    ids=["10% left", "half left", "no limit header"],
)
def test_plenty_left_or_unknown_limit_keeps_the_configured_pace(folder, fake_clock, remaining, limit):
    one = limiter(folder)
    one.acquire()
    one.observe(remaining, fake_clock.epoch + 10.5, limit)
    assert one.acquire() == pytest.approx(INTERVAL)


def test_whole_second_reset_counts_from_its_earliest_reading(folder, fake_clock):
    """``Reset`` in whole seconds may be up to a second late; rounding alone must not slow us."""
    one = limiter(folder)
    one.acquire()
    one.observe(3, fake_clock.epoch + 11, 120)  # the epoch is whole: earliest reading 10 s away
    assert one.acquire() == pytest.approx(10 / 4)
    one.observe(1, fake_clock.epoch + 1, 120)  # could already be free: nothing to stretch
    assert one.acquire() == pytest.approx(INTERVAL)


def test_requests_per_minute_stays_the_ceiling(folder, fake_clock):
    one = limiter(folder)
    one.acquire()
    one.observe(5, fake_clock.epoch + 0.6, 120)  # a stretch shorter than the interval
    assert one.acquire() == pytest.approx(INTERVAL)


def test_the_hook_passes_the_limit_header(monkeypatch, requests_mock, fake_clock):
    set_clarky_conn(monkeypatch, extra={"requests_per_minute": 120, "max_concurrency": 1})
    headers = {
        "X-RateLimit-Limit": "120",
        "X-RateLimit-Remaining": "2",
        "X-RateLimit-Reset": f"{fake_clock.epoch + 30.5}",
    }
    requests_mock.get(f"{API}/agents", json={"data": []}, headers=headers)
    hook = ClarkyHook()
    hook.request("GET", "/agents")
    hook.request("GET", "/agents")
    assert fake_clock.sleeps == pytest.approx([30.5 / 3])


# -- the state file -----------------------------------------------------------------------------


def test_state_file_is_private_and_holds_only_times(monkeypatch, requests_mock, folder, fake_clock):
    monkeypatch.setenv(rate_limit.DIR_ENV, str(folder))
    set_clarky_conn(monkeypatch)
    requests_mock.get(f"{API}/agents", json={"data": []})
    hook = ClarkyHook()
    hook.request("GET", "/agents")
    path = hook.limiter.state_path
    assert path == folder / f"{hook.settings.key_fingerprint}-120.state"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    magic, next_start, paused_until = struct.unpack("<4sdd", path.read_bytes())
    assert (magic, next_start, paused_until) == (b"CKL1", pytest.approx(fake_clock.epoch + INTERVAL), 0.0)
    assert TEST_KEY not in str(path) and TEST_KEY.encode() not in path.read_bytes()


def test_default_folder_is_per_user_under_the_temp_dir(monkeypatch):
    monkeypatch.delenv(rate_limit.DIR_ENV)
    expected = Path(tempfile.gettempdir()) / f"clarky-provider-{os.getuid()}" / "limits"
    assert rate_limit.state_dir() == expected
    assert RateLimiter.shared("0123abcd4567", 120).state_path == expected / "0123abcd4567-120.state"


def test_empty_folder_setting_paces_each_process_alone(monkeypatch):
    monkeypatch.setenv(rate_limit.DIR_ENV, "")
    assert RateLimiter.shared("0123abcd4567", 120).state_path is None


def test_unusual_key_ids_never_reach_the_file_name(folder):
    assert "/" not in limiter(folder, key_id="../../etc/passwd").state_path.name  # type: ignore[union-attr]


def _fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "shared pacing state" in r.getMessage()]


def test_corrupt_state_file_falls_back_to_pacing_alone(folder, fake_clock, caplog):
    first = limiter(folder)
    first.acquire()
    assert first.state_path is not None
    first.state_path.write_bytes(b"{not a state}")
    second = limiter(folder)
    with caplog.at_level(logging.WARNING, logger="clarky_provider.hooks.rate_limit"):
        waits = [second.acquire() for _ in range(3)]
    assert waits == pytest.approx([0, INTERVAL, INTERVAL])  # still paced, now alone
    assert second.state_path is None
    assert len(_fallback_warnings(caplog)) == 1


@pytest.mark.parametrize("problem", ["folder is a file", "folder writable by others", "state is a link"])
def test_unusable_folder_falls_back_to_pacing_alone(tmp_path, fake_clock, caplog, problem):
    folder = tmp_path / "limits"
    if problem == "folder is a file":
        folder.write_text("")
    else:
        folder.mkdir(mode=0o700)
        if problem == "folder writable by others":
            folder.chmod(0o777)
        else:
            (folder / "elsewhere").write_bytes(b"")
            (folder / "0123abcd4567-120.state").symlink_to(folder / "elsewhere")
    one = limiter(folder)
    with caplog.at_level(logging.WARNING, logger="clarky_provider.hooks.rate_limit"):
        assert [one.acquire(), one.acquire()] == pytest.approx([0, INTERVAL])
        one.pause(1)
        one.observe(0, fake_clock.epoch + 3, 120)
    assert one.state_path is None
    assert len(_fallback_warnings(caplog)) == 1
    if problem == "state is a link":
        assert (folder / "elsewhere").read_bytes() == b""


def test_times_far_ahead_are_ignored(folder, fake_clock):
    """A wall clock stepped back (or a garbled value) must not stall every process for hours."""
    one = limiter(folder)
    one.acquire()
    assert one.state_path is not None
    one.state_path.write_bytes(
        struct.pack("<4sdd", b"CKL1", fake_clock.epoch + 36_000, fake_clock.epoch + 36_000)
    )
    assert limiter(folder).acquire() == 0


# -- several task processes on one key, against one emulator ----------------------------------

#: Starts N task processes on one key. Airflow is imported once, then each task is forked off
#: (as LocalExecutor and Celery workers start theirs), so three imports do not make the test slow;
#: every limiter is created after the fork, so the processes share nothing but the state folder.
#: Each builds its hook, warms the client up, and all start paging together at a barrier. The
#: warm-up is an unauthenticated request through the hook's own client (its headers without
#: the key), which the server answers 401 without counting it and which leaves a pooled
#: connection open: on the test's 10x clock a cold first request (client, connection, lazy
#: imports; 100-200 ms on a loaded machine) lands several 50 ms slots late, together with the
#: next ones, which in real time (0.5 s slots) it would not.
LAUNCHER = """
import json, logging, multiprocessing, sys
from clarky_provider.hooks.clarky import ClarkyHook

def task(start, results):
    logging.getLogger("clarky_provider.hooks.clarky").setLevel(logging.ERROR)  # no 429 retry lines
    hook = ClarkyHook(max_retry_seconds=60)
    hook.limiter
    hook.get_conn().get(hook.settings.base_url + "/contacts", headers={"Authorization": None}, timeout=30)
    start.wait(timeout=60)
    records = sum(1 for _ in hook.paginate("contacts"))
    results.put({"records": records, "requests": hook.stats.requests})

if __name__ == "__main__":
    processes = int(sys.argv[1])
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(processes), context.Queue()
    tasks = [context.Process(target=task, args=(start, results), daemon=True) for _ in range(processes)]
    for process in tasks:
        process.start()
    try:
        figures = [results.get(timeout=120) for _ in tasks]
        for process in tasks:
            process.join(timeout=30)
    finally:
        for process in tasks:
            if process.is_alive():
                process.kill()
    print(json.dumps({"tasks": figures, "exit_codes": [p.exitcode for p in tasks]}))
"""


def mean_window_fill(admitted: list[float], window: float, samples: int = 1000) -> float:
    """Mean number of admissions in the rolling window, sampled after the first window.

    This is what the server counts against the limit, so it can never exceed it (a plain rate
    over a short busy period can: an empty window lets any client burst ``limit`` at once).
    """
    first, last = admitted[0] + window, admitted[-1]
    grid = [first + (last - first) * i / (samples - 1) for i in range(samples)]
    return sum(bisect_right(admitted, t) - bisect_right(admitted, t - window) for t in grid) / samples


def test_three_processes_on_one_key_share_the_budget(tmp_path):
    """Three task processes, each configured with the key's full budget, start together.

    Each used to pace itself at the full budget: together they asked for three times the budget
    and bounced off 429s (with the old limiter this test measured 6.8-8.8% of requests answered
    429). One pacing state per host keeps them under the budget while using it.

    Budget use is measured at the server from its own admission times: the mean number of
    admitted requests in the rolling window over the busy period after its first window. The
    clock runs 10x (a 6 s minute, 50 ms slots) rather than faster: on a loaded 2-core machine
    scheduling delays of 10-20 ms are common, and at 25 ms slots they alone fill the window.
    """
    scale, limit, processes = 0.1, 120, 3
    window = 60 * scale
    env = {**os.environ, rate_limit.DIR_ENV: str(tmp_path / "limits")}
    with ClarkyEmulator(3000, time_scale=scale, rate_limit=limit, record_admissions=True) as emu:
        log = emu.stats.admissions  # (monotonic time, admitted) of every request at the budget
        env["AIRFLOW_CONN_CLARKY_DEFAULT"] = emu.connection_uri(page_size=30)  # 100 pages each
        launched = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(processes)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "shared pacing state" not in launched.stderr  # no process fell back to pacing alone
    outcome = json.loads(launched.stdout.strip().splitlines()[-1])
    assert outcome["exit_codes"] == [0] * processes
    results = outcome["tasks"]

    assert [r["records"] for r in results] == [3000] * processes
    admitted = sorted(t for t, ok in log if ok)
    rejected = len(log) - len(admitted)
    assert len(log) == sum(r["requests"] for r in results)
    busy = admitted[-1] - admitted[0]
    share_429 = rejected / len(log)
    budget_use = mean_window_fill(admitted, window) / limit
    print(
        f"\n{len(log)} requests, {rejected} 429s ({share_429:.1%}), busy {busy:.1f} s "
        f"({busy / window:.1f} windows), budget use after the first window {budget_use:.1%}"
    )
    assert busy > 2 * window, "too short a run to measure budget use"
    assert share_429 < 0.01
    assert budget_use >= 0.90


# -- one client alone, answers back out of order (latency jitter) -------------------------------


class RollingWindowServer:
    """The emulator's budget check on the fake clock: a request counts from when it arrives, for
    ``window`` seconds; every answer carries ``Remaining`` and ``Reset`` (the oldest counted
    request's expiry, in milliseconds as the scaled emulator sends it)."""

    def __init__(self, limit: int = 120, window: float = 60.0, whole_seconds: bool = False) -> None:
        self.limit, self.window, self.whole_seconds = limit, window, whole_seconds
        self.counted: collections.deque[float] = collections.deque()
        self.admitted: list[float] = []
        self.rejected = 0

    def take(self, now: float) -> tuple[bool, int, float]:
        """(admitted, Remaining, Reset) of a request arriving ``now``."""
        while self.counted and self.counted[0] <= now - self.window:
            self.counted.popleft()
        admitted = len(self.counted) < self.limit
        if admitted:
            self.counted.append(now)
            self.admitted.append(now)
        else:
            self.rejected += 1
        reset = self.counted[0] + self.window
        return (
            admitted,
            self.limit - len(self.counted),
            math.ceil(reset) if self.whole_seconds else round(reset, 3),
        )


def read_alone(
    folder: Path,
    clock,
    monkeypatch: pytest.MonkeyPatch,
    *,
    requests: int,
    latency: float,
    inbound: float = 0.0,
    whole_seconds: bool = False,
    seed: int = 7,
) -> tuple[list[float], RollingWindowServer]:
    """One client with enough requests in flight that latency never holds a start back.

    Each answer comes back ``latency`` plus up to ``latency`` more (uniform) after its start, so
    answers overtake each other and their headers reach ``observe`` out of order, as they do
    from the hook's workers; ``inbound`` of that delay is spent before the server counts the
    request, so arrivals bunch up too (``whole_seconds``: Reset as Clarky sends it, rounded up
    to the second, instead of the scaled emulator's milliseconds). Answers due while a caller sleeps for its slot are
    observed during that sleep (the other workers' answers). A 429 pauses for ``Retry-After``
    and the request goes again, as the hook does. Returns the starts and the server.
    """
    one, server, rng = limiter(folder), RollingWindowServer(whole_seconds=whole_seconds), random.Random(seed)
    answers: list[tuple[float, int, bool, int, float]] = []  # (back at, order, admitted, Remaining, Reset)
    retries = 0

    def deliver(until: float) -> None:
        nonlocal retries
        while answers and answers[0][0] <= until:
            back, _, admitted, remaining, reset = heapq.heappop(answers)
            clock.epoch = max(clock.epoch, back)
            one.observe(remaining, reset, server.limit)
            if not admitted:
                one.pause(reset - clock.epoch)
                retries += 1

    def sleep(seconds: float) -> None:
        until = clock.epoch + max(0.0, seconds)
        deliver(until)
        clock.epoch = until

    monkeypatch.setattr(time, "sleep", sleep)
    starts: list[float] = []
    while requests or retries:
        if retries:
            retries -= 1
        else:
            requests -= 1
        one.acquire()
        starts.append(clock.epoch)
        delay = latency + rng.uniform(0, latency)
        admitted, remaining, reset = server.take(clock.epoch + inbound * delay)
        heapq.heappush(answers, (clock.epoch + delay, len(starts), admitted, remaining, reset))
        deliver(clock.epoch)
    deliver(math.inf)
    return starts, server


@pytest.mark.parametrize(
    ("latency", "inbound", "whole_seconds"),
    [(0.5, 0.0, False), (1.0, 0.0, False), (4.0, 0.0, False), (1.0, 0.5, False), (1.0, 0.0, True)],
    ids=[
        "half a slot",
        "a slot",
        "four slots",
        "a slot, half of it on the way in",
        "a slot, Reset in whole seconds",
    ],
)
def test_a_client_alone_keeps_its_pace_when_answers_come_back_out_of_order(
    folder, fake_clock, monkeypatch, latency, inbound, whole_seconds
):
    """Latency jitter as large as the latency: answers overtake each other and ``Remaining``
    dips to 0 or 1 when arrivals bunch up. The server only ever counts our own requests then,
    which the even spacing already keeps under the limit, so neither the pause at 0 nor the
    stretch below 10% may hold a single start back: every start one interval after the last,
    at least 96% of the budget used, no 429."""
    starts, server = read_alone(
        folder,
        fake_clock,
        monkeypatch,
        requests=600,
        latency=latency * INTERVAL,
        inbound=inbound,
        whole_seconds=whole_seconds,
    )
    assert server.rejected == 0
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert max(gaps) == pytest.approx(INTERVAL)
    assert mean_window_fill(server.admitted, server.window) / server.limit >= 0.96


def test_one_process_uses_the_budget_when_latency_varies_as_much_as_it_is(monkeypatch):
    """The hook alone against the emulator, x10 clock, 50 ms plus up to 50 ms more per answer
    (the emulator's ``latency_jitter``): answers come back out of order; the budget is still used
    (issue 25 reported 88% here; at least 96% is the target) without 429s."""
    scale, limit = 0.1, 120
    with ClarkyEmulator(
        300, time_scale=scale, rate_limit=limit, latency=0.5, latency_jitter=0.5, record_admissions=True
    ) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(page_size=10))
        hook = ClarkyHook()
        try:
            records = sum(1 for _ in hook.paginate("contact_activities"))
        finally:
            hook.close()
        log = list(emu.stats.admissions)
    assert records == len(emu.dataset["contact_activities"])
    admitted = sorted(t for t, ok in log if ok)
    window = 60 * scale
    assert admitted[-1] - admitted[0] > 2 * window, "too short a run to measure budget use"
    assert (len(log) - len(admitted)) / len(log) < 0.01
    assert mean_window_fill(admitted, window) / limit >= 0.96
