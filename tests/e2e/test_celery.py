"""The example DAGs on CeleryExecutor with two workers that share nothing but the API key.

Redis (Debian's ``redis-server``) is the broker, on a free loopback port; the scheduler,
dag-processor and api-server run as in ``test_real_scheduler.py``; two ``airflow celery worker``
processes each get their own ``CLARKY_LIMITER_DIR``, so the provider's rate limiter sees two hosts:
the task processes of one worker share the key's pacing, the two workers only meet at the server.

* The full sync, set up as the docs recommend (the ``clarky_api`` pool), keeps 429s under 1% of
  requests and uses at least 90% of the key's budget, counted at the emulator.
* A worker SIGKILLed in the middle of a long ``contact_activities`` load: the scheduler notices
  the missing heartbeats, Airflow's retry runs on the other worker, and the table ends equal to the
  emulator's data.

Needs ``redis-server`` (``apt-get install redis-server``; ``scripts/test-env.sh`` installs it as
root), the ``test`` extra (the Celery provider) and a PostgreSQL server (CLARKY_TEST_POSTGRES_URI).
Without them the tests skip, unless ``CLARKY_REQUIRE_CELERY=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from clarky_provider.resources import RESOURCES
from clarky_provider.testing import ClarkyEmulator
from clarky_provider.testing.store import DatasetSize
from tests.e2e.budget import sync_figures
from tests.e2e.deployment import CLARKY_POOL, AirflowDeployment, CeleryWorkers, RedisServer, max_overlap
from tests.e2e.test_real_scheduler import (
    DAGS,
    FULL_SYNC,
    _attempts_report,
    _postgres_server,
    _postgres_warehouse,
    _seconds,
    run_full_sync,
)
from tests.warehouse import Warehouse, assert_table_matches

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REQUIRE_ENV = "CLARKY_REQUIRE_CELERY"
WORKERS = ("w1", "w2")
#: The pool the example DAGs' Clarky tasks use, and the one-slot set-up the docs recommend.
POOL = CLARKY_POOL
RECOMMENDED_SLOTS = 1
#: Other set-ups, measured when CLARKY_CELERY_MECHANISMS=all (each costs ~40 s): 2 slots, and
#: "no pool" (more slots than the DAG has loads, so only the limiter's reading of the server's
#: headers and 429s coordinates the two hosts).
OTHER_SLOTS = {"pool_2": 2, "no_pool": 64}
#: The emulators: the documented 120 reads per rolling minute, latency with jitter as large as
#: the latency. The kill test runs on a clock 20x fast (a minute lasts 3 s).
TIME_SCALE = 0.05
LATENCY = 0.2
#: The full sync runs on a clock only 2.5x fast, so that its requests outweigh Airflow's own
#: seconds (starting each task, handing the pool's slot on: about 2 s a load, which no emulator
#: clock shrinks) about as they would at the real clock: two long fan-outs (activities of 600
#: contacts, messages of 300 conversations) besides eight short loads, about 1,000 requests,
#: 250 s of budget.
SYNC_TIME_SCALE = 0.4
SYNC_SIZE = DatasetSize(contacts=600, conversations=300)
MAX_429_SHARE = 0.01
MIN_BUDGET_USE = 0.90
#: The long load the kill test interrupts: one activities request per contact (about 25 s).
KILL_DAG = "clarky_celery_kill"
KILL_CONTACTS = 1000
KILL_PAGE_SIZE = 100
#: Kill the worker once the load has paid this share of the requests it needs.
KILL_AT = 0.3


@dataclass(repr=False)  # pytest prints fixture values in failure reports: nothing secret here
class Celery:
    deployment: AirflowDeployment
    sync_emulators: dict[str, ClarkyEmulator]
    kill_emulator: ClarkyEmulator
    warehouses: dict[str, Warehouse]

    def __repr__(self) -> str:
        return f"Celery(home={self.deployment.home})"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


def _redis_binary() -> str:
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if not binary:
        _unavailable(
            "the CeleryExecutor tests need Debian's redis-server as the broker "
            "(apt-get install redis-server; scripts/test-env.sh installs it as root)"
        )
    if importlib.util.find_spec("airflow.providers.celery") is None:
        _unavailable("apache-airflow-providers-celery is not installed (pip install -e '.[test]')")
    assert binary
    return binary


KILL_DAG_SOURCE = f'''
"""One long contact_activities load with a quick retry, for the worker-kill test."""
from datetime import datetime, timedelta

from airflow.sdk import DAG

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator

with DAG(
    dag_id="{KILL_DAG}",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={{"retries": 1, "retry_delay": timedelta(seconds=1)}},
) as dag:
    ClarkyToSqlOperator(
        task_id="load",
        resource="contact_activities",
        sql_conn_id="wh_kill",
        clarky_conn_id="clarky_kill",
        write_mode="merge",
        pool="{POOL}",
    )
'''


def _mechanisms() -> dict[str, int]:
    mechanisms = {f"pool_{RECOMMENDED_SLOTS}": RECOMMENDED_SLOTS}
    if os.environ.get("CLARKY_CELERY_MECHANISMS") == "all":
        mechanisms.update(OTHER_SLOTS)
    return mechanisms


@pytest.fixture(scope="module")
def celery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Celery]:
    redis_binary = _redis_binary()
    server = _postgres_server()
    root = tmp_path_factory.mktemp("celery")
    kill_dag = root / f"{KILL_DAG}.py"
    kill_dag.write_text(KILL_DAG_SOURCE)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer(root / "redis", redis_binary))
        emulator = functools.partial(ClarkyEmulator, latency=LATENCY, latency_jitter=LATENCY)
        sync_emulators = {
            name: stack.enter_context(
                emulator(size=SYNC_SIZE, seed=42 + i, time_scale=SYNC_TIME_SCALE, record_admissions=True)
            )
            for i, name in enumerate(_mechanisms())
        }
        kill_emulator = stack.enter_context(emulator(KILL_CONTACTS, seed=99, time_scale=TIME_SCALE))
        warehouses = {f"wh_{name}": _postgres_warehouse(stack) for name in sync_emulators}
        warehouses["wh_kill"] = _postgres_warehouse(stack)
        env = {f"AIRFLOW_CONN_{conn_id.upper()}": w.conn_json for conn_id, w in warehouses.items()}
        for name, emu in sync_emulators.items():
            env[f"AIRFLOW_CONN_CLARKY_{name.upper()}"] = emu.connection_uri()
        env["AIRFLOW_CONN_CLARKY_KILL"] = kill_emulator.connection_uri(page_size=KILL_PAGE_SIZE)
        env.update(
            {
                # A dead worker's task stops heartbeating: notice it in seconds, not 5 minutes.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            }
        )
        workers = {w: {"CLARKY_LIMITER_DIR": str(root / f"limits-{w}")} for w in WORKERS}
        deployment = stack.enter_context(
            AirflowDeployment(
                root / "deployment",
                server,
                [DAGS / f"{FULL_SYNC}.py", kill_dag],
                env,
                secrets=[e.read_key for e in [*sync_emulators.values(), kill_emulator]],
                parallelism=8,
                celery=CeleryWorkers(redis.url, workers, concurrency=4),
                pools={POOL: RECOMMENDED_SLOTS},
            )
        )
        deployment.wait_for_dags([FULL_SYNC, KILL_DAG], timeout=120)
        print(f"\n[celery] deployment up: {_seconds(deployment.timings)}")
        yield Celery(deployment, sync_emulators, kill_emulator, warehouses)
        stopping = time.monotonic()
        stack.close()
        print(f"\n[celery] deployment stopped in {time.monotonic() - stopping:.1f}s")


@pytest.mark.parametrize("mechanism", list(_mechanisms()))
def test_full_sync_on_two_workers_stays_under_the_budget_and_uses_it(
    celery: Celery, mechanism: str, record_property: pytest.RecordProperty
) -> None:
    deployment, emulator = celery.deployment, celery.sync_emulators[mechanism]
    slots = _mechanisms()[mechanism]
    deployment.set_pool(POOL, slots, "Clarky key budget")
    run_id = f"full_sync_{mechanism}"
    conf = {"sql_conn_id": f"wh_{mechanism}", "clarky_conn_id": f"clarky_{mechanism}"}
    run = run_full_sync(deployment, run_id, conf, 600)
    state, attempts, loads = run.state, run.attempts, run.loads
    limiter_files = {w: sorted(p.name for p in _limiter_dir(deployment, w).glob("*.state")) for w in WORKERS}
    use, budget = sync_figures(emulator, loads)
    figures = {
        "pool_slots": slots,
        **budget,
        "run_wall_seconds": round(run.wall_seconds, 1),
        "parallel_loads": max_overlap(loads),
        "workers_with_loads": sum(1 for files in limiter_files.values() if files),
    }
    print(
        f"\n[celery] full sync, {mechanism} ({SYNC_SIZE.contacts} contacts, {SYNC_SIZE.conversations} conversations, time scale {SYNC_TIME_SCALE}): {figures}"
    )
    for name, value in figures.items():
        record_property(name, value)
    for line in attempts:
        print(f"[celery]   {line}")

    assert not attempts, "loads failed or needed a retry:\n" + "\n".join(attempts)
    assert state == "success"
    warehouse, truth = celery.warehouses[f"wh_{mechanism}"], emulator.dataset
    for resource in RESOURCES:
        assert_table_matches(warehouse, resource, resource, truth[resource])
    # The premise: both "hosts" ran loads, each pacing with its own limiter state.
    assert figures["workers_with_loads"] == 2, f"the loads did not spread over both workers: {limiter_files}"
    assert max_overlap(loads) <= slots, f"the pool let {max_overlap(loads)} loads run at once"
    if slots == RECOMMENDED_SLOTS:
        share = emulator.stats.rate_limited / emulator.stats.requests
        assert share < MAX_429_SHARE, f"429s at {share:.1%} of requests: {figures}"
        # The server's rolling-window fill from the sync's first request to its last: what the
        # key did for the whole run, Airflow's seconds between the loads included.
        assert use.whole_run >= MIN_BUDGET_USE, f"the key's budget was under-used: {figures}"


def _limiter_dir(deployment: AirflowDeployment, worker: str) -> Path:
    return deployment.root.parent / f"limits-{worker}"


T = TypeVar("T")


def _wait(what: str, condition: Callable[[], T | None], timeout: float, deployment: AirflowDeployment) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} within {timeout:g}s\nscheduler:\n{deployment.service_log_tail('scheduler')}"
            )
        time.sleep(0.2)


def test_a_killed_worker_s_load_is_retried_on_the_other_worker(
    celery: Celery, record_property: pytest.RecordProperty
) -> None:
    deployment, emulator = celery.deployment, celery.kill_emulator
    deployment.set_pool(POOL, RECOMMENDED_SLOTS, "Clarky key budget")
    run_id = "kill_worker"
    contacts = emulator.dataset["contacts"]
    needed = math.ceil(len(contacts) / KILL_PAGE_SIZE) + len(contacts)  # contact pages + one per contact
    started = time.monotonic()
    deployment.trigger(KILL_DAG, run_id)
    deployment.unpause(KILL_DAG)
    try:

        def running_try(number: int) -> tuple[int, str] | None:
            tis = deployment.task_instances(KILL_DAG, run_id)
            ti = tis[0] if tis else None
            if ti is None or ti.state != "running" or ti.try_number != number or not ti.pid:
                return None
            worker = deployment.service_holding(ti.pid)
            return (ti.pid, worker) if worker else None

        pid, victim = _wait(
            "the load's first try running on a worker", lambda: running_try(1), 120, deployment
        )
        _wait(
            f"the first try paying {KILL_AT:.0%} of its requests",
            lambda: emulator.stats.requests >= KILL_AT * needed,
            120,
            deployment,
        )
        killed = deployment.kill_service(victim)
        killed_at = time.monotonic()
        time.sleep(0.5)  # requests the server had already admitted finish
        first_try = emulator.stats.requests
        print(
            f"\n[celery] SIGKILLed {victim} ({len(killed)} processes, task pid {pid}) after {first_try} requests"
        )

        retry_pid, rescuer = _wait(
            "the retry running on the other worker", lambda: running_try(2), 120, deployment
        )
        noticed = time.monotonic() - killed_at
        state = deployment.wait_for_runs(KILL_DAG, [run_id], timeout=150)[run_id]
        attempts = _attempts_report(deployment, KILL_DAG, [run_id])
    finally:
        deployment.fail_unfinished_runs(KILL_DAG, [run_id])
    wall = time.monotonic() - started
    retry = emulator.stats.requests - first_try

    figures = {
        "requests_needed": needed,
        "first_try_requests": first_try,
        "retry_requests": retry,
        "requests_paid_again": first_try + retry - needed,
        "rate_limited_429": emulator.stats.rate_limited,
        "kill_to_retry_running_seconds": round(noticed, 1),
        "run_wall_seconds": round(wall, 1),
    }
    print(f"[celery] retry on {rescuer} (pid {retry_pid}): {figures}")
    for name, value in figures.items():
        record_property(name, value)
    for line in attempts:
        print(f"[celery]   {line}")

    assert state == "success", attempts
    assert rescuer != victim
    assert_table_matches(
        celery.warehouses["wh_kill"],
        "contact_activities",
        "contact_activities",
        emulator.dataset["contact_activities"],
    )
    _assert_retry_resumed(first_try, retry, needed)


def _assert_retry_resumed(first_try: int, retry: int, needed: int) -> None:
    """The retry resumed: it paid again only the parents' pages and the lists in flight at the
    kill (8 of about 1,010 requests when measured), not the first try's requests."""
    paid_again = first_try + retry - needed
    assert paid_again <= max(10, 0.03 * needed), f"the retry paid {paid_again} requests again"
