"""What every figure of ``run.py`` and ``warehouses.py`` is measured and printed with: the
emulator in a process of its own, each measured load in a fresh child process (``run.py
_child``) on a fresh database, and the table rows of their figures.

Both benchmarks import this, neither the other, so a scenario can change without the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from targets import fresh_target

#: The script whose ``_child`` command runs one measured load and prints its figures as JSON.
CHILD_SCRIPT = str(Path(__file__).with_name("run.py"))
#: The columns of ``row``.
HEADER = (
    f"  {'run':<26} {'target':<9} {'records':>9} {'seconds':>8} {'records/s':>10} "
    f"{'requests':>9} {'req/min':>9} {'429s':>5} {'peak MB':>9}"
)


@contextmanager
def emulator_process(contacts: int, *extra: str, core: int | None = None) -> Iterator[tuple[str, str]]:
    """Start ``python -m clarky_provider.testing serve`` and yield (base_url, read_key)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "clarky_provider.testing", "serve", "--port", str(port)]
    command += ["--contacts", str(contacts), "--rate-limit", "0", *extra]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        if not lines[2].strip():
            raise RuntimeError(f"emulator did not start: {lines}")
        yield f"http://127.0.0.1:{port}", lines[2].split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=30)


def default_engine() -> str:
    """PostgreSQL when the test server is there, else SQLite."""
    return "postgres" if os.environ.get("CLARKY_TEST_POSTGRES_URI") else "sqlite"


class ChildFailed(SystemExit):
    """A measured child process failed (uncaught: the benchmark exits with its stderr)."""


def run_child(
    kind: str,
    base_url: str,
    key: str,
    resource: str = "contacts",
    *,
    engine: str | None = None,
    **clarky_extra: float,
) -> dict[str, float]:
    """One measured load of ``kind`` into a fresh database of ``engine`` (default: ``default_engine()``),
    in a child process; the database and the child's Airflow home are removed afterwards."""
    engine = engine or default_engine()
    with fresh_target(engine) as target, tempfile.TemporaryDirectory(prefix="clarky-bench-home-") as home:
        env = {**os.environ, **target.env, "AIRFLOW_HOME": home}
        env["AIRFLOW_CONN_WAREHOUSE"] = json.dumps(target.conn)
        env["AIRFLOW_CONN_CLARKY_DEFAULT"] = json.dumps(
            {
                "conn_type": "clarky",
                "host": base_url,
                "password": key,
                "extra": {"requests_per_minute": 1_000_000, **clarky_extra},
            }
        )
        command = [sys.executable, CHILD_SCRIPT, "_child", kind, "--engine", engine, "--url", target.url]
        command += ["--base-url", base_url, "--key", key, "--resource", resource]
        finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise ChildFailed(f"{kind} run on {engine} failed:\n{finished.stderr[-3000:]}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    result["target"] = engine
    return result


def median_run(results: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median wall time (an actual run, so its figures belong together)."""
    return sorted(results, key=lambda r: r["seconds"])[(len(results) - 1) // 2]


def row(name: str, result: dict[str, float]) -> str:
    """One run's figures under ``HEADER``."""
    rate = result["records"] / result["seconds"]
    per_minute = result["requests"] / result["seconds"] * 60
    return (
        f"  {name:<26} {result['target']:<9} {result['records']:>9} {result['seconds']:>8.2f} {rate:>10.0f} "
        f"{result['requests']:>9} {per_minute:>9.0f} {result['429s']:>5} {result['peak_rss_mb']:>9.0f}"
    )
