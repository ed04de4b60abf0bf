"""Soak: many contacts through the operator with every fault switched on; count and checksum match.

CI runs 20,000 contacts; the full soak is ``CLARKY_SOAK_CONTACTS=1000000 make test
PYTEST_ARGS="-m slow"`` (about 15 minutes and 8 GB of memory for the in-process emulator).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

import pytest

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.testing import ClarkyEmulator, FaultPlan

CONTACTS = int(os.environ.get("CLARKY_SOAK_CONTACTS", "20000"))
RATES = {"500": 0.01, "502": 0.01, "503": 0.01, "drop": 0.01, "truncate": 0.01, "429": 0.01, "slow": 0.005}


def checksum(records: Iterable[Any]) -> tuple[int, int]:
    """(count, order-independent sum of 64-bit digests of each record's canonical JSON)."""
    count = total = 0
    for record in records:
        canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        total = (
            total + int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "big")
        ) % 2**64
        count += 1
    return count, total


def _raw_column(warehouse) -> Iterable[Any]:
    for (raw,) in warehouse.query("SELECT _raw FROM contacts"):
        yield json.loads(raw) if isinstance(raw, str) else raw


@pytest.mark.slow
def test_soak_with_faults_everywhere(warehouse, monkeypatch):
    faults = FaultPlan(rates=RATES, retry_after=2, slow_seconds=100, seed=5)
    with ClarkyEmulator(CONTACTS, rate_limit=None, time_scale=0.01, faults=faults) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CLARKY_DEFAULT",
            emu.connection_uri(retry_backoff=0.01, max_retries=10, timeout=0.5, max_concurrency=4),
        )
        summary = ClarkyToSqlOperator(task_id="soak", resource="contacts", sql_conn_id="warehouse").execute(
            {}
        )
        expected = checksum(emu.dataset["contacts"])
        injected = sum(emu.stats.faults_injected.values())
    assert summary["rows_fetched"] == CONTACTS
    assert injected >= CONTACTS // 100 * 0.03  # a few percent of the requests failed
    assert summary["retries"] >= injected  # every fault was retried, none ended the load
    assert checksum(_raw_column(warehouse)) == expected
