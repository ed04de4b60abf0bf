"""A client-side rate limiter for one Clarky API key, shared by every process on the host that uses it.

Clarky allows a fixed number of reads per rolling minute per key, counted across every process
holding the key. Every Airflow task instance is its own process, so pacing kept in memory would
let each task spend the whole budget and together bounce off 429s. Instead the pacing state of
a key (the next allowed request start and a pause-until time, in wall-clock seconds because
monotonic clocks are per process) lives in a small ``flock``-protected file in a private per-user
folder, shared by every thread and process on the host. Request starts are spaced evenly at
slightly under the budget.

Processes on other hosts are only visible through the server's own headers: when
``X-RateLimit-Remaining`` gets low the spacing stretches so the remaining requests spread
until ``X-RateLimit-Reset``; at 0, and on a 429's ``Retry-After``, everyone pauses.

Neither holds back a host that is alone on the key, however its answers are delayed. Reset is
when the oldest request the server counts frees, so it is never more than about one interval
away while evenly spaced starts keep the window full, and the stretch
``(Reset - now) / (Remaining + 1)`` stays under the interval even when bunched arrivals show
``Remaining`` at 0 or 1; the pause at 0 ends by about the next slot (a whole-second Reset
can hold it up to a second longer). An answer that comes back after
later ones (latency jitter) carries an earlier Reset and a count since overtaken, so it can only
ask for less. The stretch and the pause bind only when the server counts requests beyond our
own spacing, i.e. other hosts' use, which is what they are for. (A client-side rolling window
was tried instead and used less of the budget: a request started earlier can reach the server
later than one started after it.)

The state file holds two times and nothing else; its name is the key's fingerprint and budget.
If it cannot be used (unwritable folder, corrupt file, no ``fcntl``) pacing falls back to this
process alone, with one warning: a load never fails because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; pacing stays per process there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Fraction of the budget we pace at, so jitter in arrival times never tips a rolling window over.
UTILISATION = 0.99
#: Below this fraction of ``X-RateLimit-Limit`` left, spacing stretches to last until the reset.
LOW_REMAINING = 0.10
#: Folder of the state files; empty means pacing per process (the old behaviour). Default:
#: ``<tempdir>/clarky-provider-<uid>/limits``.
DIR_ENV = "CLARKY_LIMITER_DIR"
#: Fresh slots one ``acquire`` takes after pauses that arrived while it slept, at most.
MAX_REQUEUES = 100
#: Stored times further ahead than this are a wall clock stepped back (or garbage), not a plan.
MAX_AHEAD_SECONDS = 3600.0

#: magic + version, next allowed start, paused until (epoch seconds)
_STATE = struct.Struct("<4sdd")
_MAGIC = b"CKL1"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

T = TypeVar("T")

_registry: dict[tuple[str, float, str], RateLimiter] = {}
_registry_lock = threading.Lock()


class StateFileError(Exception):
    """The shared state file holds something this version did not write."""


def default_state_dir() -> Path:
    """Per user, so another account on the host can neither read nor steer our pacing."""
    return Path(tempfile.gettempdir()) / f"clarky-provider-{os.getuid()}" / "limits"


def state_dir() -> Path | None:
    """Where the per-key state files live (``CLARKY_LIMITER_DIR``); ``None``: per process only."""
    if fcntl is None:  # pragma: no cover - no flock (Windows)
        return None
    override = os.environ.get(DIR_ENV)
    if override is not None:
        return Path(override) if override.strip() else None
    return default_state_dir()


class RateLimiter:
    """Spaces request starts ``60 / (rpm * UTILISATION)`` seconds apart across threads and processes.

    :param key_id: a non-secret id of the key (the hook passes a sha256 prefix); with
        ``directory`` it names the state file shared with other processes.
    :param directory: folder of the state files; ``None`` keeps pacing in this process.
    """

    def __init__(
        self, requests_per_minute: float, key_id: str | None = None, directory: Path | None = None
    ) -> None:
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        self.requests_per_minute = requests_per_minute
        self.interval = 60.0 / (requests_per_minute * UTILISATION)
        self._lock = threading.Lock()
        # the state, in wall-clock epoch seconds; a copy of the file's while it is shared
        self._next_start = 0.0
        self._paused_until = 0.0
        self.waited_seconds = 0.0
        self._directory = directory
        self._path: Path | None = None
        if key_id is not None and directory is not None and fcntl is not None:
            self._path = directory / f"{_file_id(key_id)}-{requests_per_minute:g}.state"
        self._fd: int | None = None
        self._fd_pid = 0

    @classmethod
    def shared(cls, key_id: str, requests_per_minute: float) -> RateLimiter:
        """One limiter per key (by a non-secret fingerprint) and budget in this process, sharing
        its state with the other processes on this host through the state folder."""
        directory = state_dir()
        registry_key = (key_id, requests_per_minute, str(directory))
        with _registry_lock:
            limiter = _registry.get(registry_key)
            if limiter is None:
                limiter = _registry[registry_key] = cls(requests_per_minute, key_id, directory)
            return limiter

    @property
    def state_path(self) -> Path | None:
        """The state file shared with other processes, or ``None`` when pacing is per process."""
        return self._path

    # -- pacing -----------------------------------------------------------------------------

    def acquire(self) -> float:
        """Block until this caller may start a request; returns the seconds waited.

        A pause set while the caller slept (another thread's or process's 429, or Remaining 0)
        holds it too: it takes a fresh slot after the pause instead of starting into it.
        """
        waited = 0.0
        for wait in self._slot_waits():
            time.sleep(wait)
            waited += wait
        return waited

    async def acquire_async(self) -> float:
        """:meth:`acquire` for an event loop (the triggerer's): the same slots, the same state
        file, but the waits are ``asyncio.sleep``, so other coroutines run meanwhile.

        The locks are taken only to read and write the 20-byte state, never across a wait, so
        holding them from the loop blocks it no longer than a synchronous caller holds them.
        """
        waited = 0.0
        for wait in self._slot_waits():
            await asyncio.sleep(wait)
            waited += wait
        return waited

    def _slot_waits(self) -> Iterator[float]:
        """The waits before this caller may start, for the caller to sleep in its own way: a slot
        is taken, and after each wait the slot is checked against pauses set meanwhile (a fresh
        slot if one holds it). The one pacing logic behind both :meth:`acquire` methods."""

        def take_slot(now: float) -> tuple[float, float]:
            start = max(now, self._next_start, self._paused_until)
            self._next_start = start + self.interval
            return start, start - now

        waited = 0.0
        try:
            for _ in range(MAX_REQUEUES):
                with self._lock:
                    start, wait = self._update(take_slot)
                if wait <= 0:
                    return
                yield wait  # outside both locks: the next caller takes the next slot meanwhile
                waited += wait

                def still_clear(now: float, start: float = start) -> bool:
                    return self._paused_until <= start  # a pause known when taking the slot ends by then

                with self._lock:
                    if self._update(still_clear, write=False):
                        return
        finally:
            with self._lock:
                self.waited_seconds += waited

    def pause(self, seconds: float) -> None:
        """Hold every caller on this host for ``seconds`` (a 429's Retry-After)."""
        self._pause_until(time.time() + max(0.0, seconds))

    def observe(self, remaining: int | None, reset_epoch: float | None, limit: int | None = None) -> None:
        """Follow the server's count of the key's budget, which includes other hosts' requests.

        At 0 everyone pauses until the reset. Below ``LOW_REMAINING`` of ``limit`` the next start
        moves to no earlier than ``now + (reset - now) / (remaining + 1)``, so what is left
        lasts until the reset. ``requests_per_minute`` stays the ceiling either way.
        """
        if remaining is None or reset_epoch is None:
            return
        if remaining <= 0:
            self._pause_until(reset_epoch)
            return
        if limit is None or remaining >= LOW_REMAINING * limit:
            return
        # Reset comes in whole seconds, so the moment it names can be up to a second early or
        # late; spreading up to the earliest reading keeps rounding alone from slowing a client
        # that is within the budget (the pause at 0 and Retry-After remain the hard stops).
        earliest = reset_epoch - 1 if float(reset_epoch).is_integer() else reset_epoch
        if (earliest - time.time()) / (remaining + 1) <= 0:
            return

        def stretch(now: float) -> None:
            gap = (earliest - now) / (remaining + 1)
            if gap > 0:
                self._next_start = max(self._next_start, now + min(gap, MAX_AHEAD_SECONDS))

        with self._lock:
            self._update(stretch)

    def observe_headers(self, headers: Mapping[str, str]) -> int | None:
        """:meth:`observe` an answer's ``X-RateLimit-*`` headers (any case-insensitive mapping:
        requests' or httpx's); returns ``Remaining``, or ``None`` when the answer had none."""
        try:
            remaining = int(headers["X-RateLimit-Remaining"])
            reset = float(headers["X-RateLimit-Reset"])
        except (KeyError, ValueError):
            return None
        try:
            limit: int | None = int(headers["X-RateLimit-Limit"])
        except (KeyError, ValueError):
            limit = None  # without it, "low" cannot be told from "plenty": only 0 pauses
        self.observe(remaining, reset, limit)
        return remaining

    def _pause_until(self, until: float) -> None:
        def hold(now: float) -> None:
            self._paused_until = max(self._paused_until, min(until, now + MAX_AHEAD_SECONDS))

        with self._lock:
            self._update(hold)

    # -- the shared state -------------------------------------------------------------------

    def _update(self, change: Callable[[float], T], *, write: bool = True) -> T:
        """Apply ``change`` to the state under the host-wide file lock (caller holds ``_lock``)."""
        fd = self._lock_and_load()
        try:
            result = change(time.time())
            if fd is not None and write:
                try:
                    os.pwrite(fd, _STATE.pack(_MAGIC, self._next_start, self._paused_until), 0)
                except OSError as exc:
                    self._fall_back(exc)
            return result
        finally:
            if fd is not None:
                _unlock(fd)
                if self._path is None:  # fell back while writing
                    self._close()

    def _lock_and_load(self) -> int | None:
        """Take the file lock and read the host's state into memory; ``None`` when per process."""
        if self._path is None or fcntl is None:
            return None
        locked = None
        try:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = fd
            data = os.pread(fd, _STATE.size + 1, 0)
            if data:
                if len(data) != _STATE.size:
                    raise StateFileError(f"{len(data)} bytes instead of {_STATE.size}")
                magic, next_start, paused_until = _STATE.unpack(data)
                if magic != _MAGIC or not (math.isfinite(next_start) and math.isfinite(paused_until)):
                    raise StateFileError("not a state this version wrote")
                horizon = time.time() + MAX_AHEAD_SECONDS
                self._next_start = next_start if next_start <= horizon else 0.0
                self._paused_until = paused_until if paused_until <= horizon else 0.0
            return fd
        except (OSError, StateFileError) as exc:
            if locked is not None:
                _unlock(locked)
            self._fall_back(exc)
            self._close()
            return None

    def _open(self) -> int:
        """The state file's descriptor, opened once per process (a forked child reopens: a flock
        on an inherited descriptor would be the parent's lock, not a second one)."""
        if self._fd is not None and self._fd_pid == os.getpid():
            return self._fd
        assert self._path is not None and self._directory is not None
        self._fd = None
        _private_dir(self._directory)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            os.close(fd)
            raise OSError(f"{self._path} is not a regular file owned by this user")
        self._fd, self._fd_pid = fd, os.getpid()
        return fd

    def _fall_back(self, exc: BaseException) -> None:
        """Stop sharing (once, with one warning); the in-memory state carries on per process."""
        log.warning(
            "Clarky rate limiter: cannot use the shared pacing state %s (%s); pacing this process "
            "alone, so other processes on this host using the key are not accounted for.",
            self._path,
            exc,
        )
        self._path = None

    def _close(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None


def _unlock(fd: int) -> None:
    assert fcntl is not None
    with contextlib.suppress(OSError):  # closing the descriptor releases it anyway
        fcntl.flock(fd, fcntl.LOCK_UN)


def _file_id(key_id: str) -> str:
    """The key id as a file name part; anything but a plain id is hashed, never written out."""
    return key_id if _SAFE_ID.fullmatch(key_id) else hashlib.sha256(key_id.encode()).hexdigest()[:12]


def _private_dir(directory: Path) -> None:
    """Create the state folder (0700) and refuse one another user owns or can write to.

    The default lives in the shared temp dir, so its per-user parent is checked as well: whoever
    controls a folder could swap the state file for a link.
    """
    if directory == default_state_dir():
        folders = [directory.parent, directory]
    else:
        directory.parent.mkdir(parents=True, exist_ok=True)
        folders = [directory]
    for folder in folders:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise OSError(f"{folder} is not a private folder of this user")
