"""The example DAGs: they parse cleanly, and dag.test() lands the emulator's ground truth."""

from __future__ import annotations

import hmac
import importlib.util
import json
import socket
import sqlite3
import warnings
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
import structlog.testing

from clarky_provider.resources import RESOURCES
from tests.conftest import DAGS, run_example_dag
from tests.warehouse import assert_table_matches

DAG_FILES = sorted(DAGS.glob("*.py"))
#: The key of the example history's hashed e-mails (``clarky_contacts_incremental``).
HASH_KEY = "example-" + "5d1f0c9e2a7b"


@pytest.fixture(autouse=True)
def hash_key_connection(monkeypatch):
    """The connection whose password is the key of the examples' ``hash_columns``."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLARKY_HASH_KEY", json.dumps({"conn_type": "generic", "password": HASH_KEY})
    )


def _no_io(*args, **kwargs):
    raise AssertionError("network or database access while parsing a DAG file")


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_file_parses_without_warnings_or_io(path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_io)
    monkeypatch.setattr(sqlite3, "connect", _no_io)
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.loader.exec_module(module)
    assert module.dag.dag_id == path.stem
    assert module.dag.doc_md and "Why this shape" in module.dag.doc_md
    assert "clarky" in module.dag.tags


def test_dagbag_has_no_import_errors():
    from clarky_provider.compat import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {p.stem for p in DAG_FILES}


def _run(dag_id: str, **conf):
    run = run_example_dag(dag_id, **conf)
    assert run.state == "success", f"{dag_id} ended {run.state}"
    return run


def test_full_sync_lands_every_resource(airflow_db, emulator, warehouse):
    _run("clarky_full_sync")
    truth = emulator.dataset
    for resource in RESOURCES:
        assert_table_matches(warehouse, resource, resource, truth[resource])


def test_incremental_dag_catches_up(airflow_db, emulator, warehouse):
    _run("clarky_contacts_incremental")
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])
    emulator.mutate(inserts=4, updates=6)
    _run("clarky_contacts_incremental")
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])


def test_incremental_dag_keeps_a_history_with_hashed_emails(airflow_db, emulator, warehouse):
    """One version per contact, then one more per contact each run saw changed; the current
    versions are today's contacts, and no e-mail address reaches the history in plain text."""
    _run("clarky_contacts_incremental")
    changed = emulator.mutate(inserts=4, updates=6)
    _run("clarky_contacts_incremental")
    live = {r["id"]: r for r in emulator.dataset["contacts"]}
    rows = warehouse.query("SELECT id, _is_current, emails, primary_email FROM contacts_history")
    assert len(rows) == 304 + len(set(changed["updated"]))
    current = {row[0]: row for row in rows if row[1]}
    assert set(current) == set(live)
    first = next(r for r in live.values() if r.get("emails") and isinstance(r["emails"][0], dict))
    address = first["emails"][0]["email"]
    hashed = hmac.new(HASH_KEY.encode(), address.strip().lower().encode(), "sha256").hexdigest()
    assert hashed in str(current[first["id"]][2]) and address not in str(rows)


def test_backfill_over_three_windows_equals_one_full_load(airflow_db, emulator, warehouse):
    run = _run(
        "clarky_contacts_backfill", start="2023-01-01T00:00:00Z", end="2027-01-01T00:00:00Z", window_days=500
    )
    loads = [ti for ti in run.get_task_instances() if ti.task_id == "load_window"]
    assert sorted(ti.map_index for ti in loads) == [0, 1, 2]
    assert all(ti.state == "success" for ti in loads)
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])


def _asset_events(run) -> dict[str, dict]:
    """Asset name -> extra of the events a DAG run emitted (read from Airflow's metadata DB)."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).where(
                AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id
            )
        ).all()
        return {event.asset.name: dict(event.extra) for event in events}


def test_full_sync_publishes_an_asset_per_table(airflow_db, emulator, warehouse):
    events = _asset_events(_run("clarky_full_sync"))
    assert set(events) == {f"warehouse.{name}" for name in RESOURCES}
    contacts = events["warehouse.contacts"]
    assert contacts["resource"] == "contacts" and contacts["rows_fetched"] == 300
    assert set(contacts) <= {
        "resource",
        "rows_fetched",
        "rows_inserted",
        "rows_updated",
        "rows_deleted",
        "watermark",
    }


def test_incremental_dag_publishes_the_contacts_asset(airflow_db, emulator, warehouse):
    events = _asset_events(_run("clarky_contacts_incremental"))
    assert list(events) == ["warehouse.contacts"]
    assert events["warehouse.contacts"]["rows_inserted"] == 300


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_full_sync_collects_the_mapped_summaries_without_an_xcom_error(airflow_db, emulator, warehouse):
    """A deployment showed ``ERROR XCom not found ... offset=10`` in ``publish_tables`` (issue #16).

    A ``for`` loop over a mapped task's lazy output reads items until a read fails, so it asks for
    the item one past the end, and Airflow's execution-API client logs that 404 at ERROR. Airflow
    logs through structlog (not stdlib logging, so not ``caplog``); under pytest it does not cache
    its loggers, so ``capture_logs`` sees every record the run emits in this process.
    """
    with structlog.testing.capture_logs() as logs:
        run = _run("clarky_full_sync")
    assert any(record.get("log_level") == "info" for record in logs), "the log capture saw nothing"
    xcom_errors = [
        record
        for record in logs
        if record.get("log_level") in ("error", "critical") and "XCom not found" in str(record.get("event"))
    ]
    assert xcom_errors == []
    # ... and publish_tables still read every load's summary: one asset event per table.
    assert set(_asset_events(run)) == {f"warehouse.{name}" for name in RESOURCES}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_retries_back_off_from_one_rate_window(path):
    """Issue #16: Airflow's default retry waits a flat 300 s; the examples suit a rate-limited API.

    Every task retries after one Clarky rate window (a rolling 60 s), doubling per retry, capped
    at 10 minutes, as parsed (what the DAG file says) and as the scheduler reads it back from the
    serialized DAG, where Airflow computes the actual wait.
    """
    from airflow.models.taskinstance import TaskInstance

    from clarky_provider.compat import DagBag, DagSerialization

    dag = DagBag(dag_folder=str(DAGS)).dags[path.stem]  # parsed only: no metadata database
    assert dag.tasks
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert task.retry_delay == timedelta(seconds=60), task.task_id
        # True, not a multiplier: Airflow 3.0's serialized-DAG schema accepts only a bool here.
        backoff = task.retry_exponential_backoff  # True (a plain task) or 2.0 (a mapped one, in 3.3)
        assert backoff is True or backoff == 2.0, task.task_id
        assert task.max_retry_delay == timedelta(minutes=10), task.task_id

    end = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for task in DagSerialization.from_dict(DagSerialization.to_dict(dag)).tasks:
        waits = []
        for try_number in range(1, 7):
            # The scheduler's own computation (TaskInstance.next_retry_datetime reads only these).
            ti = SimpleNamespace(
                task=task,
                try_number=try_number,
                end_date=end,
                dag_id=dag.dag_id,
                task_id=task.task_id,
                logical_date=end,
                retry_delay_override=None,
            )
            waits.append((TaskInstance.next_retry_datetime(ti) - end).total_seconds())
        # 1-2 min, 2-4 min, 4-8 min (Airflow's deterministic jitter), then the 10-minute cap.
        for try_number, wait in enumerate(waits[:3], start=1):
            assert 60 * 2 ** (try_number - 1) <= wait < 60 * 2**try_number, (task.task_id, waits)
        assert waits[-1] == 600, (task.task_id, waits)


def test_resync_dag_re_syncs_the_ids_it_is_triggered_with(airflow_db, emulator, warehouse):
    _run("clarky_full_sync")
    changed = emulator.mutate(updates=2, deletes=1)
    named = [*changed["updated"], *changed["deleted"]]
    requests = emulator.stats.requests
    _run("clarky_resync_records", resource="contacts", record_ids=named)
    assert emulator.stats.requests - requests == len(set(named))
    assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])


def test_resync_dag_without_ids_fails_instead_of_loading_everything(airflow_db, emulator, warehouse):
    run = run_example_dag("clarky_resync_records", retries=0, resource="contacts", record_ids=[])
    assert run.state == "failed"
    assert emulator.stats.requests == 0
