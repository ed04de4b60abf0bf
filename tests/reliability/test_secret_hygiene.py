"""Through dag.test(): faults are ridden out, and the API key never lands in logs, exceptions,
XCom, rendered templates or Airflow's database."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from clarky_provider.resources import RESOURCES
from clarky_provider.testing import ClarkyEmulator, FaultPlan
from tests.conftest import run_example_dag
from tests.warehouse import assert_table_matches


def _everything_airflow_wrote() -> list[bytes]:
    """Every file under AIRFLOW_HOME: the metadata DB (XCom, rendered fields, task instances) and logs."""
    home = Path(os.environ["AIRFLOW_HOME"])
    return [path.read_bytes() for path in home.rglob("*") if path.is_file()]


def test_key_is_never_written_anywhere(airflow_db, warehouse, monkeypatch, caplog, capfd):
    faults = FaultPlan(rates={"500": 0.05, "502": 0.05, "429": 0.05, "truncate": 0.05}, retry_after=1)
    with ClarkyEmulator(150, rate_limit=120, time_scale=0.01, faults=faults) as emu:
        key = emu.read_key
        monkeypatch.setenv(
            "AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(retry_backoff=0.01, max_retries=8)
        )
        # the incremental DAG's history hashes e-mails under this connection's password
        monkeypatch.setenv(
            "AIRFLOW_CONN_CLARKY_HASH_KEY",
            json.dumps({"conn_type": "generic", "password": "hygiene-hash-key"}),
        )
        with caplog.at_level(logging.DEBUG):
            assert run_example_dag("clarky_full_sync").state == "success"
            truth = emu.dataset
            for resource in RESOURCES:  # the faults were ridden out: every table is exact
                assert_table_matches(warehouse, resource, resource, truth[resource])
            emu.revoke(key)  # then a run that fails on the revoked key, without task retries
            failed = run_example_dag("clarky_contacts_incremental")
            assert failed.state == "failed"
            attempts = failed.get_task_instances()  # the merge and the history: both on the key
            assert {ti.task_id for ti in attempts} == {"load_contacts", "load_contacts_history"}
            for attempt in attempts:
                assert attempt.max_tries == 3 and attempt.try_number == 1 and attempt.state == "failed"
        assert sum(emu.stats.faults_injected.values()) > 0
    out, err = capfd.readouterr()
    printed = caplog.text + out + err
    assert "rotate it" in printed  # the failure was logged, with its advice ...
    assert key not in printed  # ... and without the key
    written = _everything_airflow_wrote()
    assert any(b"clarky_full_sync" in blob for blob in written)  # we did look at what Airflow stored
    assert not [blob for blob in written if key.encode() in blob]
