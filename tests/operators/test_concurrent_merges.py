"""Merges of the same changed records at once, each read in its own order (the API promises
none): the upserts must take their row locks in one order, or the servers deadlock."""

from __future__ import annotations

import pytest

from clarky_provider.testing import ClarkyEmulator
from tests.operators.test_concurrent_loads import assert_all_succeeded_together, at_once, load
from tests.warehouse import assert_table_matches, open_warehouse


@pytest.fixture(params=["postgres", "mysql"])
def warehouse(request, tmp_path, monkeypatch):
    """The servers: row locks held until commit by transactions of other processes."""
    yield from open_warehouse(request.param, tmp_path, monkeypatch)


def test_overlapping_merges_in_different_orders_do_not_deadlock(warehouse, monkeypatch):
    with ClarkyEmulator(2000, rate_limit=None, latency=0.01, order="per_request") as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emulator.connection_uri(max_concurrency=1))
        load(incremental="full")
        emulator.mutate(inserts=100, updates=2000)  # each load writes every row, new ones too
        outcomes = at_once(*[{"incremental": "full"}] * 3)
        assert_all_succeeded_together(outcomes)
        assert_table_matches(warehouse, "contacts", "contacts", emulator.dataset["contacts"])
