"""The example DAGs: they parse cleanly, and dag.test() lands the emulator's ground truth."""

from __future__ import annotations

import importlib.util
import socket
import sqlite3
import warnings

import pytest

from clarky_provider.resources import RESOURCES
from tests.conftest import DAGS, run_example_dag
from tests.warehouse import assert_table_matches

DAG_FILES = sorted(DAGS.glob("*.py"))


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
    from airflow.dag_processing.dagbag import DagBag

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
