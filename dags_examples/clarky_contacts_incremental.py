"""
Hourly incremental sync of Clarky contacts into the warehouse, merged on ``id``, and kept as a
history of every change (``contacts_history``) with e-mail addresses hashed.

Why this shape:

* Contacts are the one resource with an ``updated_after`` filter. ``incremental="watermark"``
  asks only for contacts changed since the table's newest ``updated_at`` minus a safety overlap
  (5 minutes): late commits and clock skew are re-read, never missed, and the inclusive
  boundary's duplicates are absorbed by the **merge** on ``id``. The first run, on an empty
  table, loads the full history.
* The watermark lives in the warehouse table itself, so a failed run, a retry, a manual rerun
  or a cleared task all resume from what actually landed; no Airflow Variable to drift.
* Prefer ``incremental="interval"`` to tie each run to its data interval instead (for example
  to re-run one hour of history with ``airflow dags backfill``).
* Deletes are invisible to ``updated_after``: pair this DAG with the daily full sync, whose
  snapshot of contacts can flag rows deleted upstream (``delete_mode="flag"``).
* The task publishes the ``warehouse.contacts`` Asset (with row counts and the watermark in the
  event's extra), so a downstream DAG can run on "contacts table updated":
  ``schedule=[table_asset("contacts")]``.
* **One key, one pool.** Every Clarky task here runs in the ``clarky_api`` pool; create it before
  unpausing: ``airflow pools set clarky_api 1 "Clarky key budget"``. One slot where tasks can run
  on several hosts; without the pool the scheduler never starts them (why: ``clarky_full_sync``
  and docs/rate-limits.md).
* **Retries suit a rate-limited API** (``default_args``). Clarky trouble reaches Airflow's retries
  only after the hook's own retries (429s, 5xx, resets) have given up, so it has outlasted
  seconds. The first retry waits ``retry_delay`` = 60 s, one Clarky rate window (a rolling
  minute), so the failed attempt's requests have left the key's budget;
  ``retry_exponential_backoff`` doubles the wait per retry (with Airflow's jitter: 1-2, 2-4, then
  4-8 min), and ``max_retry_delay`` = 10 minutes keeps every retry well inside the hour.
  Airflow's default is a flat 5 minutes. (``True``, not ``2.0``: early Airflow 3 releases accept
  only a bool; later ones read ``True`` as 2.)
* **History** (``load_contacts_history``): ``write_mode="history"`` keeps one row per version of
  each contact (``_valid_from``, ``_valid_to``, ``_is_current``) and a ``contacts_history_current``
  view of today's state, so "which stage was this contact in last quarter" has an answer. It
  reads incrementally like the merge; unchanged contacts add nothing. Its grain is this DAG's
  schedule: a contact edited twice within the hour shows only its state at the next run.
  It reads the contacts a second time (the two tasks are independent loads); drop the merge
  task if the history's ``_current`` view is all you query.
* **A hashed column**: the history stores ``emails`` (and ``primary_email``, ``_raw``'s copy)
  as HMAC-SHA-256 under the password of the ``clarky_hash_key`` connection, never the DAG
  file: create it first, e.g. ``AIRFLOW_CONN_CLARKY_HASH_KEY='{"conn_type": "generic",
  "password": "<a long random secret>"}'``, and keep it: another key gives other hashes. Analysts
  join on ``hash(known address)`` (docs/privacy.md); a task without the connection fails before
  any request, naming it.
* **Unpausing starts a run at once.** ``catchup=False`` skips past intervals but still runs the
  latest one as soon as the DAG is unpaused; on an empty table that first run loads the whole
  contact history, spending the key's budget until it ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param

from clarky_provider.assets import table_asset
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator

with DAG(
    dag_id="clarky_contacts_incremental",
    description="Changed Clarky contacts into the warehouse every hour",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["clarky", "example"],
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=60),  # one rolling rate window
        "retry_exponential_backoff": True,  # 1-2 min, 2-4 min, 4-8 min
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "sql_conn_id": Param("warehouse", type="string"),
        "table": Param("contacts", type="string", description="target table, created when missing"),
    },
    doc_md=__doc__,
) as dag:
    # What both loads share: the contacts, each read from its own table's watermark.
    contacts: dict[str, Any] = {
        "resource": "contacts",
        "sql_conn_id": "{{ params.sql_conn_id }}",
        "incremental": "watermark",
        "watermark_overlap": timedelta(minutes=5),
        "pool": "clarky_api",  # see the docstring
    }
    ClarkyToSqlOperator(
        task_id="load_contacts",
        table="{{ params.table }}",
        write_mode="merge",
        outlets=[table_asset("contacts")],
        **contacts,
    )
    ClarkyToSqlOperator(
        task_id="load_contacts_history",
        table="contacts_history",
        write_mode="history",
        hash_columns=["emails"],  # keyed by the clarky_hash_key connection: see the docstring
        hash_key_conn_id="clarky_hash_key",
        **contacts,
    )
