"""DuckDB: loads wait for the file another process holds, and take turns within one process."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from tests.warehouse import assert_table_matches, duckdb_warehouse


@pytest.fixture
def dk(tmp_path, monkeypatch):
    return duckdb_warehouse(tmp_path, monkeypatch)


def load(**kwargs):
    return ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="warehouse", **kwargs).execute(
        {}
    )


def test_load_waits_for_another_process_holding_the_file(emulator, dk, caplog):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({dk.dsn!r}); print('open', flush=True); time.sleep(3)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "open"
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="clarky_provider.sql.locks"):
        summary = load()
    holder.wait(timeout=10)
    assert time.monotonic() - started > 2
    assert "Waiting for the DuckDB database" in caplog.text and summary["rows_inserted"] == 300


def test_loads_in_threads_of_one_process_take_turns(emulator, dk):
    errors: list[BaseException] = []

    def run(**kwargs):
        try:
            load(**kwargs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, kwargs={"write_mode": "replace"}) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert_table_matches(dk, "contacts", "contacts", emulator.dataset["contacts"])
