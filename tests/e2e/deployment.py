"""A real Airflow deployment on one machine, for end-to-end tests.

:class:`AirflowDeployment` runs ``airflow db migrate`` against a fresh PostgreSQL database, then
starts ``airflow scheduler``, ``airflow dag-processor`` and ``airflow api-server`` as background
processes (LocalExecutor: every task instance runs in its own process, as on a real worker), so
tests see what ``dag.test()`` hides: task processes racing each other, sharing an API key's
budget, and writing their own log files. With :class:`CeleryWorkers` it runs CeleryExecutor
instead, over a broker such as :class:`RedisServer`, with one ``airflow celery worker`` per
named worker, each with an environment of its own (as on separate hosts).

Everything is local and bounded: services listen on loopback only, every wait has a deadline,
and leaving the ``with`` block stops every process the deployment started (including task
processes, which Airflow puts in process groups of their own) and drops the metadata database
it created. Secrets passed in ``secrets`` (API keys, the JWT secret) are redacted from any text
the harness puts into an exception; the environment itself is never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as secrets_module
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg
from sqlalchemy.engine import make_url

#: Task instance states after which a run's task will not change again by itself.
FINISHED_RUN_STATES = frozenset({"success", "failed"})
SERVICES = ("scheduler", "dag-processor", "api-server")
#: The pool every Clarky task of the example DAGs runs in (the docs tell users to create it).
CLARKY_POOL = "clarky_api"
#: What a Celery worker logs once it consumes tasks.
WORKER_READY = b" ready."


class DeploymentError(RuntimeError):
    """The deployment could not start, or a bounded wait ran out."""


@dataclass(frozen=True)
class TaskInstanceState:
    """One task instance of a run, as the metadata database records it (latest try)."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    start_date: datetime | None
    end_date: datetime | None
    pid: int | None

    @property
    def label(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


@dataclass(frozen=True)
class TryRecord:
    """One earlier try of a task instance (from ``task_instance_history``)."""

    task_id: str
    map_index: int
    try_number: int
    state: str | None
    start_date: datetime | None
    end_date: datetime | None


@dataclass(frozen=True)
class CeleryWorkers:
    """CeleryExecutor with one ``airflow celery worker`` per entry of ``workers``.

    :param broker_url: the Celery broker (``redis://127.0.0.1:PORT/0``, see :class:`RedisServer`).
    :param workers: worker name -> extra environment of that worker alone (and so of every task
        process it runs); two workers with different ``CLARKY_LIMITER_DIR`` are two hosts to the
        provider's rate limiter.
    :param concurrency: task slots of each worker.
    """

    broker_url: str
    workers: Mapping[str, Mapping[str, str]]
    concurrency: int = 4

    def service(self, worker: str) -> str:
        return f"worker-{worker}"


ServiceT = TypeVar("ServiceT", bound="Service")


class Service:
    """A server a test starts and stops: ``with`` starts it, and stops what a failed start left
    as surely as what a finished test used."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: ServiceT) -> ServiceT:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(Service):
    """Debian's ``redis-server`` on a free loopback port, no persistence, stopped by PID.

    :param root: an empty directory of the test's own (the server's working dir and log).
    """

    def __init__(self, root: Path, binary: str, *, startup_timeout: float = 20.0) -> None:
        self.root = Path(root)
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._proc = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--dir", str(self.root), "--logfile", str(self.root / "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self.ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = self.root / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise DeploymentError(f"redis-server did not answer PING on port {self.port}:\n{tail}")
            time.sleep(0.1)

    def ping(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals that were open at one instant."""
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda e: (e[0], e[1]),  # an end sorts before a start at the same instant
    )
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


class AirflowDeployment(Service):
    """
    Scheduler, dag-processor and api-server over a fresh PostgreSQL metadata database.

    :param root: an empty directory of the test's own (``AIRFLOW_HOME`` and the DAGs folder go
        inside it).
    :param postgres_uri: a server URI (``postgresql://user@127.0.0.1:port/db``) on which the
        deployment may create, and later drop, its metadata database.
    :param dags: DAG files (or folders of them) copied into the deployment's DAGs folder.
    :param env: extra environment of every Airflow process (``AIRFLOW_CONN_*`` connections, ...).
    :param secrets: strings redacted from every text the harness raises or returns.
    :param parallelism: task slots of the executor (LocalExecutor's workers; with Celery, the
        scheduler's cap on running tasks).
    :param celery: run CeleryExecutor with these workers instead of LocalExecutor.
    :param pools: pools created once the api-server is up (name -> slots). By default the example
        DAGs' ``clarky_api`` pool with ``parallelism`` slots: on one host the processes of a key
        share its pacing, so the pool need not cap them (docs/rate-limits.md).
    :param triggerer: also run ``airflow triggerer`` (deferred tasks, and the triggers of Asset
        watchers), without its log server (it would listen on every interface).
    """

    def __init__(
        self,
        root: Path,
        postgres_uri: str,
        dags: Iterable[Path],
        env: Mapping[str, str] | None = None,
        *,
        secrets: Iterable[str] = (),
        parallelism: int = 8,
        celery: CeleryWorkers | None = None,
        pools: Mapping[str, int] | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        triggerer: bool = False,
    ) -> None:
        self.root = Path(root)
        self.home = self.root / "airflow-home"
        self.dags_folder = self.root / "dags"
        self.service_log_dir = self.home / "services"
        self._server_uri = postgres_uri
        self._dag_sources = [Path(p) for p in dags]
        self._extra_env = dict(env or {})
        self.parallelism = parallelism
        self.celery = celery
        self.pools = dict(pools) if pools is not None else {CLARKY_POOL: parallelism}
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.triggerer = triggerer
        self.db_name = f"airflow_e2e_{uuid.uuid4().hex[:12]}"
        self.api_port = 0
        self._db_created = False
        self._jwt_secret = secrets_module.token_urlsafe(64)
        self._secrets = [s for s in [*secrets, self._jwt_secret] if s]
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._killed: dict[str, subprocess.Popen[bytes]] = {}  # services a test killed on purpose
        self._known: dict[int, psutil.Process] = {}  # every process seen in our trees, by pid
        self._env: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=False)
        self.dags_folder.mkdir(parents=True, exist_ok=False)
        self.service_log_dir.mkdir()
        for source in self._dag_sources:
            files = sorted(source.glob("*.py")) if source.is_dir() else [source]
            for path in files:
                shutil.copy2(path, self.dags_folder / path.name)
        with psycopg.connect(self._server_uri, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True
        self.api_port = free_port()
        self._env = self._build_env()
        self.airflow("db", "migrate", timeout=240)
        self.timings["migrate"] = time.monotonic() - t0
        for service in SERVICES:
            self._start_service(service)
        if self.triggerer:
            self._start_service("triggerer", ["triggerer", "--skip-serve-logs"])
        if self.celery:
            for worker, worker_env in self.celery.workers.items():
                self._start_service(
                    self.celery.service(worker),
                    ["celery", "worker", "--celery-hostname", f"{worker}@%h", "--skip-serve-logs"],
                    {**self._env, **worker_env},
                )
        self._wait_for_api_server()
        for pool, slots in self.pools.items():
            self.set_pool(pool, slots)
        if self.celery:
            self._wait_for_workers()
        self.timings["services_up"] = time.monotonic() - t0
        exposed = [a for a in self.listening_addresses() if not a[0].startswith("127.") and a[0] != "::1"]
        if exposed:
            raise DeploymentError(f"Airflow listens beyond loopback: {exposed}")

    def stop(self) -> None:
        """Stop every process we started (and their descendants), then drop our database."""
        try:
            self._stop_processes()
        finally:
            if self._db_created:
                with psycopg.connect(self._server_uri, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                self._db_created = False

    # -- environment and processes ------------------------------------------------------------

    @property
    def metadata_dsn(self) -> str:
        """A libpq URI of the metadata database (no password on the test server)."""
        url = make_url(self._server_uri).set(drivername="postgresql", database=self.db_name)
        return url.render_as_string(hide_password=False)

    def _build_env(self) -> dict[str, str]:
        sqlalchemy_uri = (
            make_url(self._server_uri)
            .set(drivername="postgresql+psycopg2", database=self.db_name)
            .render_as_string(hide_password=False)
        )
        # Nothing Airflow-related leaks in from the test session (its AIRFLOW_HOME, connections).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        base = f"http://127.0.0.1:{self.api_port}"
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_uri,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": base,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                # Only the runs a test triggers: unpausing a scheduled DAG starts none by itself.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.celery:
            backend = make_url(self._server_uri).set(drivername="postgresql", database=self.db_name)
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__CELERY__BROKER_URL": self.celery.broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + backend.render_as_string(hide_password=False),
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.celery.concurrency),
                }
            )
        env.update(self._extra_env)
        return env

    def _start_service(
        self, name: str, argv: Iterable[str] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        # The scheduler's and the workers' log servers would listen on every interface at a fixed
        # port (no setting binds them to loopback); the api-server reads the task logs from the
        # local files (every worker shares this machine's AIRFLOW_HOME).
        args = (
            list(argv)
            if argv is not None
            else [name, *(["--skip-serve-logs"] if name == "scheduler" else [])]
        )
        log = (self.service_log_dir / f"{name}.log").open("wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env=dict(env) if env is not None else self._env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole on stop
            )
        finally:
            log.close()
        self._procs[name] = proc
        self._known[proc.pid] = psutil.Process(proc.pid)

    def service_pid(self, name: str) -> int:
        return (self._procs.get(name) or self._killed[name]).pid

    def service_holding(self, pid: int) -> str | None:
        """The running service whose process tree holds ``pid`` (a task process: its worker)."""
        with contextlib.suppress(psutil.Error):
            lineage = {pid} | {p.pid for p in psutil.Process(pid).parents()}
            for name, proc in self._procs.items():
                if proc.pid in lineage:
                    return name
        return None

    def kill_service(self, name: str, timeout: float = 15.0) -> list[int]:
        """SIGKILL a service as a host that dies takes it: its process group and every process
        below it, task processes included (Airflow puts each task process in a group of its own,
        so killing the worker's group alone would leave them running, orphaned). Waits until
        they are gone; returns their PIDs. The deployment then carries on without the service."""
        proc = self._procs.pop(name)
        self._killed[name] = proc
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        for member in tree:
            self._known.setdefault(member.pid, member)
        groups = {proc.pid}  # start_new_session: the service leads its own group
        for member in tree:
            with contextlib.suppress(psutil.Error, OSError):
                groups.add(os.getpgid(member.pid))
        groups.discard(os.getpgrp())
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.kill()
        proc.wait(timeout=timeout)
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        if alive:
            raise DeploymentError(f"{name}: processes alive after SIGKILL: {[p.pid for p in alive]}")
        return [p.pid for p in tree]

    def _track_descendants(self) -> None:
        """Remember every live descendant of our services (task processes have their own groups)."""
        for proc in list(self._known.values()):
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    self._known.setdefault(child.pid, child)

    def listening_addresses(self) -> list[tuple[str, int, str]]:
        """(address, port, process name) of every TCP socket our processes listen on."""
        self._track_descendants()
        found = []
        for proc in self._alive():
            with contextlib.suppress(psutil.Error):
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        found.append((conn.laddr.ip, conn.laddr.port, proc.name()))
        return sorted(set(found))

    def _alive(self) -> list[psutil.Process]:
        alive = []
        for proc in self._known.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        return alive

    def _signal_all(self, sig: signal.Signals) -> None:
        groups: set[int] = set()
        for proc in self._alive():
            with contextlib.suppress(psutil.Error, OSError):
                groups.add(os.getpgid(proc.pid))
        groups.discard(os.getpgrp())  # never our own group (the pytest process)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for proc in self._alive():  # a descendant that left its group still gets the signal
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)

    def _wait_gone(self, timeout: float) -> bool:
        """Wait until every known process has exited; False when some are still alive."""
        deadline = time.monotonic() + timeout
        while True:
            self._track_descendants()
            for proc in [*self._procs.values(), *self._killed.values()]:
                proc.poll()  # reap our own children
            if not self._alive():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def _stop_processes(self) -> None:
        """SIGTERM each service (it stops its own workers), then every process group again (the
        scheduler waits for its executor's workers until signalled twice), then SIGKILL."""
        if not self._procs:
            self._killed.clear()
            return
        self._track_descendants()
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if not self._wait_gone(min(5.0, self.stop_timeout)):
            self._signal_all(signal.SIGTERM)
            if not self._wait_gone(self.stop_timeout):
                self._signal_all(signal.SIGKILL)
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        psutil.wait_procs(self._alive(), timeout=10)
        left = self._alive()
        self._procs.clear()
        self._killed.clear()
        if left:
            raise DeploymentError(f"processes still alive after SIGKILL: {[p.pid for p in left]}")

    # -- commands -----------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def airflow(self, *args: str, timeout: float = 90.0) -> str:
        """Run one ``airflow`` CLI command in the deployment's environment; returns its stdout."""
        try:
            done = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self._env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"`airflow {' '.join(args[:2])}` did not finish in {timeout:g}s") from None
        out = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace")
            raise DeploymentError(
                f"`airflow {' '.join(args[:2])}` exited {done.returncode}:\n"
                + self.redact((out + err)[-4000:])
            )
        return out

    def service_log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.service_log_dir / f"{name}.log"
        return self.redact(path.read_text(errors="replace")[-chars:]) if path.exists() else ""

    def _check_services(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise DeploymentError(
                    f"airflow {name} exited with {proc.returncode}:\n{self.service_log_tail(name)}"
                )

    def _wait_for_workers(self) -> None:
        """Block until every Celery worker has connected to the broker and says it is ready."""
        assert self.celery is not None
        deadline = time.monotonic() + self.startup_timeout
        waiting = [self.celery.service(w) for w in self.celery.workers]
        while waiting:
            self._check_services()
            waiting = [
                name
                for name in waiting
                if WORKER_READY not in (self.service_log_dir / f"{name}.log").read_bytes()
            ]
            if waiting and time.monotonic() > deadline:
                raise DeploymentError(
                    f"Celery workers not ready within {self.startup_timeout:g}s: {waiting}\n"
                    + self.service_log_tail(waiting[0])
                )
            time.sleep(0.5)

    def _wait_for_api_server(self) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + self.startup_timeout
        url = f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health"
        while True:
            self._check_services()
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"api-server not healthy within {self.startup_timeout:g}s:\n"
                    + self.service_log_tail("api-server")
                )
            time.sleep(0.5)

    # -- metadata database ---------------------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.metadata_dsn, autocommit=True) as conn:
            return conn.execute(sql, tuple(params)).fetchall()  # type: ignore[arg-type]

    def tables_containing(self, needle: str) -> list[str]:
        """Metadata tables with a row whose text (or a bytea column's hex form) holds ``needle``."""
        tables = [row[0] for row in self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        hexed = needle.encode().hex()
        return [
            table
            for table in sorted(tables)
            if self.query(
                f'SELECT 1 FROM "{table}" AS t WHERE strpos(t::text, %s) > 0 OR strpos(t::text, %s) > 0 LIMIT 1',
                [needle, hexed],
            )
        ]

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float | None = None) -> None:
        """Block until the dag-processor has serialized every DAG; fail on an import error."""
        wanted = sorted(dag_ids)
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while True:
            self._check_services()
            errors = self.query("SELECT filename, stacktrace FROM import_error")
            if errors:
                raise DeploymentError(
                    "DAG import errors:\n" + "\n".join(f"{f}:\n{self.redact(s)[-2000:]}" for f, s in errors)
                )
            found = {
                row[0]
                for row in self.query("SELECT dag_id FROM serialized_dag WHERE dag_id = ANY(%s)", [wanted])
            }
            if found == set(wanted):
                return
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"DAGs not parsed within {timeout or self.startup_timeout:g}s: "
                    f"missing {sorted(set(wanted) - found)}\n" + self.service_log_tail("dag-processor")
                )
            time.sleep(0.5)

    def api(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One call of the deployment's REST API (``/api/v2``; all-admins auth needs no token)."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/v2{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise DeploymentError(f"{method} /api/v2{path}: HTTP {exc.code} {self.redact(detail)}") from None

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> None:
        """Trigger a run through the REST API (a paused DAG's run stays queued until :meth:`unpause`)."""
        self.api(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})},
        )

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": True})

    def set_pool(self, name: str, slots: int, description: str = "") -> None:
        """Create the pool, or set its slots (``airflow pools set``, without a CLI start-up)."""
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        try:
            self.api("POST", "/pools", body)
        except DeploymentError as exc:
            if "HTTP 409" not in str(exc):
                raise
            self.api("PATCH", f"/pools/{name}", body)

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", [dag_id, run_id])
        return rows[0][0] if rows else None

    def wait_for_runs(
        self,
        dag_id: str,
        run_ids: Iterable[str],
        timeout: float,
        *,
        stop_on_task_states: Iterable[str] = (),
    ) -> dict[str, str | None]:
        """Block until every run is success or failed; returns run_id -> state.

        Returns early (runs still ``running``) as soon as a task instance of one of the runs is in
        one of ``stop_on_task_states`` (e.g. ``up_for_retry``: no need to sit out a retry delay
        when the verdict is already known); see :meth:`fail_unfinished_runs` to end them.
        """
        run_ids = list(run_ids)
        stop_on = set(stop_on_task_states)
        deadline = time.monotonic() + timeout
        while True:
            self._check_services()
            states = {run_id: self.run_state(dag_id, run_id) for run_id in run_ids}
            if all(state in FINISHED_RUN_STATES for state in states.values()):
                return states
            if stop_on and self.query(
                "SELECT 1 FROM task_instance WHERE dag_id = %s AND run_id = ANY(%s) AND state = ANY(%s) LIMIT 1",
                [dag_id, run_ids, sorted(stop_on)],
            ):
                return states
            if time.monotonic() > deadline:
                tis = {
                    r: [f"{t.label}={t.state}/try{t.try_number}" for t in self.task_instances(dag_id, r)]
                    for r in run_ids
                }
                raise DeploymentError(
                    f"{dag_id} runs not finished within {timeout:g}s: {states}; task instances: {tis}\n"
                    "scheduler log tail:\n" + self.service_log_tail("scheduler")
                )
            time.sleep(0.5)

    def fail_unfinished_runs(self, dag_id: str, run_ids: Iterable[str], timeout: float = 30.0) -> None:
        """Mark runs that have not finished as failed (the scheduler then stops their tasks)."""
        unfinished = [r for r in run_ids if self.run_state(dag_id, r) not in FINISHED_RUN_STATES]
        for run_id in unfinished:
            self.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})
        deadline = time.monotonic() + timeout
        while unfinished and time.monotonic() < deadline:
            running = self.query(
                "SELECT 1 FROM task_instance WHERE dag_id = %s AND run_id = ANY(%s)"
                " AND state IN ('running', 'queued', 'scheduled', 'up_for_retry', 'restarting') LIMIT 1",
                [dag_id, unfinished],
            )
            if not running:
                return
            time.sleep(0.5)

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstanceState]:
        rows = self.query(
            "SELECT task_id, map_index, state, try_number, start_date, end_date, pid FROM task_instance"
            " WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index",
            [dag_id, run_id],
        )
        return [TaskInstanceState(*row) for row in rows]

    def earlier_tries(self, dag_id: str, run_id: str) -> list[TryRecord]:
        """Tries that were superseded by a retry (empty when every task succeeded at once)."""
        rows = self.query(
            "SELECT task_id, map_index, try_number, state, start_date, end_date FROM task_instance_history"
            " WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index, try_number",
            [dag_id, run_id],
        )
        return [TryRecord(*row) for row in rows]

    # -- files ----------------------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def task_log_files(self, dag_id: str, run_id: str) -> list[Path]:
        base = self.logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}"
        return sorted(base.rglob("*.log")) if base.exists() else []

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
        """The log of one try (structured JSON lines in Airflow 3), or '' when it has none."""
        path = self.logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            path /= f"map_index={map_index}"
        path /= f"attempt={try_number}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def files_under_home(self) -> Iterator[Path]:
        return (p for p in self.home.rglob("*") if p.is_file())

    def files_containing(self, needle: str) -> list[Path]:
        data = needle.encode()
        return [p for p in self.files_under_home() if data in p.read_bytes()]


def log_messages(log_text: str, levels: Iterable[str] = ("warning", "error", "critical")) -> list[str]:
    """Human-readable lines of a structured task log, filtered by level."""
    wanted = {level.lower() for level in levels}
    out = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if str(record.get("level", "")).lower() in wanted:
            text = str(record.get("event", ""))
            if record.get("error_detail"):
                detail = record["error_detail"]
                if isinstance(detail, list) and detail:
                    last = detail[-1]
                    text += f" [{last.get('exc_type')}: {last.get('exc_value')}]"
            out.append(f"{record.get('level')}: {text}")
    return out
