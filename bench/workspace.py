"""A workspace on one key: full sync of every resource, a day of changes, the daily sync.

    .venv/bin/python bench/workspace.py                  # 3,000 contacts, 4 task processes
    .venv/bin/python bench/workspace.py --contacts 1000 --time-scale 0.05 --processes 2
    .venv/bin/python bench/workspace.py --process-local --skip-baseline   # each process paces alone

Why this shape: in Airflow every task instance is its own OS process, and all of them spend
one API key's 120 reads per rolling minute. So the emulator runs here, in the bench's main
process (a threaded server on 127.0.0.1), which keeps the ground truth, makes the day of
changes and timestamps every request the server admits or rejects; the loads run in task
processes forked by P worker processes (an Airflow pool of P slots on LocalExecutor), each
connecting over loopback with the key's full budget on its connection:

(a) full sync: one ``ClarkyToSqlOperator(resource=r, incremental="auto")`` task per resource,
    handed to the P slots in map-index order;
(b) a day of changes: new activities on 1% of contacts; 0.5% of contacts inserted, 2% updated,
    0.2% deleted;
(c) the daily sync: the same tasks again (contacts by ``updated_after``, activities only of
    contacts contacted or created since the table's newest activity, the rest full snapshots);
and, for comparison, the full sync as a sequential loop (one task at a time,
``max_concurrency=1``) on a fresh emulator with the same data.

Durations are API durations on a scaled clock (``--time-scale 0.03``: a rate-limit minute lasts
1.8 s); workers import Airflow before the clock starts. Tables are checked against the
emulator's data by id and ``_raw`` (the whole record as served). Printed, never asserted; the
PNG shows requests per rolling rate-limit window over time. Targets: PostgreSQL when
CLARKY_TEST_POSTGRES_URI is set (one database, every table), else SQLite with one file per table
(SQLite has one writer per file, and a load holds it for its whole transaction, so one shared
file would make the P processes load one after the other).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from targets import fresh_postgres_database

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 120
WINDOW = 60.0  # API seconds of the rolling rate-limit window
RESOURCE_ORDER = (  # Airflow maps ``sorted(RESOURCES)``; a pool hands out slots in map-index order
    "agents",
    "companies",
    "contact_activities",
    "contacts",
    "conversation_messages",
    "conversations",
    "form_submissions",
    "forms",
    "pipeline_stages",
    "pipelines",
)


# -- what the server saw --------------------------------------------------------------------


def admissions_between(emulator: Any, start: float, end: float) -> tuple[list[float], list[float]]:
    """(admitted, rejected) request times within [start, end], sorted, from the emulator's log.

    The emulator records them at its budget check (``record_admissions=True``). Monotonic time
    is system-wide on Linux, so the task processes' start and end times share this clock.
    """
    with emulator._lock:
        entries = sorted(e for e in emulator.stats.admissions if start <= e[0] <= end)
    return [t for t, ok in entries if ok], [t for t, ok in entries if not ok]


# -- the minimum the API allows ---------------------------------------------------------------


def pages(records: int) -> int:
    """Requests a list of ``records`` takes at 100 a page (an empty list still takes one)."""
    return max(1, math.ceil(records / 100))


def full_minimum(dataset: dict[str, list[dict[str, Any]]], resource: str) -> int:
    """A complete read: the list's pages; for a child, the parents' pages + each parent's list."""
    from clarky_provider.resources import RESOURCES

    res = RESOURCES[resource]
    if res.parent is None:
        return pages(len(dataset[resource]))
    per_parent: dict[str, int] = {}
    for record in dataset[resource]:
        parent_id = str(record.get(res.parent_key or ""))
        per_parent[parent_id] = per_parent.get(parent_id, 0) + 1
    parents = dataset[res.parent]
    children = sum(1 if not res.paginated else pages(per_parent.get(str(p["id"]), 0)) for p in parents)
    return pages(len(parents)) + children


def daily_minimum(
    dataset: dict[str, list[dict[str, Any]]],
    resource: str,
    changed_contacts: int,
    touched: int,
    messaged: int = 0,
) -> int:
    """The daily read: pages of changed contacts; for activities the contact list + touched
    contacts; for messages the conversation list + conversations with a new message (their
    ``last_message_at``, an assumed name, says which).

    Every other resource has no change signal in the API, so its minimum is a full read.
    """
    if resource == "contacts":
        return pages(changed_contacts)
    if resource == "contact_activities":
        return pages(len(dataset["contacts"])) + touched
    if resource == "conversation_messages":
        return pages(len(dataset["conversations"])) + messaged
    return full_minimum(dataset, resource)


# -- targets ------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where one phase's tables go: a PostgreSQL database, or SQLite files: one per table (task
    processes writing at once), or one for all (``shared_file``: loads one after another that
    read each other's tables)."""

    kind: str
    folder: Path | None = None
    shared_file: bool = False
    postgres: dict[str, Any] = field(default_factory=dict)
    dsn: str = ""

    @classmethod
    def create(cls, label: str) -> Target:
        database = fresh_postgres_database(f"workspace_{label}")
        if database is None:
            return cls("sqlite", folder=Path(tempfile.mkdtemp(prefix=f"clarky-workspace-{label}-")))
        name, conn = database
        uri = os.environ["CLARKY_TEST_POSTGRES_URI"]
        return cls("postgres", postgres=conn, dsn=uri.rsplit("/", 1)[0] + "/" + name)

    def connection(self, resource: str) -> str:
        """The ``AIRFLOW_CONN_WAREHOUSE`` value a task loading ``resource`` gets."""
        if self.kind == "postgres":
            return json.dumps(self.postgres)
        return json.dumps({"conn_type": "sqlite", "host": str(self.sqlite_path(resource))})

    def sqlite_path(self, table: str) -> Path:
        assert self.folder is not None
        return self.folder / ("warehouse.db" if self.shared_file else f"{table}.db")

    def raw_rows(self, table: str) -> dict[str, Any]:
        """``id -> _raw`` (the record as the API served it) of every row of ``table``."""
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.dsn) as conn:
                fetched = conn.execute(f'SELECT "id", "_raw" FROM "{table}"').fetchall()
        else:
            import sqlite3

            path = self.sqlite_path(table)
            if not path.exists():
                return {}
            with sqlite3.connect(path) as conn:
                try:
                    fetched = conn.execute(f'SELECT "id", "_raw" FROM "{table}"').fetchall()
                except sqlite3.OperationalError:  # no such table: the load failed before creating it
                    return {}
        return {row_id: json.loads(raw) if isinstance(raw, str) else raw for row_id, raw in fetched}

    def drop(self) -> None:
        if self.kind != "postgres":
            return
        import psycopg

        name = self.postgres["schema"]
        with psycopg.connect(os.environ["CLARKY_TEST_POSTGRES_URI"], autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def compare(target: Target, resource: str, truth: list[dict[str, Any]]) -> str:
    """``yes`` when the table holds exactly the API's ids and each row's ``_raw`` equals the record.

    Otherwise says how: ids the API no longer lists, ids missing, and which fields differ.
    """
    rows = target.raw_rows(resource)
    expected = {str(r["id"]): r for r in truth}
    extra = set(rows) - set(expected)
    missing = set(expected) - set(rows)
    fields: set[str] = set()
    differ = 0
    for record_id in set(rows) & set(expected):
        row, record = rows[record_id], expected[record_id]
        if row != record:
            differ += 1
            fields.update(k for k in set(row) | set(record) if row.get(k) != record.get(k))
    if not (extra or missing or differ):
        return "yes"
    parts = [f"+{len(extra)} extra" if extra else "", f"-{len(missing)} missing" if missing else ""]
    parts.append(f"{differ} differ in {', '.join(sorted(fields))}" if differ else "")
    return "NO (" + "; ".join(p for p in parts if p) + ")"


# -- task processes -----------------------------------------------------------------------------


@dataclass
class TaskRun:
    """One task process's figures (from its operator summary) and its place on the clock."""

    resource: str
    started: float = 0.0
    ended: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def requests(self) -> int:
        return int(self.summary.get("requests", 0))

    @property
    def rate_limited(self) -> int:
        return int(self.summary.get("rate_limited", 0))


class Worker:
    """One pool slot: a process that imports Airflow once, then forks a fresh process per task.

    That is how Airflow 3's LocalExecutor runs tasks (a long-lived worker, a forked task
    process each), and it keeps imports (about 8 s of CPU each on this machine) and interpreter
    exit out of the measured time: on a scaled clock every real second of overhead becomes
    many API seconds that no real task would spend.
    """

    def __init__(self, log_path: Path) -> None:
        env = {
            **os.environ,
            "AIRFLOW_CONN_BENCH_WARMUP": json.dumps({"conn_type": "sqlite", "host": ":memory:"}),
        }
        env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="clarky-workspace-home-"))
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, __file__, "_worker"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_path.open("w"),
            text=True,
        )

    def wait_ready(self) -> None:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            raise RuntimeError(f"worker did not start: {line!r}\n{self.log_path.read_text()[-2000:]}")

    def run(self, resource: str, env: dict[str, str]) -> dict[str, Any]:
        """Run one load in a forked task process; its summary, or ``{"error": ...}``."""
        self.process.stdin.write(json.dumps({"resource": resource, "env": env}) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            return {"error": "worker died: " + self.log_path.read_text()[-300:]}
        return json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def run_phase(
    emulator: Any, target: Target, workers: list[Worker], limiter_dir: str, **clarky_extra: Any
) -> tuple[list[TaskRun], float, float]:
    """Run every resource's load, one per free worker (pool slot), in map-index order.

    Returns (runs, start, end) on the monotonic clock (system-wide on Linux, so the workers'
    and the emulator's times line up).
    """
    env = {
        "AIRFLOW_CONN_CLARKY_DEFAULT": emulator.connection_uri(**clarky_extra),
        "CLARKY_LIMITER_DIR": limiter_dir,  # the hook's shared pacing state, of this run only
    }
    pending: queue.Queue[str] = queue.Queue()
    for resource in RESOURCE_ORDER:
        pending.put(resource)
    runs = {resource: TaskRun(resource) for resource in RESOURCE_ORDER}

    def slot(worker: Worker) -> None:
        while True:
            try:
                resource = pending.get_nowait()
            except queue.Empty:
                return
            run = runs[resource]
            run.started = time.monotonic()
            result = worker.run(resource, {**env, "AIRFLOW_CONN_WAREHOUSE": target.connection(resource)})
            run.ended = time.monotonic()
            run.error = result.pop("error", None)
            run.summary = result

    start = time.monotonic()
    slots = [threading.Thread(target=slot, args=(worker,)) for worker in workers]
    for thread in slots:
        thread.start()
    for thread in slots:
        thread.join()
    return list(runs.values()), start, max(r.ended for r in runs.values())


def worker() -> None:
    """A pool slot's process: import once, then fork a task process per line read from stdin."""
    import logging

    from airflow.providers.common.sql.hooks.sql import DbApiHook  # noqa: F401 - imported before the clock

    from clarky_provider.compat import BaseHook
    from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator

    BaseHook.get_connection("bench_warmup").get_hook()  # the SQLite provider and driver
    if os.environ.get("CLARKY_TEST_POSTGRES_URI"):
        import airflow.providers.postgres.hooks.postgres  # noqa: F401
    logging.getLogger("clarky_provider").setLevel(logging.WARNING)
    # Airflow logs to stdout: keep the real stdout for the protocol and send everything else to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    print("ready", file=protocol, flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the task process
            os.close(read_end)
            os.environ.update(job["env"])
            try:
                operator = ClarkyToSqlOperator(
                    task_id=f"load_{job['resource']}",
                    resource=job["resource"],
                    sql_conn_id="warehouse",
                    incremental="auto",
                )
                summary = operator.execute({})
                keep = ("rows_fetched", "requests", "rate_limited", "retries", "total_reported", "filters")
                result: dict[str, Any] = {k: summary.get(k) for k in keep}
            except BaseException as exc:  # reported, not raised: the bench goes on
                result = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
            os.write(write_end, json.dumps(result, default=str).encode())
            os._exit(0)  # no interpreter teardown: a task's exit is not part of the load
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        print(data.decode() or json.dumps({"error": "task process wrote nothing"}), file=protocol, flush=True)


# -- reporting ----------------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured phase: its task runs, minima, table checks and the server's view."""

    name: str
    runs: list[TaskRun]
    start: float
    end: float
    minimum: dict[str, int]
    equal: dict[str, str]
    admitted: list[float]
    rejected: list[float]
    time_scale: float

    def scaled_minutes(self, seconds: float) -> float:
        return seconds / (60 * self.time_scale)

    @property
    def minutes(self) -> float:
        return self.scaled_minutes(self.end - self.start)

    @property
    def budget(self) -> float:
        """Admitted requests per scaled minute over the phase, as a share of the key's limit."""
        return len(self.admitted) / (self.minutes * LIMIT) if self.minutes else 0.0

    def print(self) -> None:
        print(f"\n{self.name}")
        print(
            f"  {'resource':<22} {'requests':>9} {'minimum':>8} {'x min':>6} {'429s':>6} "
            f"{'seconds':>8} {'API min':>8}  {'table = emulator':<20}"
        )
        for run in self.runs:
            seconds = run.ended - run.started
            answered = run.requests - run.rate_limited
            ratio = answered / self.minimum[run.resource]
            state = f"FAILED: {run.error}" if run.error else self.equal[run.resource]
            print(
                f"  {run.resource:<22} {run.requests:>9} {self.minimum[run.resource]:>8} {ratio:>6.2f} "
                f"{run.rate_limited:>6} {seconds:>8.1f} {self.scaled_minutes(seconds):>8.1f}  {state:<20}"
            )
        requests = sum(r.requests for r in self.runs)
        limited = sum(r.rate_limited for r in self.runs)
        floor = sum(self.minimum.values())
        all_equal = all(v == "yes" for v in self.equal.values()) and not any(r.error for r in self.runs)
        print(
            f"  {'total':<22} {requests:>9} {floor:>8} {(requests - limited) / floor:>6.2f} {limited:>6} "
            f"{self.end - self.start:>8.1f} {self.minutes:>8.1f}  {'yes' if all_equal else 'NO':<20}"
        )
        print(
            f"  server: {len(self.admitted)} admitted, {len(self.rejected)} rejected (429) in "
            f"{self.minutes:.1f} API minutes; budget used {self.budget:.0%} "
            f"({len(self.admitted) / self.minutes if self.minutes else 0:.1f} of {LIMIT}/min); "
            f"floor at the limit: {floor / LIMIT:.1f} API minutes"
        )


def rolling(times: list[float], start: float, end: float, time_scale: float) -> tuple[list[float], list[int]]:
    """Requests in the trailing rate-limit window, sampled every API second: (API minutes, counts)."""
    window = WINDOW * time_scale
    steps = int((end - start) / time_scale) + 1
    xs, ys = [], []
    for step in range(steps + 1):
        moment = start + step * time_scale
        xs.append(step / 60)
        ys.append(bisect.bisect_right(times, moment) - bisect.bisect_right(times, moment - window))
    return xs, ys


def draw(full: Phase, daily: Phase, sequential: Phase, path: Path, processes: int) -> None:
    """Requests per rolling window over time (ours vs the sequential loop), and who ran when."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(full.end - full.start, sequential.end - sequential.start)
    fig, (top, gantt) = plt.subplots(
        2, 1, figsize=(10, 7.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for phase, label, colour in (
        (full, f"full sync, {processes} task processes (this provider)", "#1f77b4"),
        (sequential, "full sync, sequential loop (1 process, 1 request at a time)", "#7f7f7f"),
    ):
        xs, ys = rolling(phase.admitted, phase.start, phase.start + end, phase.time_scale)
        top.plot(xs, ys, color=colour, lw=1.8, label=label)
    xs, ys = rolling(full.rejected, full.start, full.start + end, full.time_scale)
    if any(ys):
        top.fill_between(xs, ys, color="#d62728", alpha=0.35, lw=0, label="429s, this provider")
    top.axhline(LIMIT, color="black", ls="--", lw=1)
    top.text(0.3, LIMIT + 4, f"budget: {LIMIT} reads per rolling minute", fontsize=9)
    floor = sum(full.minimum.values()) / LIMIT
    top.axvline(floor, color="black", ls=":", lw=1)
    top.text(floor, 140, f"fastest possible at the budget: {floor:.1f} min ", fontsize=8.5, ha="right")
    for phase, colour in ((full, "#1f77b4"), (sequential, "#7f7f7f")):
        top.annotate(
            f"done: {phase.minutes:.1f} min ",
            (phase.minutes, 0),
            xytext=(phase.minutes, 22),
            fontsize=8.5,
            color=colour,
            ha="right" if phase is sequential else "left",
            arrowprops={"arrowstyle": "->", "color": colour},
        )
    top.set_ylabel("requests in the last 60 s (API time)")
    top.set_ylim(0, max(LIMIT * 1.35, max(ys, default=0) * 1.1))
    top.legend(loc="upper right", fontsize=8.5, framealpha=0.95)
    top.set_title(
        f"One key, {LIMIT} reads/min: full sync of a workspace "
        f"({len(full.runs)} resources, {sum(full.minimum.values())} requests at the minimum)",
        fontsize=11,
    )
    top.grid(alpha=0.3)
    labels = []
    for row, run in enumerate(full.runs):
        left = full.scaled_minutes(run.started - full.start)
        width = full.scaled_minutes(run.ended - run.started)
        gantt.barh(row, width, left=left, height=0.6, color="#1f77b4")
        labels.append(run.resource)
    for row, run in enumerate(sequential.runs):
        left = sequential.scaled_minutes(run.started - sequential.start)
        width = sequential.scaled_minutes(run.ended - run.started)
        gantt.barh(row, width, left=left, height=0.25, color="#7f7f7f")
    gantt.set_yticks(range(len(labels)), labels, fontsize=8)
    gantt.invert_yaxis()
    gantt.set_xlabel("API minutes since the sync started")
    gantt.set_title(
        f"Task processes: this provider (blue, pool of {processes}) vs the sequential loop (grey)",
        fontsize=9.5,
    )
    gantt.grid(axis="x", alpha=0.3)
    daily_note = (
        f"Daily sync after a day of changes: {sum(r.requests for r in daily.runs)} requests "
        f"(minimum {sum(daily.minimum.values())}), {daily.minutes:.1f} API minutes."
    )
    fig.text(0.01, 0.005, daily_note, fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the scenario -------------------------------------------------------------------------------


def limiter_version() -> str:
    """Which rate limiter the children run: the file's hash, and whether it differs from git HEAD."""
    path = ROOT / "clarky_provider" / "hooks" / "rate_limit.py"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    changed = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", str(path)], cwd=ROOT, capture_output=True
    ).returncode
    state = {0: "as committed at HEAD", 1: "modified since HEAD"}.get(changed, "git state unknown")
    return f"rate_limit.py sha256 {digest} ({state})"


def measure_phase(
    name: str,
    emulator: Any,
    target: Target,
    workers: list[Worker],
    minimum: dict[str, int],
    *,
    process_local: bool,
    **clarky_extra: Any,
) -> Phase:
    """Run one phase into ``target``, then check every table against the emulator's data."""
    with tempfile.TemporaryDirectory(prefix="clarky-workspace-limiter-") as folder:
        limiter_dir = "" if process_local else folder
        runs, start, end = run_phase(emulator, target, workers, limiter_dir, **clarky_extra)
    truth = emulator.dataset
    equal = {run.resource: compare(target, run.resource, truth[run.resource]) for run in runs}
    admitted, rejected = admissions_between(emulator, start, end)
    return Phase(name, runs, start, end, minimum, equal, admitted, rejected, emulator.time_scale)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="run", choices=["run", "_worker"])
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--activities-per-contact", type=float, default=3.0)
    parser.add_argument("--time-scale", type=float, default=0.03, help="real seconds per API second")
    parser.add_argument("--latency", type=float, default=1.0, help="API seconds per response")
    parser.add_argument("--processes", type=int, default=4, help="task processes at once (pool size)")
    parser.add_argument("--baseline-contacts", type=int, default=None, help="default: --contacts")
    parser.add_argument(
        "--process-local",
        action="store_true",
        help="CLARKY_LIMITER_DIR='': each task process paces alone (the hook before the shared limiter)",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="no sequential loop, no figure")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "img" / "workspace-budget.png")
    args = parser.parse_args()
    if args.command == "_worker":
        worker()
        return
    logs = Path(tempfile.mkdtemp(prefix="clarky-workspace-logs-"))
    workers = [Worker(logs / f"worker-{i}.log") for i in range(args.processes)]
    try:
        for each in workers:
            each.wait_ready()
        run(args, workers)
    finally:
        for each in workers:
            each.stop()


def run(args: argparse.Namespace, workers: list[Worker]) -> None:
    import logging

    from clarky_provider.testing import ClarkyEmulator, DatasetSize

    logging.disable(logging.WARNING)
    began = time.monotonic()
    scale = args.time_scale
    size = DatasetSize(contacts=args.contacts, activities_per_contact=args.activities_per_contact)
    options = {
        "time_scale": scale,
        "latency": args.latency,
        "rate_limit": LIMIT,
        "seed": args.seed,
        "record_admissions": True,
    }
    target_kind = (
        "PostgreSQL" if os.environ.get("CLARKY_TEST_POSTGRES_URI") else "SQLite (one file per table)"
    )
    pacing = "each process paces alone (CLARKY_LIMITER_DIR='')" if args.process_local else "shared limiter"
    print(
        f"Workspace: {args.contacts} contacts ({args.activities_per_contact:g} activities each on average), "
        f"{LIMIT} reads per rolling minute on one key, {args.latency:g} API s latency per response, "
        f"clock scaled x{1 / scale:g} (an API minute lasts {60 * scale:g} s); target {target_kind}; "
        f"{pacing}; {limiter_version()}",
        flush=True,
    )
    with ClarkyEmulator(size=size, **options) as emu:
        truth = emu.dataset
        print("  records: " + ", ".join(f"{name} {len(rows)}" for name, rows in truth.items()), flush=True)
        target = Target.create("ours")
        try:
            full = measure_phase(
                f"(a) full sync: {args.processes} task processes at once, incremental='auto', each with "
                "the key's full budget",
                emu,
                target,
                workers,
                {r: full_minimum(truth, r) for r in RESOURCE_ORDER},
                process_local=args.process_local,
            )
            full.print()
            time.sleep(WINDOW * scale)  # a quiet rate window: the day's sync starts with the whole budget

            contacts = len(truth["contacts"])
            logged = set(emu.log_activities(max(1, contacts // 100)))
            changes = emu.mutate(
                inserts=max(1, contacts // 200),
                updates=max(1, contacts // 50),
                deletes=max(1, contacts // 500),
            )
            deleted = set(changes["deleted"])
            touched = (logged | set(changes["inserted"])) - deleted
            changed = set(changes["inserted"]) | (set(changes["updated"]) - deleted)
            print(
                f"\n(b) a day of changes: new activities on {len(logged)} contacts; contacts "
                f"{len(changes['inserted'])} inserted, {len(changes['updated'])} updated, "
                f"{len(deleted)} deleted",
                flush=True,
            )
            truth = emu.dataset
            daily = measure_phase(
                f"(c) daily sync: the same {args.processes} task processes, incremental='auto'",
                emu,
                target,
                workers,
                {r: daily_minimum(truth, r, len(changed), len(touched)) for r in RESOURCE_ORDER},
                process_local=args.process_local,
            )
            daily.print()
            stale = deleted_left(target, deleted)
            if stale:
                print(f"  rows of contacts deleted upstream still in the tables: {stale}")
        finally:
            target.drop()

    if args.skip_baseline:
        print(f"  bench wall time: {time.monotonic() - began:.0f} s (baseline and figure skipped)")
        return
    baseline_contacts = args.baseline_contacts or args.contacts
    baseline_size = DatasetSize(
        contacts=baseline_contacts, activities_per_contact=args.activities_per_contact
    )
    with ClarkyEmulator(size=baseline_size, **options) as emu:
        truth = emu.dataset
        target = Target.create("sequential")
        try:
            sequential = measure_phase(
                f"Baseline: the same full sync as a sequential loop ({baseline_contacts} contacts, one "
                "process at a time, max_concurrency=1), fresh emulator",
                emu,
                target,
                workers[:1],
                {r: full_minimum(truth, r) for r in RESOURCE_ORDER},
                process_local=args.process_local,
                max_concurrency=1,
            )
        finally:
            target.drop()
        sequential.print()
    print(
        f"\n  full sync: {full.minutes:.1f} API minutes with {args.processes} processes vs "
        f"{sequential.minutes:.1f} sequential ({sequential.minutes / full.minutes:.1f}x); "
        f"budget {full.budget:.0%} vs {sequential.budget:.0%}"
    )
    draw(full, daily, sequential, args.png, args.processes)
    print(f"  figure: {args.png}")
    print(
        f"  bench wall time: {time.monotonic() - began:.0f} s (after {len(workers)} workers imported Airflow)"
    )


def deleted_left(target: Target, deleted: set[str]) -> dict[str, int]:
    """Rows that belong to contacts deleted upstream, per table (incremental reads cannot see deletes)."""
    left = {}
    contacts = set(target.raw_rows("contacts")) & deleted
    activities = sum(
        1 for raw in target.raw_rows("contact_activities").values() if raw.get("contact_id") in deleted
    )
    if contacts:
        left["contacts"] = len(contacts)
    if activities:
        left["contact_activities"] = activities
    return left


if __name__ == "__main__":
    main()
