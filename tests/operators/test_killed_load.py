"""A load whose process is SIGKILLed midway leaves the table as it was; the rerun converges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.testing import ClarkyEmulator
from tests.warehouse import assert_table_matches

CHILD = """
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="warehouse", incremental="full",
                    batch_size=100).execute({})
"""


def test_killed_load_then_rerun_equals_ground_truth(warehouse, monkeypatch):
    with ClarkyEmulator(2000, rate_limit=None, latency=0.05) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri(max_concurrency=1))
        ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="warehouse").execute({})
        before = warehouse.rows("contacts")
        emu.mutate(inserts=30, updates=30, deletes=0)
        served_before = emu.stats.count("/contacts", 200)

        child = subprocess.Popen([sys.executable, "-c", CHILD], env=dict(os.environ))
        deadline = time.monotonic() + 60
        while emu.stats.count("/contacts", 200) < served_before + 8 and time.monotonic() < deadline:
            assert child.poll() is None, "the load finished before it could be killed"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert emu.stats.count("/contacts", 200) >= served_before + 8  # it really was midway

        assert warehouse.rows("contacts") == before
        ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="warehouse").execute({})
        assert_table_matches(warehouse, "contacts", "contacts", emu.dataset["contacts"])
