"""
Full sync of every Clarky resource into the warehouse, one mapped task per resource.

Why this shape:

* **Dynamic task mapping** (``.expand(resource=...)``) gives each resource its own task, log
  and retry, and lets them run in parallel. The list comes from the provider's catalog, so a
  resource added to the catalog is synced without touching this DAG.
* **merge** (the default write mode) upserts on ``id``: a rerun, or a retry after a failure,
  converges on the same table.
* **Parents first, then their children.** ``load_parents`` reads contacts and conversations as
  full snapshots, merged: contacts too, every day, because no filter finds a contact whose only
  change is a new activity (the docs do not say an activity moves ``updated_at``; it does move
  ``last_contacted_at``, the contact's latest activity). ``load_children`` then loads contact
  activities and conversation messages with ``parent_table``: each asks its parents' fresh table
  which parents' signal (``last_contacted_at``; the conversation's time of the last message, a
  name the docs do not show, assumed ``last_message_at``) is newer than their newest child there,
  and reads only those lists, with no second read of the parents' pages. ``load`` reads every
  other table as a full snapshot (none has a time filter), alongside. A day with 1% of 3,000
  contacts and 540 conversations touched costs 71 requests for those four tables, the minimum
  the API allows, and every table equals the source. The first run (no child tables yet) reads
  every parent's list; deleted, backdated and edited children under unchanged parents need a
  full re-read: the ``clarky_weekly_refresh`` DAG does it once a week (or ``recheck_fraction``
  a slice a day).
* **One key, one budget.** Every task here shares the key's 120 requests/minute, and every
  Airflow 3 task instance runs in its own process. The task processes on one host share the
  key's pacing through a small state file (no secret in it); across hosts only the server's
  ``X-RateLimit-Remaining`` and 429 ``Retry-After`` slow them, and that is not enough (below).
* **One key, one pool.** Every load here runs in the ``clarky_api`` pool: create it
  before unpausing, ``airflow pools set clarky_api 1 "Clarky key budget"``. One slot where tasks
  can run on several hosts (Celery, Kubernetes): one task's fan-out alone uses the key's whole
  budget, while tasks on different hosts only see each other through the server's headers (two
  of them drew 429s on 17% of their requests on two Celery workers). On one host (LocalExecutor)
  give it as many slots as you like: the task processes there share the key's pacing. Without
  the pool the scheduler never starts these tasks (it logs ``Tasks using non-existent pool
  'clarky_api' will not be scheduled``); ``dag.test()`` ignores pools.
  A one-slot pool runs the loads one after another; each spends the whole budget while it runs.
* Child resources (activities per contact, stages per pipeline, ...) fan out over their parents
  inside one task, several parents at once within the key's budget: one request per parent, so
  they are the expensive part of a full sync (and why activities and messages are read only for
  the parents that changed).
* **Retries suit a rate-limited API** (``default_args``). Clarky trouble reaches Airflow's
  retries only after the hook's own retries (429s after ``Retry-After``; 5xx, resets and
  timeouts with backoff) have given up, so it has outlasted seconds: an outage, or the key's
  budget spent elsewhere. The first retry waits ``retry_delay`` = 60 s, one Clarky rate window:
  by then every request of the failed attempt has left the key's rolling 60 s window.
  ``retry_exponential_backoff`` doubles the wait per retry (Airflow adds up to as much again as
  jitter: 1-2 min, then 2-4 min), and ``max_retry_delay`` caps it at 10 minutes if you raise
  ``retries``. Airflow's default, a flat 5 minutes, is long for a budget blip and does not back
  off from a long outage. (``True`` rather than a multiplier such as ``2.0``: early Airflow 3
  releases accept only a bool here; later ones read ``True`` as 2.)
* **Unpausing starts a run at once.** ``catchup=False`` skips past intervals but still runs the
  latest one: as soon as the DAG is unpaused, the scheduler starts the run for the last complete
  day. That run is a full sync of every resource and spends the key's budget until it ends, so
  unpause the DAG when the key can spare it.
* When every table has loaded, ``publish_tables`` emits one Asset per table
  (``warehouse.<resource>``, with that load's row counts in the event's extra), so downstream
  DAGs can be scheduled on any of them. It reads exactly ``len(summaries)`` results (see the
  task): a ``for`` loop over a mapped task's output would also read one past the end, which
  Airflow logs as an error (``XCom not found ... offset=N``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from clarky_provider.assets import event_extra, table_asset
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.resources import RESOURCES

TABLES = {name: table_asset(name) for name in sorted(RESOURCES)}
#: Child resources whose parents carry a change signal -> their parent, whose table they ask.
CHILDREN = {name: res.parent for name, res in RESOURCES.items() if res.change_signal and res.parent}
PARENTS = sorted(set(CHILDREN.values()))

with DAG(
    dag_id="clarky_full_sync",
    description="Every Clarky resource into the warehouse, in parallel",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["clarky", "example"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=60),  # one rolling rate window
        "retry_exponential_backoff": True,  # 1-2 min, 2-4 min, ...
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
    shared = {
        "sql_conn_id": "{{ params.sql_conn_id }}",
        "clarky_conn_id": "{{ params.clarky_conn_id }}",
        "write_mode": "merge",
        "pool": "clarky_api",  # one slot on several hosts: see the docstring
    }
    # every other table, a full snapshot each (none of them has a time filter)
    loads = ClarkyToSqlOperator.partial(task_id="load", **shared).expand(
        resource=sorted(set(TABLES) - set(CHILDREN) - set(PARENTS))
    )
    # contacts and conversations in full, so that their tables tell their children what changed
    parents = ClarkyToSqlOperator.partial(task_id="load_parents", incremental="full", **shared).expand(
        resource=PARENTS
    )
    # activities and messages: only the lists of the parents whose signal moved (see the docstring)
    children = ClarkyToSqlOperator.partial(task_id="load_children", **shared).expand_kwargs(
        [{"resource": child, "parent_table": parent} for child, parent in sorted(CHILDREN.items())]
    )
    parents >> children

    @task(outlets=list(TABLES.values()))
    def publish_tables(*loaded: Sequence[dict], outlet_events=None) -> None:
        """One asset event per table, carrying that table's load summary."""
        # Each of ``loaded`` is Airflow's lazy sequence of a mapped task's results. Iterating it
        # (a ``for`` loop, ``list()``) reads item after item until a read fails: its last read
        # asks for the item one past the end, which Airflow logs as an ERROR ("XCom not found").
        # Reading exactly len() items (one count, then one read per item; both work on every
        # Airflow 3 release) logs nothing.
        for summaries in loaded:
            for index in range(len(summaries)):
                summary = summaries[index]
                outlet_events[TABLES[summary["resource"]]].extra.update(event_extra(summary))

    publish_tables(loads.output, parents.output, children.output)
