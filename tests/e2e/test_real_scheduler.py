"""The example DAGs on a real Airflow deployment: scheduler, dag-processor and api-server with
LocalExecutor over a PostgreSQL metadata database, every task instance in its own process.

``dag.test()`` runs tasks one at a time in one process; here mapped tasks run side by side, so
races between task processes (two windows creating the same table) and contention on one API
key (each process paces itself, the server counts them all) show up as they would in production.

One deployment serves the whole module (starting it costs about half a minute on two cores);
each test uses its own warehouse and, for the full sync, its own emulator and key.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from clarky_provider.resources import RESOURCES
from clarky_provider.testing import ClarkyEmulator
from tests import warehouse as wh
from tests.e2e.budget import sync_figures
from tests.e2e.deployment import AirflowDeployment, TaskInstanceState, TryRecord, log_messages, max_overlap
from tests.warehouse import SqliteWarehouse, Warehouse, assert_table_matches

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DAGS = Path(__file__).resolve().parents[2] / "dags_examples"
BACKFILL = "clarky_contacts_backfill"
FULL_SYNC = "clarky_full_sync"
SYNC_CONN = "clarky_sync"
SYNC_WAREHOUSE = "wh_sync"

#: Two backfill runs of the DAG's default 365-day ``created_at`` windows, three and two of them
#: (the emulator's contacts span 2023-11 to 2026-10). The DAG caps each run at 2 concurrent
#: windows (``max_active_tis_per_dagrun=2``), so two runs triggered together put 4 in flight.
BACKFILL_HALVES = {
    "early": ("2023-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
    "late": ("2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
}
#: The full sync's emulator: the documented 120 reads per rolling minute, on a clock 10x fast (as the
#: issue measured it): parents load first, then their children, and the few seconds Airflow takes to
#: hand over between them weigh 10 API seconds each, not the 20 of a faster clock (an hours-long
#: sync at the real clock: one each).
SYNC_CONTACTS = 1000
SYNC_TIME_SCALE = 0.1
#: 429s a full sync may draw, as a share of the requests it needed. Measured on 2 cores (8 loads
#: at once, each process pacing itself at the key's full budget): 1 to 2 429s per ~1,100 requests
#: (0.1-0.2%), 7 per ~2,200 with 2,000 contacts; 2 even when every process paced at 4x the budget,
#: since each one pauses when X-RateLimit-Remaining reaches 0. Processes that ignored the
#: server's headers would draw tens of percent.
MAX_429_SHARE = 0.02
#: The full sync on one host uses at least this share of the key's budget (issue 25: 95%).
MIN_BUDGET_USE = 0.95
#: A try in one of these states settles the verdict (a failure or a retry): stop waiting.
GAVE_UP = ("up_for_retry", "failed", "upstream_failed")
#: States of a try that really ran (not one skipped or failed by ending its run early).
RAN = ("success", "failed", "up_for_retry")


@dataclass(repr=False)  # pytest prints fixture values in failure reports: nothing secret here
class E2E:
    deployment: AirflowDeployment
    backfill_emulator: ClarkyEmulator
    sync_emulator: ClarkyEmulator
    warehouses: dict[str, Warehouse]

    def __repr__(self) -> str:
        return f"E2E(home={self.deployment.home})"


def _postgres_server() -> str:
    uri = os.environ.get("CLARKY_TEST_POSTGRES_URI")
    if uri:
        return uri
    if os.environ.get("CLARKY_REQUIRE_POSTGRES"):
        pytest.fail("CLARKY_REQUIRE_POSTGRES is set but CLARKY_TEST_POSTGRES_URI is not")
    pytest.skip(
        "the end-to-end tests need a PostgreSQL server for Airflow's metadata database "
        "(run them with `make test` on a machine with postgresql, or under scripts/with-warehouses.sh)"
    )


def _postgres_warehouse(stack: contextlib.ExitStack) -> Warehouse:
    """A fresh database on the test server, dropped when the stack closes."""
    monkeypatch = stack.enter_context(pytest.MonkeyPatch.context())
    database = wh.postgres_warehouse(monkeypatch)
    warehouse = next(database)
    stack.callback(database.close)  # runs the generator's finally: DROP DATABASE
    return warehouse


def _sqlite_warehouse(path: Path) -> Warehouse:
    conn_json = json.dumps({"conn_type": "sqlite", "host": str(path)})
    return SqliteWarehouse("sqlite", "", conn_json, str(path))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    server = _postgres_server()
    root = tmp_path_factory.mktemp("e2e")
    with contextlib.ExitStack() as stack:
        # Each window's load keeps its transaction open for a few pages of latency, as against a
        # real API (windows of up to ~200 contacts: up to 4 pages of 50, 0.5 s each).
        backfill_emulator = stack.enter_context(ClarkyEmulator(600, seed=7, rate_limit=None, latency=0.5))
        sync_emulator = stack.enter_context(
            ClarkyEmulator(
                SYNC_CONTACTS,
                seed=42,
                time_scale=SYNC_TIME_SCALE,
                latency=0.2,
                latency_jitter=0.2,
                record_admissions=True,
            )
        )
        warehouses = {
            "wh_backfill_sqlite": _sqlite_warehouse(root / "backfill-warehouse.db"),
            "wh_backfill_postgres": _postgres_warehouse(stack),
            SYNC_WAREHOUSE: _postgres_warehouse(stack),
        }
        deployment = stack.enter_context(
            AirflowDeployment(
                root / "deployment",
                server,
                [DAGS],
                _deployment_env(backfill_emulator, sync_emulator, warehouses),
                secrets=[backfill_emulator.read_key, sync_emulator.read_key],
                parallelism=8,
            )
        )
        deployment.wait_for_dags([BACKFILL, FULL_SYNC], timeout=120)
        print(f"\n[e2e] deployment up: {_seconds(deployment.timings)}")
        yield E2E(deployment, backfill_emulator, sync_emulator, warehouses)
        stopping = time.monotonic()
        stack.close()
        print(f"\n[e2e] deployment stopped in {time.monotonic() - stopping:.1f}s")


def _deployment_env(
    backfill_emulator: ClarkyEmulator, sync_emulator: ClarkyEmulator, warehouses: dict[str, Warehouse]
) -> dict[str, str]:
    """Connections (keys included: never print this) and settings of every Airflow process."""
    env = {f"AIRFLOW_CONN_{conn_id.upper()}": w.conn_json for conn_id, w in warehouses.items()}
    env["AIRFLOW_CONN_CLARKY_DEFAULT"] = backfill_emulator.connection_uri(page_size=50)  # the backfill's
    env[f"AIRFLOW_CONN_{SYNC_CONN.upper()}"] = sync_emulator.connection_uri()
    env["AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY"] = "1"  # for tasks without their own retry_delay
    return env


def _seconds(timings: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}s" for name, value in timings.items())


def _attempts_report(deployment: AirflowDeployment, dag_id: str, run_ids: list[str]) -> list[str]:
    """Every try that failed or was retried, with the errors its log holds (key redacted)."""
    lines = []
    for run_id in run_ids:
        tries = {
            (t.task_id, t.map_index, t.try_number): t.state for t in deployment.earlier_tries(dag_id, run_id)
        }
        for ti in deployment.task_instances(dag_id, run_id):  # the latest try, when it gave up
            if ti.state in GAVE_UP:
                tries[(ti.task_id, ti.map_index, ti.try_number)] = ti.state
        for (task_id, map_index, try_number), state in sorted(tries.items()):
            label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
            log = deployment.task_log(dag_id, run_id, task_id, map_index, try_number)
            errors = log_messages(log, ("error", "critical")) or ["(no error in its log)"]
            lines.append(
                f"{run_id} {label} try {try_number} {state}: " + deployment.redact(" | ".join(errors))
            )
    return lines


def _load_intervals(
    deployment: AirflowDeployment, dag_id: str, run_ids: list[str], *task_ids: str
) -> list[tuple[datetime, datetime]]:
    """(start, end) of every try of the ``task_ids`` that ran, retried ones included."""
    intervals: list[tuple[datetime, datetime]] = []
    for run_id in run_ids:
        tries: dict[tuple[str, int, int], TryRecord | TaskInstanceState] = {}
        for t in [*deployment.earlier_tries(dag_id, run_id), *deployment.task_instances(dag_id, run_id)]:
            if t.task_id in task_ids:
                tries[(t.task_id, t.map_index, t.try_number)] = t  # in both tables: the live row wins
        intervals += [
            (t.start_date, t.end_date)
            for t in tries.values()
            if t.state in RAN and t.start_date and t.end_date
        ]
    return intervals


@dataclass(frozen=True)
class SyncRun:
    """A full-sync run to its end: its state, the tries that failed or retried, when each load
    ran, and its wall time."""

    state: str | None
    attempts: list[str]
    loads: list[tuple[datetime, datetime]]
    wall_seconds: float


def run_full_sync(
    deployment: AirflowDeployment, run_id: str, conf: dict[str, str], timeout: float
) -> SyncRun:
    """Trigger the full-sync DAG and wait for the run; a run still going at ``timeout`` is
    failed, and the DAG paused again, whatever happens."""
    started = time.monotonic()
    deployment.trigger(FULL_SYNC, run_id, conf)
    deployment.unpause(FULL_SYNC)
    try:
        state = deployment.wait_for_runs(FULL_SYNC, [run_id], timeout=timeout, stop_on_task_states=GAVE_UP)[
            run_id
        ]
        attempts = _attempts_report(deployment, FULL_SYNC, [run_id])
        loads = _load_intervals(deployment, FULL_SYNC, [run_id], "load", "load_parents", "load_children")
    finally:
        deployment.fail_unfinished_runs(FULL_SYNC, [run_id])
        deployment.pause(FULL_SYNC)
    return SyncRun(state, attempts, loads, time.monotonic() - started)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_backfill_windows_load_every_contact_at_the_first_try(
    e2e: E2E, kind: str, record_property: pytest.RecordProperty
) -> None:
    deployment, conn_id = e2e.deployment, f"wh_backfill_{kind}"
    warehouse = e2e.warehouses[conn_id]
    assert not warehouse.exists("contacts"), "the backfill must start on an empty warehouse"
    run_ids = [f"backfill_{kind}_{half}" for half in BACKFILL_HALVES]
    started = time.monotonic()
    for run_id, (start, end) in zip(run_ids, BACKFILL_HALVES.values(), strict=True):
        deployment.trigger(BACKFILL, run_id, {"sql_conn_id": conn_id, "start": start, "end": end})
    deployment.unpause(BACKFILL)  # both queued runs start together
    try:
        states = deployment.wait_for_runs(BACKFILL, run_ids, timeout=150, stop_on_task_states=GAVE_UP)
        attempts = _attempts_report(deployment, BACKFILL, run_ids)
        windows = _load_intervals(deployment, BACKFILL, run_ids, "load_window")
    finally:
        deployment.fail_unfinished_runs(BACKFILL, run_ids)  # no retry outlives a failed test
    elapsed = time.monotonic() - started

    print(
        f"\n[e2e] backfill on {kind}: runs {states}, {len(windows)} window tries, "
        f"up to {max_overlap(windows)} at once, {elapsed:.1f}s; failed or retried tries: {len(attempts)}"
    )
    record_property("run_wall_seconds", round(elapsed, 1))
    record_property("window_tries", len(windows))
    record_property("max_concurrent_windows", max_overlap(windows))
    record_property("failed_or_retried_tries", len(attempts))
    for line in attempts:
        print(f"[e2e]   {line}")
    assert not attempts, "windows failed or needed a retry:\n" + "\n".join(attempts)
    assert states == dict.fromkeys(run_ids, "success")
    # The test's premise: windows really ran side by side, each in its own process.
    assert max_overlap(windows) >= 3, f"only {max_overlap(windows)} windows overlapped: {windows}"
    assert_table_matches(warehouse, "contacts", "contacts", e2e.backfill_emulator.dataset["contacts"])


def test_full_sync_on_one_key_lands_every_table_and_never_writes_the_key(
    e2e: E2E, record_property: pytest.RecordProperty
) -> None:
    deployment, emulator = e2e.deployment, e2e.sync_emulator
    run_id = "full_sync"
    run = run_full_sync(deployment, run_id, {"sql_conn_id": SYNC_WAREHOUSE, "clarky_conn_id": SYNC_CONN}, 180)
    state, attempts, loads = run.state, run.attempts, run.loads
    load_phase = (max(e for _, e in loads) - min(s for s, _ in loads)).total_seconds() if loads else 0.0
    use, figures = sync_figures(emulator, loads)
    figures.update(
        run_wall_seconds=round(run.wall_seconds, 1),
        load_phase_seconds=round(load_phase, 1),
        parallel_loads=max_overlap(loads),
    )
    print(f"\n[e2e] full sync ({SYNC_CONTACTS} contacts, time scale {SYNC_TIME_SCALE}): {figures}")
    for name, value in figures.items():
        record_property(name, value)
    for line in attempts:
        print(f"[e2e]   {line}")

    assert not attempts, "loads failed or needed a retry:\n" + "\n".join(attempts)
    assert state == "success"
    warehouse, truth = e2e.warehouses[SYNC_WAREHOUSE], emulator.dataset
    for resource in RESOURCES:
        assert_table_matches(warehouse, resource, resource, truth[resource])
    assert max_overlap(loads) >= 3, "the loads did not run in parallel: the test proves nothing about sharing"
    assert emulator.stats.rate_limited / emulator.stats.requests <= MAX_429_SHARE, (
        f"429s above {MAX_429_SHARE:.0%} of requests: {figures}"
    )
    # loads run side by side on one host: the server's window stays full over the whole run
    # (measured 98.1%; 93.4% on a 20x clock, where the parents-then-children hand-over weighs
    # twice as much), on the emulator's clock, Airflow's own seconds included
    assert use.whole_run >= MIN_BUDGET_USE, f"the key's budget was under-used: {figures}"

    # The key is in no file Airflow wrote (logs, service output, config) nor in its database.
    files = list(deployment.files_under_home())
    logs = [p.read_text(errors="replace") for p in deployment.task_log_files(FULL_SYNC, run_id)]
    assert any("Loaded Clarky contacts" in log for log in logs), "the loads' own logs are not there to scan"
    assert set(deployment.task_log_files(FULL_SYNC, run_id)) <= set(files)
    for key in (emulator.read_key, e2e.backfill_emulator.read_key):
        leaked = [str(p.relative_to(deployment.home)) for p in files if key.encode() in p.read_bytes()]
        assert not leaked, f"the API key was written to {leaked}"
        assert not deployment.tables_containing(key), "the API key is in the metadata database"
