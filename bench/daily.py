"""``run.py workspace``: what the daily sync costs against the minimum the API allows, with and
without the conversations' message signal, and what the rotation adds.

The daily loads (contacts, activities, conversations, messages; ``ClarkyToSqlOperator``, merge)
run once in full, then again after a day in which 1% of contacts get an activity and 1% of
conversations a message, in two set-ups on fresh emulators with the same data and the same day:

* ``clarky_full_sync`` (the example DAG): the parents as full snapshots, then each child with
  ``parent_table``, asking the parents' fresh table which lists changed;
* ``on their own``: every load ``incremental="auto"`` (contacts by ``updated_after``, each child
  through its parents' list and their change signal).

Each twice: on an emulator whose conversations carry the times the docs describe
(``last_message_at``, an assumed name) and on one whose conversations carry none (what the
provider meets if the fields are missing or named otherwise). Requests are the emulator's
count, not timed, so it runs in-process with no rate limit, into SQLite (one file per table).
Tables are compared with the emulator's data by id and ``_raw``.

The minimum the API allows for a day that leaves every table equal to the source: every page of
contacts (no filter finds a contact whose ``last_contacted_at`` moved: the docs do not say an
activity moves ``updated_at``), one request per contact with a new activity, every page of
conversations (no time filter), one request per conversation with a new message.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from workspace import Target, compare, pages

DAILY = ("contacts", "contact_activities", "conversations", "conversation_messages")
#: The rotation's day: a fixed date, so the printed figures repeat.
ROTATION_DAY = "2026-12-05"
#: set-up -> each load's arguments besides the resource.
SETUPS = {
    "clarky_full_sync": {
        "contacts": {"incremental": "full"},
        "contact_activities": {"parent_table": "contacts"},
        "conversations": {"incremental": "full"},
        "conversation_messages": {"parent_table": "conversations"},
    },
    "on their own": {resource: {"incremental": "auto"} for resource in DAILY},
}


def sync(emulator: Any, target: Target, setup: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Each load of the set-up in turn; requests per load, as the emulator counted them."""
    from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator

    spent = {}
    for resource in DAILY:
        os.environ["AIRFLOW_CONN_WAREHOUSE"] = target.connection(resource)
        before = emulator.stats.requests
        ClarkyToSqlOperator(
            task_id=f"load_{resource}", resource=resource, sql_conn_id="warehouse", **setup[resource]
        ).execute({})
        spent[resource] = emulator.stats.requests - before
    return spent


def daily_minimum(dataset: dict[str, list[dict[str, Any]]], contacted: int, messaged: int) -> dict[str, int]:
    """The minimum the API allows for the day (module docstring), load by load."""
    return {
        "contacts": pages(len(dataset["contacts"])),
        "contact_activities": contacted,
        "conversations": pages(len(dataset["conversations"])),
        "conversation_messages": messaged,
    }


def rotation_cost(resource: str, mark: datetime, fraction: float) -> tuple[int, int]:
    """(extra requests, parents re-read) of the same incremental read with the rotation on,
    through the read plan as the operator builds it."""
    from clarky_provider.hooks.clarky import ClarkyHook
    from clarky_provider.operators.plan import ReadPlan
    from clarky_provider.operators.records import ResourceRecords
    from clarky_provider.resources import RESOURCES

    spent = []
    for share in (0.0, fraction):
        hook = ClarkyHook()
        plan = ReadPlan(RESOURCES[resource], {}, recheck_fraction=share, recheck_day=ROTATION_DAY)
        for _ in ResourceRecords(hook, plan, progress_interval=3600)(mark):
            pass
        spent.append((hook.stats.requests, hook.stats.parents_rechecked))
    return spent[1][0] - spent[0][0], spent[1][1]


def newest(records: list[dict[str, Any]]) -> datetime:
    from clarky_provider.normalize import parse_timestamp

    return max(t for t in (parse_timestamp(r.get("created_at")) for r in records) if t is not None)


def bench_daily(args: argparse.Namespace) -> None:
    from clarky_provider.testing import ClarkyEmulator, DatasetSize

    logging.disable(logging.WARNING)
    print(
        f"\nDaily sync of contacts, activities, conversations and messages: {args.contacts} contacts, "
        f"{args.conversations} conversations (one in ten soft-deleted, not listed), "
        f"{args.messages} messages each; a day: 1% of contacts get an activity, 1% of conversations a "
        "message; requests counted by the emulator"
    )
    print(
        f"  {'signal':<8} {'set-up':<17} {'resource':<22} {'full sync':>10} {'daily':>6} {'minimum':>8} "
        f"{'x min':>6}  {'table = API':<12}"
    )
    rotation: list[str] = []
    for signal in (False, True):
        size = DatasetSize(
            contacts=args.contacts,
            conversations=args.conversations,
            messages_per_conversation=args.messages,
            message_signal=signal,
        )
        label = "with" if signal else "without"
        for setup, loads in SETUPS.items():
            with ClarkyEmulator(size=size, rate_limit=None) as emu, tempfile.TemporaryDirectory() as folder:
                os.environ["AIRFLOW_CONN_CLARKY_DEFAULT"] = emu.connection_uri()
                target = Target("sqlite", folder=Path(folder), shared_file=True)
                full = sync(emu, target, loads)
                marks = {r: newest(emu.dataset[r]) for r in ("contact_activities", "conversation_messages")}
                contacted = emu.log_activities(max(1, args.contacts // 100))
                listed = {c["id"] for c in emu.dataset["conversations"]}
                messaged = set(emu.log_messages(max(1, args.conversations // 100))) & listed
                daily = sync(emu, target, loads)
                truth = emu.dataset
                minimum = daily_minimum(truth, len(contacted), len(messaged))
                for resource in DAILY:
                    print(
                        f"  {label:<8} {setup:<17} {resource:<22} {full[resource]:>10} {daily[resource]:>6} "
                        f"{minimum[resource]:>8} {daily[resource] / max(1, minimum[resource]):>6.2f}  "
                        f"{compare(target, resource, truth[resource])}"
                    )
                total, floor = sum(daily.values()), sum(minimum.values())
                print(
                    f"  {label:<8} {setup:<17} {'total':<22} {sum(full.values()):>10} {total:>6} {floor:>8} "
                    f"{total / floor:>6.2f}"
                )
                if signal and setup == "on their own":
                    for resource, mark in marks.items():
                        extra, rechecked = rotation_cost(resource, mark - timedelta(minutes=5), args.recheck)
                        parents = len(
                            truth["contacts" if resource == "contact_activities" else "conversations"]
                        )
                        rotation.append(
                            f"  {resource:<22} +{extra} requests: {rechecked} of {parents} parents re-read "
                            f"whole ({rechecked / parents:.1%}; configured {args.recheck:.1%})"
                        )
    print(
        f"\nRotation, recheck_fraction={args.recheck:.4g} on {ROTATION_DAY}, the same daily reads with the signal:"
    )
    print("\n".join(rotation))
