"""A client-side rate limiter for one Clarky API key, shared by every thread that uses the key.

Clarky allows a fixed number of reads per rolling minute per key. Rather than bouncing off
429s, request starts are spaced evenly at slightly under the budget, and the server's own
``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` headers (the only truth shared with other
processes using the key) and 429 ``Retry-After`` values pause every thread at once.
"""

from __future__ import annotations

import threading
import time

#: Fraction of the budget we pace at, so jitter in arrival times never tips a rolling window over.
UTILISATION = 0.99

_registry: dict[tuple[str, float], RateLimiter] = {}
_registry_lock = threading.Lock()


class RateLimiter:
    """Spaces request starts ``60 / (rpm * UTILISATION)`` seconds apart; thread-safe."""

    def __init__(self, requests_per_minute: float) -> None:
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        self.requests_per_minute = requests_per_minute
        self.interval = 60.0 / (requests_per_minute * UTILISATION)
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._paused_until = 0.0
        self.waited_seconds = 0.0

    @classmethod
    def shared(cls, key_id: str, requests_per_minute: float) -> RateLimiter:
        """One limiter per key (by a non-secret fingerprint) and budget in this process."""
        with _registry_lock:
            limiter = _registry.get((key_id, requests_per_minute))
            if limiter is None:
                limiter = _registry[(key_id, requests_per_minute)] = cls(requests_per_minute)
            return limiter

    def acquire(self) -> float:
        """Block until this caller may start a request; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start, self._paused_until)
            self._next_start = start + self.interval
            wait = start - now
            self.waited_seconds += wait
        if wait > 0:
            time.sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (a 429's Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + max(0.0, seconds))

    def observe(self, remaining: int | None, reset_epoch: float | None) -> None:
        """Pause until the server's reset when it says the budget is spent."""
        if remaining is None or reset_epoch is None or remaining > 0:
            return
        self.pause(reset_epoch - time.time())
