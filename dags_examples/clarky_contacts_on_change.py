"""
Changed Clarky contacts, and their activities, in the warehouse within about two poll intervals.

Why this shape:

* **Event-driven, not on a clock** (Airflow 3's ``AssetWatcher``). The DAG is scheduled on an
  Asset that a ``ClarkyChangeTrigger`` watches in the **triggerer** (run ``airflow triggerer``;
  without one the trigger never polls and this DAG never runs). Every poll asks Clarky how many
  contacts changed since the last one; when any did, the trigger fires, the Asset gets an event
  and the scheduler starts this DAG. A change lands within about two poll intervals: the next
  poll sees it (at most one interval), then the sync runs (seconds, plus its own reads).
* **What it costs: one request per poll.** ``GET /contacts?updated_after=<mark>&page_size=1``,
  read for its ``total``. At the 60 s poll below that is 1,440 requests a day, 0.8% of the key's
  daily budget (120 a minute, 172,800 a day), whether anything changes or not. Each poll takes
  its slot from the key's budget shared with the syncs on that host (docs/rate-limits.md), so
  it never pushes a running sync into 429s. The syncs it starts cost what an incremental sync
  costs, and only when something changed.
* **While a sync already runs** (``max_active_runs=1``), new polls still fire and each event is
  recorded on the Asset, but no second run starts: the DAG has one queue entry per Asset, which
  any number of events share, and the scheduler creates no run for it while a run is queued or
  running. When the active run ends, it creates exactly one run for everything queued. That run
  reads from the tables' watermarks, not from the events, so it lands every change they
  announced, however many: a change made during a sync is never lost, and costs at most one
  more sync. (Without ``max_active_runs=1`` overlapping runs would read the same changes twice.)
* **What it watches: contacts' ``updated_at``.** A contact edited in Clarky fires it. A new
  activity moves the contact's ``last_contacted_at``; the API docs do not say it moves
  ``updated_at``, so an activity alone may not fire the trigger (the emulator does not move it).
  Such an activity lands with the next contact change or the daily full sync
  (``clarky_full_sync``), which is why the activities load here rides along with contacts'.
  Deletes fire nothing either: no list shows them (docs/triggers.md).
* **The loads** are the incremental ones of ``clarky_contacts_incremental``: contacts changed
  since the table's newest ``updated_at`` (minus a 5-minute overlap), merged on ``id``; then
  the activities of the contacts contacted or created since the activities table's newest one.
  Activities wait for contacts: both spend the same key's budget.
* **The trigger's kwargs are stored with the DAG** (resource, connection id, poll interval: never
  the key). It counts from its own start; a restarted triggerer counts from its restart, and the
  next sync's watermark still catches what changed in between.
* **One key, one pool.** Every Clarky task here runs in the ``clarky_api`` pool; create it before
  unpausing: ``airflow pools set clarky_api 1 "Clarky key budget"``. The trigger runs in the
  triggerer, outside any pool: one request a minute.
* **Retries suit a rate-limited API** (``default_args``): the first after one Clarky rate window
  (60 s), doubling (1-2, 2-4, 4-8 min), at most 10 minutes (see ``clarky_contacts_incremental``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, AssetWatcher, Param

from clarky_provider.assets import table_asset
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
from clarky_provider.triggers.change import ClarkyChangeTrigger

#: Seconds between polls: one request each (1,440 a day at 60 s).
POLL_INTERVAL = 60

CONTACTS_CHANGED = Asset(
    name="clarky.contacts.changed",
    watchers=[
        AssetWatcher(
            name="clarky_contacts_poll",
            trigger=ClarkyChangeTrigger(
                resource="contacts", clarky_conn_id="clarky_default", poll_interval=POLL_INTERVAL
            ),
        )
    ],
)

with DAG(
    dag_id="clarky_contacts_on_change",
    description="Changed Clarky contacts and their activities into the warehouse, on change",
    schedule=[CONTACTS_CHANGED],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # events during a run queue up as one more run (see the docstring)
    tags=["clarky", "example"],
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=60),  # one rolling rate window
        "retry_exponential_backoff": True,  # 1-2 min, 2-4 min, 4-8 min
        "max_retry_delay": timedelta(minutes=10),
    },
    params={"sql_conn_id": Param("warehouse", type="string")},
    doc_md=__doc__,
) as dag:
    # both loads: incremental from the table's watermark, merged on id, in the key's pool
    load = {
        "clarky_conn_id": "clarky_default",
        "sql_conn_id": "{{ params.sql_conn_id }}",
        "write_mode": "merge",
        "incremental": "watermark",
        "pool": "clarky_api",  # see the docstring
    }
    contacts = ClarkyToSqlOperator(
        task_id="load_contacts",
        resource="contacts",
        table="contacts",
        watermark_overlap=timedelta(minutes=5),
        outlets=[table_asset("contacts")],
        **load,
    )
    activities = ClarkyToSqlOperator(
        task_id="load_contact_activities",
        resource="contact_activities",
        table="contact_activities",
        outlets=[table_asset("contact_activities")],
        **load,
    )
    contacts >> activities
