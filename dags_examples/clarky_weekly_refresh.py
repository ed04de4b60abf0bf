"""
Weekly full refresh of the Clarky resources that the daily sync reads incrementally.

Why this shape:

* The daily ``clarky_full_sync`` reads ``contacts``, ``contact_activities`` and
  ``conversation_messages`` incrementally (``incremental="auto"``): contacts changed since the
  table's watermark (``updated_after``), and activities (messages) only of contacts contacted
  (conversations messaged) or created since the newest one in the table (the docs say
  activities come newest first and a contact's ``last_contacted_at`` is its latest activity; a
  conversation's time of the last message is assumed to be ``last_message_at``). That costs a
  few percent of a full read, but it cannot see what a watermark misses: records deleted
  upstream, an activity backdated before its contact's latest one, an activity edited after it
  was logged.
* Once a week this DAG re-reads both in full (``incremental="full"``), merges them on ``id`` and
  flags every row that is gone upstream (``delete_mode="flag"`` sets ``_deleted_at``; use
  ``"remove"`` to delete them). The catalog says which resources are incremental, so this list
  follows it. Other resources are full snapshots every day already.
* It runs on Sunday night, away from the daily sync: both spend the same key's 120 reads a
  minute. A full activities read costs one request per contact (a 50,000-contact workspace:
  about 50,500 requests, 7 hours at the key's limit), which is why it is weekly, not daily.
* **One key, one pool.** Every Clarky task here runs in the ``clarky_api`` pool; create it before
  unpausing: ``airflow pools set clarky_api 1 "Clarky key budget"``. One slot where tasks can run
  on several hosts; without the pool the scheduler never starts them (why: ``clarky_full_sync``
  and docs/rate-limits.md).
* **Retries suit a rate-limited API** (``default_args``): the first waits one Clarky rate
  window (60 s), then the wait doubles, capped at 10 minutes.
* **Unpausing starts a run at once** (``catchup=False`` still runs the latest interval), and that
  run spends the key's budget for hours on a large workspace: unpause it when that is fine.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.resources import RESOURCES

INCREMENTAL = sorted(name for name, resource in RESOURCES.items() if resource.incremental)

with DAG(
    dag_id="clarky_weekly_refresh",
    description="Full re-read of the incrementally synced Clarky resources, flagging deletes",
    schedule="0 2 * * 0",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["clarky", "example"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=60),  # one rolling rate window
        "retry_exponential_backoff": True,  # 1-2 min, then 2-4 min
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "sql_conn_id": Param(
            "warehouse", type="string", description="common-sql connection of the warehouse"
        ),
        "clarky_conn_id": Param("clarky_default", type="string", description="clarky connection"),
    },
    doc_md=__doc__,
) as dag:
    ClarkyToSqlOperator.partial(
        task_id="refresh",
        sql_conn_id="{{ params.sql_conn_id }}",
        clarky_conn_id="{{ params.clarky_conn_id }}",
        write_mode="merge",
        incremental="full",
        delete_mode="flag",
        pool="clarky_api",  # see the docstring
    ).expand(resource=INCREMENTAL)
