"""``run.py resume``: a long child load killed (SIGKILL) at 25%, 50% and 75% of its requests,
then run again as the next try of the same load: what the resumed try paid against an
uninterrupted load, measured in one run, on the emulator's count of requests (the killed try
cannot report its own), at the key's budget on a scaled clock with latency jitter.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from harness import default_engine
from targets import fresh_target

from clarky_provider.testing import ClarkyEmulator

#: One try of the load, as Airflow would run it: the same ``resume_key`` for every try.
TRY = """
import json, sys
from clarky_provider.operators.clarky_to_sql import ClarkyToSqlOperator
summary = ClarkyToSqlOperator(task_id="bench", resource=sys.argv[1], sql_conn_id="warehouse",
                              resume_key="bench-resume").execute({})
print(json.dumps(summary, default=str))
"""
KILL_AT = (0.25, 0.50, 0.75)


def bench_resume(args: argparse.Namespace) -> None:
    engine = default_engine()
    scale = args.time_scale
    with ClarkyEmulator(
        args.contacts,
        time_scale=scale,
        latency=args.latency,
        latency_jitter=args.latency,
    ) as emu:
        uri = emu.connection_uri(max_concurrency=args.concurrency)
        with fresh_target(engine) as target:
            before = emu.stats.requests
            _try(target.conn, uri, args.resource)
            whole = emu.stats.requests - before
        rows = []
        for share in KILL_AT:
            with fresh_target(engine) as target:
                started = emu.stats.requests
                goal = started + share * whole
                _try(target.conn, uri, args.resource, kill_when=lambda goal=goal: emu.stats.requests >= goal)
                first = emu.stats.requests - started
                summary = _try(target.conn, uri, args.resource)
                assert summary is not None
                resumed = emu.stats.requests - started - first
                rows.append((share, first, resumed, summary))
    print(
        f"\nResuming a killed load: {args.resource} of {args.contacts} contacts into {engine}, "
        f"120 reads/minute on a clock scaled x{1 / scale:g}, {args.latency:g} s latency plus up to as "
        f"much jitter, max_concurrency {args.concurrency}; an uninterrupted load paid {whole} requests"
    )
    print(
        f"  {'killed at':>9} {'killed try':>11} {'resumed try':>12} {'of whole':>9} {'paid twice':>11} "
        f"{'records kept':>13} {'rows':>7}"
    )
    for share, first, resumed, summary in rows:
        print(
            f"  {share:>9.0%} {first:>11} {resumed:>12} {resumed / whole:>9.0%} {first + resumed - whole:>11} "
            f"{summary['records_from_earlier_tries']:>13} {summary['rows_fetched']:>7}"
        )


def _try(
    conn: dict[str, Any], uri: str, resource: str, kill_when: Callable[[], bool] | None = None
) -> dict[str, Any] | None:
    """One try in a child process with a fresh Airflow home: run to the end and return its
    summary, or SIGKILL it as soon as ``kill_when()`` (None then)."""
    with tempfile.TemporaryDirectory(prefix="clarky-bench-home-") as home:
        env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW_CONN_WAREHOUSE": json.dumps(conn)}
        env["AIRFLOW_CONN_CLARKY_DEFAULT"] = uri
        command = [sys.executable, "-c", TRY, resource]
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as child:
            if kill_when is None:
                out, err = child.communicate(timeout=3600)
                if child.returncode != 0:
                    raise SystemExit(f"a try failed:\n{err[-3000:]}")
                return json.loads(out.strip().splitlines()[-1])
            deadline = time.monotonic() + 3600
            try:
                while not kill_when() and time.monotonic() < deadline:
                    if child.poll() is not None:
                        raise SystemExit("the load ended before it could be killed: use more contacts")
                    time.sleep(0.01)
            finally:
                child.send_signal(signal.SIGKILL)
                child.communicate(timeout=60)
            return None
