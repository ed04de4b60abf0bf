"""A long load killed (SIGKILL) halfway resumes in its next try: it reads only the units (a
parent's list; a created-time window of contacts) the killed try had not finished, the target
is untouched until the resumed try commits, the table equals the source, and no progress is
left behind. On every engine; contacts under a list order that changes with every request."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.operators.resume import load_key
from clarky_provider.sql.schema import PROGRESS_TABLE
from clarky_provider.testing import ClarkyEmulator
from tests.killing import kill_after_requests, resumed_try
from tests.warehouse import ENGINES, assert_table_matches, open_warehouse

#: The killed try runs in a child process that loads as the same task instance would.
CHILD = """
import sys
from tests.operators.test_resumable_loads import load_in_child
load_in_child(sys.argv[1], sys.argv[2], sys.argv[3])
"""
#: resource -> the emulator's contacts and list order, and the connection's page size: 303
#: requests of activities; 120 pages of contacts in a fresh order per request, read in windows.
CASES = {
    "contact_activities": (300, "stable", 100),
    "contacts": (6000, "per_request", 50),
}


@pytest.fixture(params=ENGINES)
def warehouse(request, tmp_path, monkeypatch):
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


def task_instance(run_id: str, task_id: str = "load_activities") -> dict[str, Any]:
    """The part of an Airflow context that names a task instance (a try's identity)."""
    ti = SimpleNamespace(dag_id="clarky_sync", task_id=task_id, run_id=run_id, map_index=-1)
    return {"ti": ti, "dag_run": SimpleNamespace(dag_id="clarky_sync", run_id=run_id)}


def operator(
    table: str, sql_conn_id: str = "warehouse", resource: str = "contact_activities"
) -> ClarkyToSqlOperator:
    return ClarkyToSqlOperator(
        task_id="load_activities",
        resource=resource,
        sql_conn_id=sql_conn_id,
        table=table,
        clarky_hook_params={"max_concurrency": 2},
    )


def load_in_child(engine: str, fakesnow_path: str, resource: str = "contact_activities") -> None:
    """The killed try: the same task instance's load, in its own process."""
    context = task_instance("run-1")
    if engine == "snowflake":
        from clarky_provider.testing.fakesnow import strict_fakesnow

        with strict_fakesnow(Path(fakesnow_path)):
            operator(resource, resource=resource).execute(context)  # type: ignore[arg-type]
    else:
        operator(resource, resource=resource).execute(context)  # type: ignore[arg-type]


def progress_rows(warehouse) -> int:
    if not warehouse.exists(PROGRESS_TABLE):
        return 0
    return warehouse.query(f"SELECT COUNT(*) FROM {warehouse.quote(PROGRESS_TABLE)}")[0][0]


@pytest.mark.parametrize("resource", list(CASES))
def test_killed_load_resumes_where_it_stopped(warehouse, tmp_path, monkeypatch, resource):
    # the uninterrupted load, for its request count, goes to a scratch SQLite file: this process
    # must not hold the warehouse (fakesnow's and DuckDB's files allow one process)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SCRATCH", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "scratch.db")})
    )
    contacts, order, page_size = CASES[resource]
    with ClarkyEmulator(contacts, rate_limit=None, latency=0.01, order=order) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(page_size=page_size))
        before = emu.stats.requests
        whole = operator(resource, "scratch", resource).execute(task_instance("run-0"))  # type: ignore[arg-type]
        uninterrupted = emu.stats.requests - before
        assert whole["records_from_earlier_tries"] == 0

        kill_after_requests(emu, CHILD, [warehouse.kind, warehouse.dsn, resource], uninterrupted // 2)
        assert not warehouse.exists(resource), "the target is untouched until the load lands"
        assert progress_rows(warehouse) > 0, "the killed try kept what it had finished"

        resumed_try(
            emu,
            f"{resource} on {warehouse.kind}",
            uninterrupted,
            lambda: operator(resource, resource=resource).execute(task_instance("run-1")),  # type: ignore[arg-type]
        )
        assert_table_matches(warehouse, resource, resource, emu.dataset[resource])
        assert progress_rows(warehouse) == 0, "the landed load removed its progress"
        # the same task instance's next run starts afresh: the table is complete, nothing resumed
        again = operator(resource, resource=resource).execute(task_instance("run-2"))  # type: ignore[arg-type]
        assert again["records_from_earlier_tries"] == 0


def kept_by_a_killed_try(warehouse, key: str, units: int, max_age_seconds: float = 3600) -> None:
    """What a try killed mid-read leaves: finished units in the progress table, no landing."""
    from clarky_provider.operators.hooks import sql_hook
    from clarky_provider.operators.plan import table_spec
    from clarky_provider.resources import get_resource
    from clarky_provider.sql.dialects import dialect_for
    from clarky_provider.sql.resume import LoadProgress
    from clarky_provider.sql.schema import TableLayout

    dialect = dialect_for(sql_hook("warehouse", None))
    layout = TableLayout(table_spec(get_resource("contact_activities")))
    progress = LoadProgress(
        dialect, None, "contact_activities", key, "plan", max_age_seconds, layout.record_key
    )
    progress.open()
    for n in range(units):
        progress.save(f"c_{n}", [{"id": f"a_{key}_{n}", "contact_id": f"c_{n}"}])
    progress.close()
    progress.discard()


def test_a_landed_load_removes_abandoned_progress_of_its_table(warehouse, monkeypatch):
    with ClarkyEmulator(40, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        kept_by_a_killed_try(warehouse, "abandoned-run", units=3)
        assert progress_rows(warehouse) == 6  # 3 records and 3 unit markers
        operator("contact_activities").execute(task_instance("run-new"))  # type: ignore[arg-type]
        assert_table_matches(
            warehouse, "contact_activities", "contact_activities", emu.dataset["contact_activities"]
        )
    assert progress_rows(warehouse) == 0, "the run that never retried left nothing behind"


def test_progress_of_another_read_is_not_resumed(warehouse, monkeypatch):
    """A try whose read differs (the task's arguments changed) starts afresh: the records an
    earlier try kept for another read never land."""
    with ClarkyEmulator(40, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        load = operator("contact_activities")
        load.resume_key = "same-key"
        kept_by_a_killed_try(warehouse, load_key({}, "same-key") or "", units=3)
        summary = load.execute({})  # type: ignore[arg-type]
        assert summary["records_from_earlier_tries"] == 0
        assert_table_matches(
            warehouse, "contact_activities", "contact_activities", emu.dataset["contact_activities"]
        )
    assert progress_rows(warehouse) == 0
