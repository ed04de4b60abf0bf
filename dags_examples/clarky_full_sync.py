"""
Full sync of every Clarky resource into the warehouse, one mapped task per resource.

Why this shape:

* **Dynamic task mapping** (``.expand(resource=...)``) gives each resource its own task, log
  and retry, and lets them run in parallel. The list comes from the provider's catalog, so a
  resource added to the catalog is synced without touching this DAG.
* **merge** (the default write mode) upserts on ``id``: a rerun, or a retry after a failure,
  converges on the same table. Contacts load incrementally from the table's high-water mark;
  resources without time filters are full snapshots, merged.
* **One key, one budget.** Every task here shares the key's 120 requests/minute. Within a
  worker the provider paces all tasks of a key together; across workers, put the tasks in an
  Airflow pool sized to the number of concurrent Clarky tasks you want (e.g.
  ``airflow pools set clarky_api 2 "Clarky key budget"`` and ``pool="clarky_api"`` in
  ``partial``), so that several workers do not split the budget into many slow tasks.
* Child resources (activities per contact, stages per pipeline, ...) fan out over their parents
  inside one task: one request per parent, so they are the expensive part of a full sync.
* When every table has loaded, ``publish_tables`` emits one Asset per table
  (``warehouse.<resource>``, with that load's row counts in the event's extra), so downstream
  DAGs can be scheduled on any of them.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task

from clarky_provider.assets import event_extra, table_asset
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.resources import RESOURCES

TABLES = {name: table_asset(name) for name in sorted(RESOURCES)}

with DAG(
    dag_id="clarky_full_sync",
    description="Every Clarky resource into the warehouse, in parallel",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["clarky", "example"],
    params={
        "sql_conn_id": Param(
            "warehouse", type="string", description="common-sql connection of the warehouse"
        ),
        "clarky_conn_id": Param("clarky_default", type="string", description="clarky connection"),
    },
    doc_md=__doc__,
) as dag:
    loads = ClarkyToSqlOperator.partial(
        task_id="load",
        sql_conn_id="{{ params.sql_conn_id }}",
        clarky_conn_id="{{ params.clarky_conn_id }}",
        write_mode="merge",
        retries=2,
    ).expand(resource=sorted(TABLES))

    @task(outlets=list(TABLES.values()))
    def publish_tables(summaries: list[dict], *, outlet_events=None) -> None:
        """One asset event per table, carrying that table's load summary."""
        for summary in summaries:
            outlet_events[TABLES[summary["resource"]]].extra.update(event_extra(summary))

    publish_tables(loads.output)
