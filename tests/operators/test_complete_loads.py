"""A load lands every record the API's ``total`` promises, or fails loudly with the table unchanged."""

from __future__ import annotations

import pytest

from clarky_provider.exceptions import ClarkyIncompleteReadError
from clarky_provider.hooks import listing
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.testing import ClarkyEmulator, DatasetSize
from tests.warehouse import assert_table_matches

UNSTABLE = DatasetSize(contacts=3000, companies=3000)


def load(**kwargs):
    kwargs.setdefault("sql_conn_id", "warehouse")
    kwargs.setdefault("task_id", f"load_{kwargs['resource']}")
    return ClarkyToSqlOperator(**kwargs).execute({})


@pytest.mark.parametrize("resource", ["contacts", "companies"])
def test_full_load_under_a_changing_order_equals_the_source(warehouse, monkeypatch, resource):
    with ClarkyEmulator(size=UNSTABLE, rate_limit=None, order="per_request") as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        summary = load(resource=resource)
        truth = emu.dataset[resource]
    assert summary["total_reported"] == summary["rows_fetched"] == len(truth) == 3000
    assert summary["coverage"] == 1.0 and summary["lists_recovered"] == 1
    assert summary["requests"] > 30  # the recovery's cost is in the summary, not hidden
    assert_table_matches(warehouse, resource, resource, truth)


def test_stable_load_reports_its_total_and_spends_nothing_extra(emulator, warehouse):
    summary = load(resource="contacts")
    assert summary["total_reported"] == summary["rows_fetched"] == 300
    assert summary["coverage"] == 1.0
    assert summary["lists_recovered"] == 0 and summary["requests"] == summary["pages"] == 3


@pytest.mark.parametrize(
    ("delete_mode", "verdict"),
    [
        (None, "A merge of the records read would have been safe"),
        ("flag", "would not have been safe: delete_mode='flag' would have marked"),
    ],
)
def test_read_short_of_total_fails_and_leaves_the_table_as_it_was(
    warehouse, monkeypatch, delete_mode, verdict
):
    with ClarkyEmulator(size=UNSTABLE, rate_limit=None, order="per_request") as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        load(resource="companies")  # recovered: a complete first load
        before = warehouse.rows("companies")
        monkeypatch.setattr(listing, "RECOVERY_REQUESTS_PER_PAGE", 0)  # recovery is bounded out
        with pytest.raises(ClarkyIncompleteReadError) as info:
            load(resource="companies", incremental="full", delete_mode=delete_mode)
    message = str(info.value)
    assert "of the 3000 records the API reported" in message
    assert "Nothing was written: companies is exactly as it was" in message
    assert verdict in message
    assert warehouse.rows("companies") == before
