"""
Re-sync named Clarky records now: support's "fix this contact in the warehouse".

Trigger it with the ids as a param, from the UI's "Trigger DAG w/ config" or the CLI::

    airflow dags trigger clarky_resync_records \\
        --conf '{"resource": "contacts", "record_ids": ["c_123", "c_456"]}'

Why this shape:

* **Exactly the records named.** ``record_ids`` reads each record by id, one request each (for
  a child resource such as ``contact_activities`` the ids are its parents', and each parent's
  whole list is read), and merges them: a changed record is written, an unchanged one is not,
  and a named record the API answers 404 for is removed from the table. Every other row is left
  as it was, so a re-sync never waits for, nor disturbs, the daily sync's watermark.
* **Cheap.** Ten ids cost ten requests, about 5 s of the key's budget; the task's bill says so
  before the first request. More than 1,000 ids is a full load's job, and the task says so.
* **One key, one pool.** The task runs in the ``clarky_api`` pool like every Clarky task of the
  examples (``airflow pools set clarky_api 1 "Clarky key budget"``), so a re-sync queues behind
  a running sync instead of competing with it for the budget.
* **No schedule, no catchup.** It runs only when triggered, with the ids of that run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator

with DAG(
    dag_id="clarky_resync_records",
    description="Re-sync named Clarky records into the warehouse",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["clarky", "example"],
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=60),  # one rolling rate window
        "retry_exponential_backoff": True,  # 1-2 min, 2-4 min, 4-8 min
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "resource": Param("contacts", type="string", description="catalog resource of the records"),
        "record_ids": Param(
            [], type="array", items={"type": "string"}, description="ids to re-sync (parents' for a child)"
        ),
        "sql_conn_id": Param("warehouse", type="string"),
        "table": Param("", type="string", description="target table (default: the resource's name)"),
    },
    render_template_as_native_obj=True,  # record_ids stays a list
    doc_md=__doc__,
) as dag:
    ClarkyToSqlOperator(
        task_id="resync",
        resource="{{ params.resource }}",
        sql_conn_id="{{ params.sql_conn_id }}",
        table="{{ params.table or params.resource }}",
        write_mode="merge",
        record_ids="{{ params.record_ids }}",
        pool="clarky_api",  # see the docstring
    )
