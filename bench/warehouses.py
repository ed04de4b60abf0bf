"""Records/s into each warehouse engine: our operator's first load and re-sync against the naive loop.

    python bench/run.py warehouses --contacts 20000 [--repeat 3] [--engines sqlite,postgres]

In one run, for every engine of bench/targets.py (SQLite, PostgreSQL, MariaDB, DuckDB, Snowflake
on fakesnow): our operator's first load into an empty table, its re-sync (a full snapshot,
``incremental="full"``, merged into the already full table; the first load before the clock)
and the naive baseline (``requests`` page by page, pandas ``to_sql`` per page). One emulator
process serves every run, without rate limit or latency; each run is a fresh child process on a
fresh database (harness.py's ``run_child``), its imports loaded before the clock starts. With
``--repeat`` > 1 the runs are interleaved (every engine and kind once, then again) and the run
of median time is shown, with its CPU seconds (the measured process's, and the database
server's). An engine is skipped, with the reason printed, when the operator has no dialect for
it (``DIALECTS``), its server is not running or a module is missing; a run that fails drops its
engine with the error. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse

from harness import HEADER, ChildFailed, emulator_process, median_run, row, run_child
from targets import ENGINES, unavailable

OURS = {"operator, first load": "operator", "operator, re-sync (merge)": "resync"}
NAIVE = "naive requests+to_sql"
KINDS = {**OURS, NAIVE: "naive"}
#: What an engine's figures are, where that is not obvious from its name.
NOTES = {
    "snowflake": (
        "fakesnow (DuckDB underneath, set up as the tests set it up), not a Snowflake account; the naive",
        "loop writes with to_sql(method=pd_writer) through snowflake-sqlalchemy: write_pandas per page",
    )
}


def _seconds(run: dict[str, float]) -> str:
    """``wall, our CPU, server CPU`` of a run, in seconds (``-`` for no server)."""
    server = run.get("server_cpu_seconds")
    served = "-" if server is None else f"{server:.2f}"
    return f"{run['seconds']:.2f}, {run['cpu_seconds']:.2f}, {served}"


def skip_reason(engine: str) -> str | None:
    """Why ``engine`` is left out of this run, or None."""
    from clarky_provider.sql.dialects import DIALECTS

    if engine in ENGINES and engine not in DIALECTS:
        return f"no Clarky dialect for it yet (DIALECTS has {', '.join(sorted(DIALECTS))})"
    return unavailable(engine)


def bench_warehouses(args: argparse.Namespace) -> None:
    requested = [name.strip() for name in args.engines.split(",") if name.strip()]
    skipped = {engine: reason for engine in requested if (reason := skip_reason(engine))}
    engines = [engine for engine in requested if engine not in skipped]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {(e, n): [] for e in engines for n in KINDS}
    if engines:
        with emulator_process(args.contacts) as (base_url, key):
            for _ in range(args.repeat):
                for engine in [e for e in engines if e not in skipped]:
                    for name, kind in KINDS.items():
                        try:
                            runs[engine, name].append(run_child(kind, base_url, key, engine=engine))
                        except ChildFailed as failed:
                            skipped[engine] = f"{name} failed: {' '.join(str(failed).split())[-600:]}"
                            break
    engines = [engine for engine in engines if engine not in skipped]

    each = f"median of {args.repeat} interleaved runs each" if args.repeat > 1 else "one run each"
    print(
        f"\nWarehouses, {args.contacts} contacts, no rate limit, no latency (emulator in its own process); "
        f"{each}; a fresh process and database per run"
    )
    if engines:
        medians = {run: median_run(results) for run, results in runs.items() if run[0] in engines}
        print(HEADER + (f" {'records/s over runs':>22}" if args.repeat > 1 else ""))
        for engine in engines:
            for name in KINDS:
                line = row(name, medians[engine, name])
                if args.repeat > 1:
                    rates = sorted(r["records"] / r["seconds"] for r in runs[engine, name])
                    line += f" {rates[0]:>10.0f}-{rates[-1]:<11.0f}"
                print(line)
        print(f"\n  {'ours / naive, records/s':<26} {'first load':>10} {'re-sync':>9}")
        for engine in engines:
            rate = {name: r["records"] / r["seconds"] for (e, name), r in medians.items() if e == engine}
            first, resync = (rate[name] / rate[NAIVE] for name in OURS)
            print(f"  {engine:<26} {first:>9.1f}x {resync:>8.1f}x")
        print(f"\n  {'seconds of the median run':<26}" + "".join(f" {name:>26}" for name in KINDS))
        print(f"  {'(wall, our CPU, server CPU)':<26}")
        for engine in engines:
            print(f"  {engine:<26}" + "".join(f" {_seconds(medians[engine, name]):>26}" for name in KINDS))
        print(
            "  Our CPU is the measured process's, every thread; server CPU is the database server's\n"
            "  processes' over the run (the embedded engines work inside our process). Both share\n"
            "  the machine's cores with each other and with the emulator."
        )
        print()
        for engine in engines:
            for number, line in enumerate(NOTES.get(engine, ())):
                print(f"  {engine + ':' if number == 0 else '':<10} {line}")
    for engine, reason in skipped.items():
        print(f"  skipped {engine}: {reason}")
