"""OpenLineage facets of ClarkyToSqlOperator (with the openlineage provider installed)."""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

import pytest

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator

pytest.importorskip("airflow.providers.openlineage")


def test_lineage_has_resource_in_and_table_out(emulator, warehouse):
    op = ClarkyToSqlOperator(task_id="t", resource="contacts", sql_conn_id="warehouse")
    assert op.get_openlineage_facets_on_complete(None) is None  # nothing before a load
    summary = op.execute({})
    lineage = op.get_openlineage_facets_on_complete(None)

    (source,) = lineage.inputs
    host = urlsplit(emulator.base_url).netloc
    workspace = next(c["workspace_id"] for c in emulator.dataset["contacts"] if "workspace_id" in c)
    assert (source.namespace, source.name) == (f"clarky://{host}/{workspace}", "contacts")

    (target,) = lineage.outputs
    conn = json.loads(os.environ["AIRFLOW_CONN_WAREHOUSE"])
    if warehouse.kind == "postgres":
        assert target.namespace == f"postgres://{conn['host']}:{conn['port']}"
        assert target.name == f"{conn['schema']}.public.contacts"
    else:
        assert (target.namespace, target.name) == (f"sqlite://{conn['host']}", "contacts")
    fields = {f.name: f.type for f in target.facets["schema"].fields}
    assert fields["id"] in ("TEXT", "VARCHAR") and "_raw" in fields and "primary_email" in fields
    assert fields["updated_at"] == ("TIMESTAMP WITH TIME ZONE" if warehouse.kind == "postgres" else "TEXT")
    assert target.outputFacets["outputStatistics"].rowCount == summary["rows_fetched"] == 300
    assert "workspace_id" not in summary


def test_lineage_never_fails_the_task(emulator, warehouse, monkeypatch, caplog):
    op = ClarkyToSqlOperator(task_id="t", resource="agents", sql_conn_id="warehouse")
    op.execute({})
    monkeypatch.delenv("AIRFLOW_CONN_WAREHOUSE")  # the warehouse connection vanished
    assert op.get_openlineage_facets_on_complete(None) is None
    assert "Could not build OpenLineage facets" in caplog.text
