"""MySQL/MariaDB specifics: the bulk path's fallback, and what LOAD DATA would have let through."""

from __future__ import annotations

import logging

import pytest

from clarky_provider.exceptions import ClarkyLoadError
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from tests.warehouse import assert_table_matches, mysql_warehouse


@pytest.fixture
def mysql(monkeypatch):
    yield from mysql_warehouse(monkeypatch)


def load(**kwargs):
    return ClarkyToSqlOperator(task_id="t", sql_conn_id="warehouse", **kwargs).execute({})


def test_a_server_refusing_load_data_local_gets_multi_row_inserts(emulator, mysql, caplog):
    mysql.execute("SET GLOBAL local_infile = 0")
    try:
        with caplog.at_level(logging.INFO, logger="clarky_provider.sql.dialects.mysql"):
            summary = load(resource="contacts", batch_size=50)
    finally:
        mysql.execute("SET GLOBAL local_infile = 1")
    assert "LOAD DATA LOCAL refused" in caplog.text and summary["rows_inserted"] == 300
    assert_table_matches(mysql, "contacts", "contacts", emulator.dataset["contacts"])


def test_a_value_load_data_would_truncate_fails_the_load(emulator, mysql):
    """LOAD DATA LOCAL turns strict mode's errors into warnings; any warning fails the load."""
    contacts = emulator.store.lists["contacts"][None]
    record = dict(contacts.records[emulator.dataset["contacts"][250]["id"]])
    contacts.remove(record["id"])
    contacts.put({**record, "id": "c_" + "x" * 300})  # longer than the VARCHAR(255) key
    with pytest.raises(ClarkyLoadError, match="would not hold some values exactly"):
        load(resource="contacts", batch_size=100)
    assert not mysql.exists("contacts")  # the table this failed load created is dropped again
