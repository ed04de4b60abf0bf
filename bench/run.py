"""Benchmarks with printed figures (never asserted in tests).

    python bench/run.py emulator                      # emulator list requests/s on one core
    python bench/run.py pipeline --contacts 50000     # our operator vs a naive loop and dlt, same run
    python bench/run.py memory --sizes 10000,1000000  # peak RSS of the operator by dataset size
    python bench/run.py order --sizes 3000,20000      # requests of complete reads, stable vs changing order
    python bench/run.py warehouses --contacts 20000   # operator vs naive loop into every warehouse engine
    python bench/run.py resume                        # a child load killed at 25/50/75%, then resumed
    python bench/run.py workspace                     # the daily sync's requests vs the minimum, with/without the message signal

The emulator runs in its own process (pinned to one core for the throughput figure); every
measured load runs in a fresh child process, on a fresh database, so its peak RSS is its own.
Targets: PostgreSQL when CLARKY_TEST_POSTGRES_URI is set (``scripts/postgres.sh start`` prints
one), else SQLite; ``warehouses`` loads into each engine of bench/targets.py in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
from daily import bench_daily
from harness import HEADER, emulator_process, median_run, row, run_child
from resume import bench_resume
from targets import ENGINES, FAKESNOW_DIR, SERVERS

# -- figure 1: emulator throughput ------------------------------------------------------------


def bench_emulator(args: argparse.Namespace) -> None:
    """List requests/s the emulator serves on one core, driven by light keep-alive clients on the other."""
    import http.client

    with emulator_process(args.contacts, core=0) as (base_url, key):
        os.sched_setaffinity(0, {1})  # keep this process's clients off the server's core
        host, port = base_url.removeprefix("http://").split(":")
        headers = {"Authorization": f"Bearer {key}"}
        pages = -(-args.contacts // 100)
        counts = [0] * args.clients
        stop = time.monotonic() + args.seconds

        def client(index: int) -> None:
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            number = index
            while time.monotonic() < stop:
                number = number % pages + 1
                connection.request("GET", f"/api/v1/contacts?page={number}&page_size=100", headers=headers)
                response = connection.getresponse()
                if response.status != 200 or not response.read():
                    raise RuntimeError(f"emulator answered {response.status}")
                counts[index] += 1
            connection.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    total = sum(counts)
    print("\nEmulator throughput (server pinned to core 0, clients on core 1, page_size=100, keep-alive)")
    print(f"  {'clients':>8} {'requests':>10} {'seconds':>8} {'requests/s':>11} {'records/s':>11}")
    print(
        f"  {args.clients:>8} {total:>10} {elapsed:>8.1f} {total / elapsed:>11.0f} {100 * total / elapsed:>11.0f}"
    )


# -- a measured load, in its child process (``_child``) ----------------------------------------


#: Process names of the database servers a run may keep busy (``/proc/<pid>/stat``).
SERVER_PROCESSES = {"(postgres)", "(mariadbd)", "(mysqld)"}


def server_cpu_seconds() -> float | None:
    """CPU seconds used so far by every database server process on this machine (Linux), so a
    run's figures show what the server spent beside what the measured process did.

    A PostgreSQL backend ends with its connection: its time then moves to the postmaster's
    ``cutime``/``cstime`` (children waited for), which are counted too."""
    if not os.path.isdir("/proc/self"):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split()
        except OSError:  # the process ended meanwhile
            continue
        if fields[1] in SERVER_PROCESSES:
            total += sum(int(value) for value in fields[13:17]) / ticks
    return total


#: What a measured process imports before its clock starts, per engine: the Airflow hook, the
#: driver and the SQLAlchemy dialect of the naive baseline.
PRELOAD = {
    "sqlite": ["airflow.providers.sqlite.hooks.sqlite"],
    "postgres": ["airflow.providers.postgres.hooks.postgres", "sqlalchemy.dialects.postgresql.psycopg"],
    "mysql": ["airflow.providers.mysql.hooks.mysql", "sqlalchemy.dialects.mysql.mysqldb"],
    "duckdb": ["airflow.providers.duckdb.hooks.duckdb", "duckdb_engine"],
    "snowflake": [
        "airflow.providers.snowflake.hooks.snowflake",
        "snowflake.sqlalchemy",
        "snowflake.connector.pandas_tools",
    ],
}


def child(args: argparse.Namespace) -> None:
    """Runs inside the measured process; prints one JSON line of figures (imports not timed)."""
    import importlib

    with ExitStack() as stack:
        if args.engine == "snowflake":
            from clarky_provider.testing.fakesnow import strict_fakesnow

            # fakesnow as the tests run it (as strict as Snowflake about DDL in transactions),
            # before the imports below, so that a module binding a Snowflake function at import
            # time binds the fake; every connection of this process goes to fakesnow's files.
            stack.enter_context(strict_fakesnow(os.environ[FAKESNOW_DIR]))
        # Every run pays its imports (drivers and warehouse hooks included) before the clock starts.
        # The first connection lookup imports Airflow's task supervisor (about 50 ms), which a
        # real task's runner has loaded before the task starts.
        preload = ["pandas", "sqlalchemy", "airflow.sdk.execution_time.supervisor"]
        preload += ["clarky_provider.operators.clarky_to_sql", *PRELOAD[args.engine]]
        if args.kind == "dlt":
            preload += ["dlt", "dlt.destinations.impl.postgres.postgres", "dlt.sources.rest_api"]
            # dlt would probe Airflow Variables for its secrets (this process has no Airflow database).
            os.environ["PROVIDERS__ENABLE_AIRFLOW_SECRETS"] = "false"
        for module in preload:
            importlib.import_module(module)

        load = {
            "operator": operator_load,
            "resync": operator_resync,
            "naive": naive_loop,
            "dlt": dlt_rest_api,
        }
        if args.kind == "resync":
            operator_load(args)  # the table is full before the clock starts
        # A scan of /proc, outside the clock; the embedded engines work inside this process.
        server_started = server_cpu_seconds() if args.engine in SERVERS else None
        started, cpu_started = time.monotonic(), _cpu_seconds()
        records, requests_made, limited = load[args.kind](args)
        seconds, cpu_seconds = time.monotonic() - started, _cpu_seconds() - cpu_started
        server_ended = None
        if server_started is not None:
            time.sleep(0.2)  # a closed PostgreSQL backend's time reaches the postmaster once reaped
            server_ended = server_cpu_seconds()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = {
        "records": records,
        "seconds": seconds,
        "requests": requests_made,
        "429s": limited,
        "cpu_seconds": cpu_seconds,
    }
    if server_started is not None and server_ended is not None:
        figures["server_cpu_seconds"] = server_ended - server_started
    print(json.dumps({**figures, "peak_rss_mb": peak_kb / 1024}))


def _cpu_seconds() -> float:
    """CPU time of this process so far, every thread (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def operator_load(args: argparse.Namespace, **kwargs: Any) -> tuple[int, int, int]:
    """Our operator, as a task would run it: (records, requests, 429s)."""
    from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator

    operator = ClarkyToSqlOperator(task_id="bench", resource=args.resource, sql_conn_id="warehouse", **kwargs)
    summary = operator.execute({})
    return summary["rows_fetched"], summary["requests"], summary["rate_limited"]


def operator_resync(args: argparse.Namespace) -> tuple[int, int, int]:
    """A full re-read merged into the already full table (staging + upsert, as backfills do)."""
    return operator_load(args, incremental="full")


def naive_loop(args: argparse.Namespace) -> tuple[int, int, int]:
    """The baseline a data engineer would write: requests page by page, pandas ``to_sql`` per page,
    into ``args.url`` (any engine SQLAlchemy has a dialect for)."""
    import pandas as pd
    import sqlalchemy
    from sqlalchemy.dialects.mysql import LONGTEXT

    from clarky_provider.resources import CONTACTS

    columns = [f.name for f in CONTACTS.fields]  # a fixed column list: new API fields would break to_sql
    # explicit types: pandas infers all-null columns of the first page as floats; MySQL's TEXT
    # holds 64 KB, less than some notes
    text = sqlalchemy.Text().with_variant(LONGTEXT(), "mysql", "mariadb")
    dtypes = {name: sqlalchemy.Float() if name == "deal_value" else text for name in columns}
    method = None  # executemany of INSERT
    if args.engine == "snowflake":
        from functools import partial

        from snowflake.connector.pandas_tools import pd_writer

        # Snowflake's documented pandas path: write_pandas (fakesnow's, here) per page. Plain
        # executemany would measure fakesnow translating each row's INSERT (about 80 records/s).
        method = partial(pd_writer, quote_identifiers=False)
    database = sqlalchemy.create_engine(args.url)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.key}"
    number, records, requests_made = 1, 0, 0
    while True:
        body = session.get(
            f"{args.base_url}/api/v1/contacts", params={"page": number, "page_size": 100}
        ).json()
        requests_made += 1
        frame = pd.DataFrame(body["data"], columns=columns)
        if frame.empty:
            break
        for column in frame.columns:  # nested values must become text for to_sql
            if frame[column].map(lambda v: isinstance(v, (dict, list))).any():
                frame[column] = frame[column].map(json.dumps)
        frame.to_sql("contacts", database, if_exists="append", index=False, dtype=dtypes, method=method)
        records += len(frame)
        if number >= body["pagination"]["total_pages"]:
            break
        number += 1
    database.dispose()
    return records, requests_made, 0


def dlt_rest_api(args: argparse.Namespace) -> tuple[int, int, int]:
    """dlt's ``rest_api`` source configured for Clarky, merging on id into the same PostgreSQL."""
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": f"{args.base_url}/api/v1/",
                "auth": {"type": "bearer", "token": args.key},
                "paginator": {
                    "type": "page_number",
                    "base_page": 1,
                    "page_param": "page",
                    "total_path": "pagination.total_pages",
                },
            },
            "resource_defaults": {
                "primary_key": "id",
                "write_disposition": "merge",
                "endpoint": {"params": {"page_size": 100}, "data_selector": "data"},
            },
            # Without this step dlt stops at extract ("Integer exceeds 64-bit range"): Clarky
            # records hold integers beyond 64 bits, which orjson, dlt's serialiser, refuses.
            "resources": [{"name": "contacts", "processing_steps": [{"map": _beyond_64_bits_as_text}]}],
        }
    )
    # dlt insists on a password; the benchmark server trusts loopback and ignores it.
    credentials = args.url.replace("postgresql+psycopg://postgres@", "postgresql://postgres:unused@")
    pipeline = dlt.pipeline(
        pipeline_name="clarky_bench",
        destination=dlt.destinations.postgres(credentials=credentials),
        dataset_name="clarky",
        pipelines_dir=tempfile.mkdtemp(prefix="clarky-bench-dlt-"),
    )
    pipeline.run(source)
    with pipeline.sql_client() as client:
        counted = client.execute_sql("SELECT COUNT(*) FROM contacts")
    assert counted is not None  # a SELECT returns rows
    records = counted[0][0]
    return records, -(-records // 100), 0  # dlt pages sequentially: one request per page of 100


def _beyond_64_bits_as_text(value: object) -> object:
    """The workaround a dlt user needs for Clarky data: integers orjson cannot hold become text."""
    if isinstance(value, dict):
        return {k: _beyond_64_bits_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_beyond_64_bits_as_text(v) for v in value]
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    return value


# -- figure 2: the pipeline against baselines --------------------------------------------------------


def bench_pipeline(args: argparse.Namespace) -> None:
    """Our operator against the baselines, each run ``--repeat`` times, interleaved; medians compared."""
    ours = {"operator, first load": "operator", "operator, re-sync (merge)": "resync"}
    baselines = {"naive requests+to_sql": "naive"}
    if _dlt_installed() and os.environ.get("CLARKY_TEST_POSTGRES_URI"):
        baselines["dlt rest_api (merge)"] = "dlt"
    else:
        print("dlt baseline skipped: needs PostgreSQL and `pip install -e '.[bench]'`")
    kinds = {**ours, **baselines}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in kinds}
    with emulator_process(args.contacts) as (base_url, key):
        for _ in range(args.repeat):
            for name, kind in kinds.items():
                runs[name].append(run_child(kind, base_url, key))
    medians = {name: median_run(results) for name, results in runs.items()}
    print(
        f"\nPipeline, {args.contacts} contacts, no rate limit, no latency (emulator in its own process); "
        f"median of {args.repeat} interleaved runs each"
    )
    print(HEADER + f" {'records/s over runs':>22}")
    for name, result in medians.items():
        rates = sorted(r["records"] / r["seconds"] for r in runs[name])
        print(row(name, result) + f" {rates[0]:>10.0f}-{rates[-1]:<11.0f}")
    print()
    rate = {name: r["records"] / r["seconds"] for name, r in medians.items()}
    for mine in ours:
        for baseline in baselines:
            print(f"  {mine} / {baseline} records/s: {rate[mine] / rate[baseline]:.1f}x")


def _dlt_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("dlt") is not None


def bench_memory(args: argparse.Namespace) -> None:
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        with emulator_process(size) as (base_url, key):
            rows.append((size, run_child("operator", base_url, key)))
    print("\nPeak RSS of the operator by dataset size (fresh process each)")
    print(HEADER)
    for size, result in rows:
        print(row(f"operator {size}", result))
    (small, first), (large, last) = rows[0], rows[-1]
    print(f"\n  peak RSS {large} vs {small} contacts: {last['peak_rss_mb'] - first['peak_rss_mb']:+.0f} MB")


def bench_budget(args: argparse.Namespace) -> None:
    """Budget use under the documented limit, on a scaled clock: concurrent vs sequential paging."""
    scale = args.time_scale
    if args.latency_jitter is None:  # real answers vary: jitter as large as the latency by default
        args.latency_jitter = args.latency
    flags = ("--rate-limit", "120", "--time-scale", str(scale), "--latency", str(args.latency))
    flags += ("--latency-jitter", str(args.latency_jitter))
    runs = []
    for name, concurrency in (("operator, concurrent", args.concurrency), ("operator, sequential", 1)):
        with emulator_process(args.contacts, *flags) as (base_url, key):
            result = run_child(
                "operator",
                base_url,
                key,
                args.resource,
                requests_per_minute=120 / scale,
                max_concurrency=concurrency,
            )
        runs.append((name, result))
    print(
        f"\nBudget use: {args.resource} of {args.contacts} contacts, 120 reads/minute, "
        f"{args.latency:g} s latency per request plus up to {args.latency_jitter:g} s of jitter, "
        f"clock scaled x{1 / scale:g} (figures per scaled minute)"
    )
    print(
        f"  {'run':<22} {'records':>8} {'seconds':>8} {'requests':>9} {'req/min':>8} {'budget':>7} {'429s':>5} {'429 %':>6}"
    )
    for name, r in runs:
        per_minute = r["requests"] / (r["seconds"] / scale / 60)
        share = 100 * r["429s"] / max(1, r["requests"])
        print(
            f"  {name:<22} {r['records']:>8} {r['seconds']:>8.1f} {r['requests']:>9} {per_minute:>8.1f} "
            f"{per_minute / 120:>7.0%} {r['429s']:>5} {share:>5.1f}%"
        )


def bench_order(args: argparse.Namespace) -> None:
    """Requests a complete read costs when the list order changes per request, vs a stable order.

    Requests are counted, not timed, so the emulator runs in-process without a rate limit. The
    minimum is one request per page of 100; "one sweep" is what a plain page loop (pages 1..N,
    no completeness check) ends with.
    """
    import logging

    from clarky_provider.hooks.clarky import ClarkyHook
    from clarky_provider.testing import ClarkyEmulator, DatasetSize

    logging.disable(logging.WARNING)
    print("\nComplete reads under a list order that changes per request (emulator order=per_request)")
    print(
        f"  {'resource':<10} {'records':>8} {'order':<12} {'minimum':>8} {'requests':>9} {'x min':>6} "
        f"{'complete':>9} {'one sweep lands':>16}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for name in ("contacts", "companies"):
            for order in ("stable", "per_request"):
                dataset = DatasetSize(contacts=size, companies=size)
                with ClarkyEmulator(size=dataset, rate_limit=None, order=order) as emu:
                    os.environ["AIRFLOW_CONN_CLARKY_BENCH"] = emu.connection_uri()
                    truth = {r["id"] for r in emu.dataset[name]}
                    sweep = {r["id"] for p in ClarkyHook("clarky_bench").iter_pages(name) for r in p.records}
                    before = emu.stats.count(f"/{name}")
                    read = {r["id"] for r in ClarkyHook("clarky_bench").paginate(name)}
                    requests_made = emu.stats.count(f"/{name}") - before
                minimum = -(-size // 100)
                print(
                    f"  {name:<10} {size:>8} {order:<12} {minimum:>8} {requests_made:>9} "
                    f"{requests_made / minimum:>6.2f} {'yes' if read == truth else 'NO':>9} "
                    f"{len(sweep & truth) / len(truth):>15.0%}"
                )


def bench_warehouses(args: argparse.Namespace) -> None:
    """Our operator against the naive loop on each warehouse engine (bench/warehouses.py)."""
    import warehouses

    warehouses.bench_warehouses(args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    emulator = sub.add_parser("emulator")
    emulator.add_argument("--contacts", type=int, default=10_000)
    emulator.add_argument("--clients", type=int, default=4)
    emulator.add_argument("--seconds", type=float, default=10.0)
    pipeline = sub.add_parser("pipeline")
    pipeline.add_argument("--contacts", type=int, default=20_000)
    pipeline.add_argument("--repeat", type=int, default=3)
    budget = sub.add_parser("budget")
    budget.add_argument("--contacts", type=int, default=20_000)
    budget.add_argument("--time-scale", type=float, default=0.25)
    budget.add_argument("--latency", type=float, default=1.0)
    budget.add_argument(
        "--latency-jitter",
        type=float,
        default=None,
        help="extra latency, uniform in [0, this] (default: the latency)",
    )
    budget.add_argument("--concurrency", type=int, default=4)
    budget.add_argument(
        "--resource", default="contacts", help="e.g. contact_activities: one list per contact"
    )
    order = sub.add_parser("order")
    order.add_argument("--sizes", default="3000,20000")
    memory = sub.add_parser("memory")
    memory.add_argument("--sizes", default="10000,100000")
    warehouses = sub.add_parser("warehouses")
    warehouses.add_argument("--contacts", type=int, default=20_000)
    warehouses.add_argument("--repeat", type=int, default=1)
    warehouses.add_argument("--engines", default=",".join(ENGINES), help="comma list of engines")
    resume = sub.add_parser("resume")
    resume.add_argument("--contacts", type=int, default=1200)
    resume.add_argument("--time-scale", type=float, default=0.05)
    resume.add_argument("--latency", type=float, default=0.05, help="plus up to as much jitter")
    resume.add_argument("--concurrency", type=int, default=4)
    resume.add_argument("--resource", default="contact_activities", help="a child resource")
    workspace = sub.add_parser("workspace")
    workspace.add_argument("--contacts", type=int, default=3000)
    workspace.add_argument("--conversations", type=int, default=600)
    workspace.add_argument("--messages", type=int, default=3, help="messages per conversation")
    workspace.add_argument("--recheck", type=float, default=1 / 7, help="the rotation's recheck_fraction")
    measured = sub.add_parser("_child")
    measured.add_argument("kind", choices=["operator", "resync", "naive", "dlt"])
    measured.add_argument("--engine", choices=sorted(PRELOAD), required=True)
    measured.add_argument("--url", required=True)
    measured.add_argument("--base-url", required=True)
    measured.add_argument("--key", required=True)
    measured.add_argument("--resource", default="contacts")
    args = parser.parse_args()
    commands = {
        "emulator": bench_emulator,
        "pipeline": bench_pipeline,
        "memory": bench_memory,
        "budget": bench_budget,
        "order": bench_order,
        "warehouses": bench_warehouses,
        "resume": bench_resume,
        "workspace": bench_daily,
    }
    {**commands, "_child": child}[args.command](args)


if __name__ == "__main__":
    main()
