"""A try killed as a deploy or an eviction kills it: SIGKILL of a child process once the
emulator has served a given number of requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clarky_provider.testing import ClarkyEmulator

REPO = Path(__file__).resolve().parents[1]


def kill_after_requests(emu: ClarkyEmulator, code: str, args: list[str], requests: int) -> int:
    """Run ``python -c code *args`` (from the repository, with this environment), SIGKILL it once
    the emulator has served ``requests`` more requests, and return how many it had served then.
    Fails if the child ends first, or if it has not got that far within two minutes."""
    started = emu.stats.requests
    child = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while emu.stats.requests < started + requests and time.monotonic() < deadline:
            assert child.poll() is None, "the child finished before it could be killed"
            time.sleep(0.005)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    served = emu.stats.requests - started
    assert served >= requests, f"the child was not killed after {requests} requests (only {served})"
    return served


def resumed_try(
    emu: ClarkyEmulator, label: str, uninterrupted: int, run: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run the next try of a killed load (``run``) and check it resumed: it used what the killed
    try kept, read everything it promised, and paid at most 55% of an uninterrupted load's
    requests (killed halfway: half, plus the parents' list and what was in flight)."""
    before = emu.stats.requests
    summary = run()
    paid = emu.stats.requests - before
    print(
        f"\n{label}: uninterrupted {uninterrupted} requests, resumed try {paid} ({paid / uninterrupted:.0%})"
    )
    assert paid <= 0.55 * uninterrupted
    assert summary["records_from_earlier_tries"] > 0
    assert summary["coverage"] == 1.0
    return summary
