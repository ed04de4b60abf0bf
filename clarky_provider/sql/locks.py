"""Waiting for a lock another load holds (many short tries, never one blocking statement), and
locks shared by the loads of one process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Longest pause between two tries at a lock another load holds.
LOCK_POLL_SECONDS = 1.0
#: How often a waiting load says so in the task log.
LOCK_LOG_SECONDS = 60.0


def wait_until(attempt: Callable[[], bool], what: str) -> float:
    """Call ``attempt`` until it returns True (it got its lock), pausing between tries; returns
    the seconds waited. There is no limit: the task's ``execution_timeout`` is the limit.

    The wait is many short tries rather than one statement that blocks, because the holder may
    keep the lock for its whole load (minutes to hours of streaming): a blocking statement would
    end with the database's ``statement_timeout`` or ``lock_timeout`` and fail the load, and a
    task that Airflow stops could not notice until it returned.
    """
    started = time.monotonic()
    report = started
    pause = 0.05
    while not attempt():
        now = time.monotonic()
        if now >= report:
            log.info("Waiting for %s, which another transaction holds (%.0f s so far)", what, now - started)
            report = now + LOCK_LOG_SECONDS
        time.sleep(pause)
        pause = min(pause * 2, LOCK_POLL_SECONDS)
    waited = time.monotonic() - started
    if waited >= 1:
        log.info("Got %s after %.1f s", what, waited)
    return waited


class ProcessLocks:
    """One lock per name (a database file), shared by every load of this process: state that
    belongs to the process, kept in one named place rather than on a class."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def of(self, name: str) -> threading.Lock:
        """The lock of ``name``, made on first use."""
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())
