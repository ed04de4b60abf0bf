"""The on-change example DAG: its Asset is watched by the change trigger, and a run lands what
changed (dag.test(), as tests/dags runs the other example DAGs)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import DAGS, run_example_dag
from tests.warehouse import assert_table_matches

DAG_ID = "clarky_contacts_on_change"


def test_the_dag_is_scheduled_on_an_asset_the_trigger_watches():
    spec = importlib.util.spec_from_file_location(DAG_ID, DAGS / f"{DAG_ID}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (watcher,) = module.CONTACTS_CHANGED.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "clarky_provider.triggers.change.ClarkyChangeTrigger"
    assert kwargs["resource"] == "contacts" and kwargs["poll_interval"] == 60
    assert module.dag.max_active_runs == 1
    assert "1,440 requests a day" in module.dag.doc_md and "0.8%" in module.dag.doc_md


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_run_lands_changed_contacts_and_new_activities(airflow_db, emulator, warehouse):
    assert run_example_dag(DAG_ID).state == "success"
    emulator.mutate(inserts=2, updates=5)
    assert run_example_dag(DAG_ID).state == "success"
    truth = emulator.dataset
    assert_table_matches(warehouse, "contacts", "contacts", truth["contacts"])
    assert_table_matches(warehouse, "contact_activities", "contact_activities", truth["contact_activities"])
    # an activity alone moves last_contacted_at, not updated_at: activities land, contacts' row
    # keeps its old last_contacted_at until the contact changes (docs/triggers.md)
    emulator.log_activities(3)
    assert run_example_dag(DAG_ID).state == "success"
    truth = emulator.dataset
    assert_table_matches(warehouse, "contact_activities", "contact_activities", truth["contact_activities"])
