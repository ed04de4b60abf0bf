from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clarky_provider.hooks import rate_limit

#: A well-formed key used by every unit test; the secret-hygiene tests look for it everywhere.
TEST_KEY = "ck_live_" + "T3stK3yDoNotLeak0123456789abcd"
assert len(TEST_KEY) == 38


def pytest_report_header() -> list[str]:
    """One line per warehouse engine these tests cannot reach here, with the command that fixes it."""
    from tests.warehouse import MYSQL_UNAVAILABLE, MYSQL_URI, POSTGRES_URI

    lines = []
    if not POSTGRES_URI:
        lines.append("PostgreSQL tests skipped: no server (apt-get install postgresql, then make test)")
    if MYSQL_UNAVAILABLE:
        lines.append(f"MySQL/MariaDB tests skipped: {MYSQL_UNAVAILABLE}")
    elif not MYSQL_URI:
        lines.append(
            "MySQL/MariaDB tests skipped: no server (apt-get install mariadb-server, then make test)"
        )
    return lines


@pytest.fixture(autouse=True)
def _fresh_rate_limiters(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Limiters are shared per key within a process and, through state files, across processes on
    the host: every test gets an empty private state folder (inherited by its subprocesses) so it
    neither inherits another test's pacing nor touches the real one."""
    monkeypatch.setenv(rate_limit.DIR_ENV, str(tmp_path_factory.mktemp("limits")))
    rate_limit._registry.clear()
    yield
    rate_limit._registry.clear()


def set_clarky_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str = "clarky_default", **conn: object) -> None:
    value = {"conn_type": "clarky", "password": TEST_KEY, **conn}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))


class FakeClock:
    """Replaces time.sleep/monotonic/time so waits are recorded instead of slept."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.epoch = 1_800_000_000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.epoch += seconds

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(time, "sleep", clock.sleep)
    monkeypatch.setattr(time, "monotonic", clock.monotonic)
    monkeypatch.setattr(time, "time", clock.time)
    return clock


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request, tmp_path, monkeypatch):
    """The same test against the embedded SQLite warehouse and a real PostgreSQL."""
    from tests.warehouse import open_warehouse

    yield from open_warehouse(request.param, tmp_path, monkeypatch)


@pytest.fixture
def emulator(monkeypatch):
    """A 300-contact emulator without rate limit, with ``clarky_default`` pointing at it."""
    from clarky_provider.testing import ClarkyEmulator

    with ClarkyEmulator(300, rate_limit=None) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CLARKY_DEFAULT", emu.connection_uri())
        yield emu


DAGS = Path(__file__).resolve().parents[1] / "dags_examples"


@pytest.fixture(scope="session")
def airflow_db():
    """dag.test() needs a migrated metadata database (SQLite, in this session's AIRFLOW_HOME)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=300
    )


def run_example_dag(dag_id: str, *, retries: int | None = None, **conf):
    """Run an example DAG in-process with dag.test(); returns its DagRun (not asserted).

    ``retries`` overrides every task's retries (a failing run must not wait out retry delays).
    """
    from clarky_provider.compat import DagBag

    dag = DagBag(dag_folder=str(DAGS)).get_dag(dag_id)
    if retries is not None:
        for task in dag.tasks:
            task.retries = retries
    return dag.test(run_conf=conf or None)
