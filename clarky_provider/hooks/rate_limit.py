"""A client-side rate limiter for one Clarky API key, shared by every process on the host that uses it.

Clarky allows a fixed number of reads per rolling 60-second window per key, counted across every
process holding the key. Every Airflow task instance is its own process, so pacing kept in memory
would let each task spend the whole budget and together bounce off 429s. Instead the state of a
key lives in a small ``flock``-protected file in a private per-user folder, shared by every
thread and process on the host: the request starts of the last window, counted in
``BUCKETS`` time buckets (wall-clock seconds, because monotonic clocks are per process), and a
pause-until time.

A request may start at once while the window holds fewer than ``UTILISATION`` of the budget, as
the server's own rolling window allows: ten lookups with the budget free take no pacing at all,
and a long read runs at the budget whatever its latency and jitter do to arrival times (evenly
spaced starts lost about a tenth of the budget whenever responses bunched). A start counts in its
whole bucket, so it leaves the window up to one bucket late: the slack that absorbs arrival
jitter at the server. Starts are first come, first served.

Processes on other hosts are only visible through the server's own headers: when
``X-RateLimit-Remaining`` says the window holds more requests than this host counted, the
difference is counted as spent now; at 0, and on a 429's ``Retry-After``, everyone pauses.

The state file holds times and counts and nothing else; its name is the key's fingerprint and
budget. If it cannot be used (unwritable folder, corrupt file, no ``fcntl``) pacing falls back
to this process alone, with one warning: a load never fails because of it.
"""

from __future__ import annotations

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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; pacing stays per process there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Fraction of the window's budget this host lets start (the rest absorbs arrival jitter).
UTILISATION = 0.99
#: Buckets a window is counted in: a start leaves the window at most one bucket (0.5 s of a
#: 60 s window) after the server forgets it.
BUCKETS = 120
#: Buckets kept: a window back from a start, and up to a window of reservations ahead of now.
_SLOTS = 2 * BUCKETS + 2
#: Folder of the state files; empty means pacing per process. Default:
#: ``<tempdir>/clarky-provider-<uid>/limits``.
DIR_ENV = "CLARKY_LIMITER_DIR"
#: Fresh slots one ``acquire`` takes after pauses that arrived while it slept, at most.
MAX_REQUEUES = 100
#: Stored times further ahead than this are a wall clock stepped back (or garbage), not a plan.
MAX_AHEAD_SECONDS = 3600.0

#: magic + version, paused until, last start (epoch seconds), then (bucket, starts) per slot
_HEADER = struct.Struct("<4sdd")
_SLOT = struct.Struct("<qQ")
_MAGIC = b"CKL2"
_STATE_SIZE = _HEADER.size + _SLOTS * _SLOT.size
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

T = TypeVar("T")

_registry: dict[tuple[str, float, float, str], RateLimiter] = {}
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
    """Lets request starts through while the rolling window holds fewer than ``UTILISATION`` of
    its budget, across threads and processes.

    :param requests_per_minute: the key's budget per minute (the connection's extra).
    :param key_id: a non-secret id of the key (the hook passes a sha256 prefix); with
        ``directory`` it names the state file shared with other processes.
    :param directory: folder of the state files; ``None`` keeps the state in this process.
    :param window_seconds: the server's rolling window (60 s; the emulator's scaled clock
        shrinks it), over which ``requests_per_minute`` is spread.
    """

    def __init__(
        self,
        requests_per_minute: float,
        key_id: str | None = None,
        directory: Path | None = None,
        window_seconds: float = 60.0,
    ) -> None:
        if requests_per_minute <= 0 or window_seconds <= 0:
            raise ValueError("requests_per_minute and window_seconds must be positive")
        self.requests_per_minute = requests_per_minute
        self.window = window_seconds
        #: starts one window may hold
        self.allowed = max(1, math.floor(requests_per_minute * window_seconds / 60.0 * UTILISATION))
        self._bucket_seconds = window_seconds / BUCKETS
        self._lock = threading.Lock()
        # the state, in wall-clock epoch seconds; a copy of the file's while it is shared
        self._paused_until = 0.0
        self._last_start = 0.0
        self._slots: list[tuple[int, int]] = [(-1, 0)] * _SLOTS
        self.waited_seconds = 0.0
        self._directory = directory
        self._path: Path | None = None
        if key_id is not None and directory is not None and fcntl is not None:
            name = f"{_file_id(key_id)}-{requests_per_minute:g}"
            if window_seconds != 60.0:
                name += f"-{window_seconds:g}s"
            self._path = directory / f"{name}.state"
        self._fd: int | None = None
        self._fd_pid = 0

    @classmethod
    def shared(cls, key_id: str, requests_per_minute: float, window_seconds: float = 60.0) -> RateLimiter:
        """One limiter per key (by a non-secret fingerprint) and budget in this process, sharing
        its state with the other processes on this host through the state folder."""
        directory = state_dir()
        registry_key = (key_id, requests_per_minute, window_seconds, str(directory))
        with _registry_lock:
            limiter = _registry.get(registry_key)
            if limiter is None:
                limiter = _registry[registry_key] = cls(
                    requests_per_minute, key_id, directory, window_seconds
                )
            return limiter

    @property
    def state_path(self) -> Path | None:
        """The state file shared with other processes, or ``None`` when pacing is per process."""
        return self._path

    # -- the window ---------------------------------------------------------------------------

    def _bucket(self, moment: float) -> int:
        return math.floor(moment / self._bucket_seconds)

    def _in_window(self, bucket: int) -> int:
        """Starts counted in the window that ends with ``bucket`` (its oldest bucket whole)."""
        return sum(count for held, count in self._slots if bucket - BUCKETS <= held <= bucket)

    def _count(self, bucket: int, starts: int) -> None:
        slot = bucket % _SLOTS
        held, count = self._slots[slot]
        self._slots[slot] = (bucket, count + starts if held == bucket else starts)

    # -- pacing -----------------------------------------------------------------------------

    def acquire(self) -> float:
        """Block until this caller may start a request; returns the seconds waited.

        A pause set while the caller slept (another thread's or process's 429, or Remaining 0)
        holds it too: it takes a fresh slot after the pause instead of starting into it.
        """

        def take_slot(now: float) -> tuple[float, float]:
            start = max(now, self._paused_until, self._last_start)
            for _ in range(_SLOTS):  # a window ahead holds a free bucket, reservations included
                bucket = self._bucket(start)
                if self._in_window(bucket) < self.allowed:
                    break
                start = (bucket + 1) * self._bucket_seconds
            self._count(self._bucket(start), 1)
            self._last_start = start
            return start, start - now

        waited = 0.0
        for _ in range(MAX_REQUEUES):
            with self._lock:
                start, wait = self._update(take_slot)
            if wait <= 0:
                break
            time.sleep(wait)  # outside both locks: the next caller takes the next slot meanwhile
            waited += wait

            def still_clear(now: float, start: float = start) -> bool:
                return self._paused_until <= start  # a pause known when taking the slot ends by then

            with self._lock:
                if self._update(still_clear, write=False):
                    break
        with self._lock:
            self.waited_seconds += waited
        return waited

    def pause(self, seconds: float) -> None:
        """Hold every caller on this host for ``seconds`` (a 429's Retry-After)."""
        self._pause_until(time.time() + max(0.0, seconds))

    def observe(self, remaining: int | None, reset_epoch: float | None, limit: int | None = None) -> None:
        """Follow the server's count of the key's window, which includes other hosts' requests.

        At 0 everyone pauses until the reset. Otherwise, when the server counts more requests in
        the window (``limit - remaining``) than this host did, the difference (other hosts'
        requests) is counted as started now.
        """
        if remaining is None or reset_epoch is None:
            return
        if remaining <= 0:
            self._pause_until(reset_epoch)
            return
        if limit is None:
            return

        def count_others(now: float) -> None:
            bucket = self._bucket(now)
            others = (limit - remaining) - self._in_window(bucket)
            if others > 0:
                self._count(bucket, others)

        with self._lock:
            self._update(count_others)

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
                    os.pwrite(fd, self._pack(), 0)
                except OSError as exc:
                    self._fall_back(exc)
            return result
        finally:
            if fd is not None:
                _unlock(fd)
                if self._path is None:  # fell back while writing
                    self._close()

    def _pack(self) -> bytes:
        slots = b"".join(_SLOT.pack(held, count) for held, count in self._slots)
        return _HEADER.pack(_MAGIC, self._paused_until, self._last_start) + slots

    def _unpack(self, data: bytes) -> None:
        """Load the file's state; times further ahead than ``MAX_AHEAD_SECONDS`` are dropped."""
        if len(data) != _STATE_SIZE:
            raise StateFileError(f"{len(data)} bytes instead of {_STATE_SIZE}")
        magic, paused_until, last_start = _HEADER.unpack_from(data)
        if magic != _MAGIC or not (math.isfinite(paused_until) and math.isfinite(last_start)):
            raise StateFileError("not a state this version wrote")
        horizon = time.time() + MAX_AHEAD_SECONDS
        self._paused_until = paused_until if paused_until <= horizon else 0.0
        self._last_start = last_start if last_start <= horizon else 0.0
        slots = [_SLOT.unpack_from(data, _HEADER.size + i * _SLOT.size) for i in range(_SLOTS)]
        latest = self._bucket(horizon)
        self._slots = [(held, count) if held <= latest else (-1, 0) for held, count in slots]

    def _lock_and_load(self) -> int | None:
        """Take the file lock and read the host's state into memory; ``None`` when per process."""
        if self._path is None or fcntl is None:
            return None
        locked = None
        try:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = fd
            data = os.pread(fd, _STATE_SIZE + 1, 0)
            if data:
                self._unpack(data)
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
