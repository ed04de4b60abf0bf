"""The on-change example DAG under a real scheduler with a triggerer: an edit in Clarky (the
emulator) lands in the warehouse without anyone triggering a run.

The triggerer runs the DAG's ``ClarkyChangeTrigger`` (the Asset's watcher), its event becomes an
Asset event, the scheduler starts the DAG, and its loads land the edit. The DAG file is the
example's, with a 10 s poll instead of 60 s so the test takes one minute, not several.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clarky_provider.testing import ClarkyEmulator
from tests.e2e.deployment import AirflowDeployment
from tests.e2e.test_real_scheduler import _postgres_server, _sqlite_warehouse
from tests.warehouse import assert_table_matches

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DAG_ID = "clarky_contacts_on_change"
DAG_FILE = Path(__file__).resolve().parents[2] / "dags_examples" / f"{DAG_ID}.py"
ASSET = "clarky.contacts.changed"
POLL = 10


def _with_poll(folder: Path) -> Path:
    """The example DAG, its poll interval set to ``POLL`` seconds (nothing else changed)."""
    source = DAG_FILE.read_text()
    assert source.count("POLL_INTERVAL = 60\n") == 1
    folder.mkdir()
    path = folder / DAG_FILE.name
    path.write_text(source.replace("POLL_INTERVAL = 60\n", f"POLL_INTERVAL = {POLL}\n"))
    return path


def _wait(what: str, done, timeout: float, deployment: AirflowDeployment, service: str = "triggerer"):
    deadline = time.monotonic() + timeout
    while not (result := done()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:g}s\n{deployment.service_log_tail(service)}")
        time.sleep(0.25)
    return result


def test_an_edit_lands_through_the_trigger_within_about_two_polls(tmp_path, record_property):
    server = _postgres_server()
    warehouse = _sqlite_warehouse(tmp_path / "warehouse.db")
    with ClarkyEmulator(300, rate_limit=None) as emu:
        env = {
            "AIRFLOW_CONN_CLARKY_DEFAULT": emu.connection_uri(),
            "AIRFLOW_CONN_WAREHOUSE": warehouse.conn_json,
            # asset-triggered runs are created by the scheduling loop the other e2e tests turn off
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
        }
        with AirflowDeployment(
            tmp_path / "deployment",
            server,
            [_with_poll(tmp_path / "dags")],
            env,
            secrets=[emu.read_key],
            parallelism=4,
            triggerer=True,
        ) as deployment:
            deployment.wait_for_dags([DAG_ID], timeout=120)
            deployment.unpause(DAG_ID)
            # the triggerer picks the watcher's trigger up and polls: quiet, nothing changed yet
            _wait("a first poll", lambda: emu.stats.count("/contacts") >= 2, 120, deployment)
            assert deployment.query("SELECT count(*) FROM dag_run WHERE dag_id = %s", [DAG_ID]) == [(0,)]

            polls_before = emu.stats.count("/contacts")
            (updated,) = emu.mutate(updates=1)["updated"]
            edited = time.time()
            events = _wait(
                "an asset event",
                lambda: deployment.query(
                    "SELECT e.timestamp, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
                    " WHERE a.name = %s",
                    [ASSET],
                ),
                3 * POLL + 30,
                deployment,
            )
            event_at, extra = events[0]
            # the trigger's polls since the edit, unless the run it starts already reached Clarky
            sync_started = deployment.query("SELECT count(*) FROM task_instance WHERE start_date IS NOT NULL")
            polls_to_event = emu.stats.count("/contacts") - polls_before if sync_started == [(0,)] else None
            run_id = _wait(
                "an asset-triggered run",
                lambda: deployment.query("SELECT run_id FROM dag_run WHERE dag_id = %s", [DAG_ID]),
                60,
                deployment,
                "scheduler",
            )[0][0]
            states = deployment.wait_for_runs(DAG_ID, [run_id], timeout=300)
            landed = time.time()
            assert states == {run_id: "success"}, deployment.service_log_tail("scheduler")
            assert_table_matches(warehouse, "contacts", "contacts", emu.dataset["contacts"])
            assert updated in warehouse.rows("contacts")
            leaked = deployment.tables_containing(emu.read_key)

    event_seconds = event_at.timestamp() - edited
    record_property("event_after_s", round(event_seconds, 1))
    record_property("polls_to_event", polls_to_event)
    record_property("landed_after_s", round(landed - edited, 1))
    assert extra["payload"]["changed"] >= 1 and extra["payload"]["resource"] == "contacts"
    assert "key" not in str(extra).lower() and emu.read_key not in str(extra)
    assert event_seconds <= 2 * POLL + 5, f"the event came {event_seconds:.1f}s after the edit"
    assert polls_to_event is None or 1 <= polls_to_event <= 2
    assert leaked == [], f"the key is stored in {leaked}"
