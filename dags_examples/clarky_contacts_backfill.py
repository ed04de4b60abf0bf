"""
Multi-year backfill of Clarky contacts, split into ``created_at`` windows across workers.

Why this shape:

* One key reads at most 12,000 contacts a minute, so years of history take hours. Splitting
  by ``created_at`` windows turns one long, fragile task into many short, independent ones:
  a failure retries one window, not the whole history.
* Windows are half-open, ``[start, end)``: the provider sends ``created_before`` as the
  window end minus one millisecond (the API's filters are inclusive), so adjacent windows
  neither overlap nor leave a gap, and the union equals one full load.
* Each window **merges** on ``id``, so re-running any window, or the whole backfill, is safe.
* Windows run as mapped tasks (``expand_kwargs``). ``max_active_tis_per_dagrun`` caps how many
  windows of a run share the key's 120 requests/minute at once; the ``clarky_api`` pool caps
  Clarky tasks across DAGs, runs and hosts. Each window is its own process; the windows on one
  host share the key's pacing, and the warehouse does the merges.
* **One key, one pool.** Every window runs in the ``clarky_api`` pool; create it before
  unpausing: ``airflow pools set clarky_api 1 "Clarky key budget"``. One slot where tasks can run
  on several hosts; without the pool the scheduler never starts them (why: ``clarky_full_sync``
  and docs/rate-limits.md).
* **Retries suit a rate-limited API** (``default_args``). Clarky trouble reaches Airflow's retries
  only after the hook's own retries (429s, 5xx, resets) have given up, so it has outlasted
  seconds. The first retry waits ``retry_delay`` = 60 s, one Clarky rate window (a rolling
  minute), so the failed attempt's requests have left the key's budget;
  ``retry_exponential_backoff`` doubles the wait per retry (with Airflow's jitter: 1-2 min, then
  2-4 min) up to ``max_retry_delay`` = 10 minutes. Airflow's default is a flat 5 minutes.
  (``True``, not ``2.0``: early Airflow 3 releases accept only a bool; later ones read ``True``
  as 2.)
* No schedule: the DAG runs only when triggered, with the history's bounds as params.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Param, task

from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator

with DAG(
    dag_id="clarky_contacts_backfill",
    description="Clarky contacts history, one mapped task per created_at window",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["clarky", "example"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=60),  # one rolling rate window
        "retry_exponential_backoff": True,  # 1-2 min, 2-4 min, ...
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "sql_conn_id": Param("warehouse", type="string"),
        "start": Param("2023-01-01T00:00:00Z", type="string", description="first instant of the history"),
        "end": Param("2027-01-01T00:00:00Z", type="string", description="end of the history (exclusive)"),
        "window_days": Param(365, type="integer", minimum=1, description="days per window"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def windows(start: str, end: str, window_days: int | str) -> list[dict[str, str]]:
        """Half-open windows [start, end) covering the history exactly once."""
        first = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(timezone.utc)
        last = datetime.fromisoformat(end.replace("Z", "+00:00")).astimezone(timezone.utc)
        out = []
        while first < last:
            stop = min(first + timedelta(days=int(window_days)), last)
            out.append({"window_start": first.isoformat(), "window_end": stop.isoformat()})
            first = stop
        return out

    ClarkyToSqlOperator.partial(
        task_id="load_window",
        resource="contacts",
        sql_conn_id="{{ params.sql_conn_id }}",
        write_mode="merge",
        max_active_tis_per_dagrun=2,
        pool="clarky_api",  # see the docstring
    ).expand_kwargs(windows("{{ params.start }}", "{{ params.end }}", "{{ params.window_days }}"))
