"""Seeded fault injection for the emulator: the ways a real API misbehaves."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

#: 500 JSON envelope, 502/503 with HTML bodies, a 429 with Retry-After, a connection dropped
#: mid-response, a truncated JSON body, a latency spike, and the key revoked mid-run.
FAULT_KINDS = ("500", "502", "503", "429", "drop", "truncate", "slow", "revoke")


@dataclass
class FaultPlan:
    """Which requests fail and how.

    ``rates`` maps a kind to the probability that any authenticated request suffers it;
    ``scheduled`` maps a request number (1-based, counting authenticated API requests) to a
    kind, for "fail request N" tests. Times are API seconds (scaled by the emulator).
    """

    rates: dict[str, float] = field(default_factory=dict)
    scheduled: dict[int, str] = field(default_factory=dict)
    retry_after: float = 1.0
    slow_seconds: float = 5.0
    seed: int = 7

    def __post_init__(self) -> None:
        unknown = (set(self.rates) | set(self.scheduled.values())) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def fail_request(self, number: int, kind: str) -> None:
        """Make authenticated request ``number`` fail with ``kind``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {FAULT_KINDS}")
        self.scheduled[number] = kind

    def pick(self, number: int) -> str | None:
        """The fault for request ``number``, if any (deterministic for a given request order)."""
        if number in self.scheduled:
            return self.scheduled[number]
        if not self.rates:
            return None
        with self._lock:
            roll = self._rng.random()
        for kind, rate in self.rates.items():
            if roll < rate:
                return kind
            roll -= rate
        return None
