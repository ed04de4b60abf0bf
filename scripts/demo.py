"""The one-command demo: emulator -> example DAG -> embedded SQLite warehouse -> summary.

Run with ``make demo``. With ``CLARKY_API_KEY`` (and optionally ``CLARKY_HOST``) in the
environment it syncs your real Clarky workspace instead of the emulator.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "demo_output"
WAREHOUSE = OUTPUT / "warehouse.db"
DAG_ID = "clarky_full_sync"


def airflow_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags_examples")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW_CONN_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(WAREHOUSE)})
    return env


def run(args: list[str], env: dict[str, str], log_name: str) -> None:
    """Run an Airflow command with its chatter in demo_output/; show the tail if it fails."""
    log_path = OUTPUT / log_name
    print(f"$ {' '.join(args[2:])}    (log: {log_path.relative_to(ROOT)})", flush=True)
    with log_path.open("w") as log:
        result = subprocess.run(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        print(log_path.read_text()[-5000:])
        raise SystemExit(f"{' '.join(args[2:])} failed with exit code {result.returncode}")


def summary() -> None:
    from clarky_provider.resources import RESOURCES

    with sqlite3.connect(WAREHOUSE) as db:
        print(f"\nLanded in {WAREHOUSE.relative_to(ROOT)}:\n")
        print(f"  {'resource':<24}{'rows':>8}")
        for name in sorted(RESOURCES):
            count = db.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
            print(f"  {name:<24}{count:>8}")
        query = (
            "SELECT co.name, co.domain, COUNT(*) AS contacts, COUNT(c.primary_email) AS with_email "
            "FROM contacts c JOIN companies co ON co.id = c.company_id "
            "GROUP BY co.id ORDER BY contacts DESC, co.name LIMIT 5"
        )
        print(f"\nSample query: {query}\n")
        for row in db.execute(query):
            print("  " + " | ".join("" if v is None else str(v) for v in row))


def main() -> int:
    started = time.monotonic()
    OUTPUT.mkdir(exist_ok=True)
    WAREHOUSE.unlink(missing_ok=True)
    env = airflow_env()
    os.environ.update(env)
    run([sys.executable, "-m", "airflow", "db", "migrate"], env, "db_migrate.log")

    real_key = os.environ.get("CLARKY_API_KEY")
    if real_key:
        env["AIRFLOW_CONN_CLARKY_DEFAULT"] = json.dumps(
            {
                "conn_type": "clarky",
                "host": os.environ.get("CLARKY_HOST", "https://clarky.ai"),
                "password": real_key,
            }
        )
        print("Syncing your real Clarky workspace (CLARKY_API_KEY is set).")
        context = nullcontext()
    else:
        from clarky_provider.testing import ClarkyEmulator

        # 1,000 contacts and the documented 120 reads/minute, on a clock 100x faster
        context = ClarkyEmulator(1000, time_scale=0.01)
    with context as emulator:
        if emulator is not None:
            env["AIRFLOW_CONN_CLARKY_DEFAULT"] = emulator.connection_uri()
            print(f"Clarky emulator at {emulator.base_url} (1,000 contacts, rate limit on a 100x clock)")
        run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID], env, "dags_test.log")
    summary()
    print(f"\nDemo finished in {time.monotonic() - started:.0f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
