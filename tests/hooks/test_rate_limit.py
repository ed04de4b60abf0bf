"""The key's budget is shared by every process on a host (one state file) and paced from the server's headers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from bisect import bisect_right

import pytest

from clarky_provider.testing import ClarkyEmulator

# -- several task processes on one key, against one emulator ----------------------------------

#: One Airflow task process: build the hook (Airflow imported, shared state opened), wait for
#: "go" on stdin so all processes start together, page every contact, print its own figures.
CHILD = """
import json, logging, sys
from clarky_provider.hooks.clarky import ClarkyHook
logging.disable(logging.WARNING)
hook = ClarkyHook()
hook.limiter
print("ready", flush=True)
sys.stdin.readline()
records = sum(1 for _ in hook.paginate("contacts"))
print(json.dumps({"records": records, "requests": hook.stats.requests}), flush=True)
"""


def _record_admissions(emulator: ClarkyEmulator) -> list[tuple[float, bool]]:
    """Log (monotonic time, admitted) of every request at the emulator's budget check."""
    log: list[tuple[float, bool]] = []
    spend = emulator._spend

    def recording(key: str, method: str) -> dict[str, str]:
        try:
            headers = spend(key, method)
        except Exception:
            log.append((time.monotonic(), False))
            raise
        log.append((time.monotonic(), True))
        return headers

    emulator._spend = recording  # type: ignore[method-assign]
    return log


def test_three_processes_on_one_key_share_the_budget(tmp_path):
    """Three task processes, each configured with the key's full budget, start together.

    Before the shared state file each paced itself at the full budget: together they asked
    for three times the budget and bounced off 429s (about 6% of requests here). Sharing one
    pacing state per host keeps them together under the budget while still using it.

    Budget use is measured at the server from its admission times: the mean number of
    admitted requests in the rolling window over the busy period after its first window.
    """
    scale, limit, processes = 0.05, 120, 3
    window = 60 * scale  # 3 s
    env = {**os.environ, "CLARKY_LIMITER_DIR": str(tmp_path / "limits")}
    with ClarkyEmulator(3000, time_scale=scale, rate_limit=limit) as emu:
        log = _record_admissions(emu)
        env["AIRFLOW_CONN_CLARKY_DEFAULT"] = emu.connection_uri(page_size=25)  # 120 pages each
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        try:
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            results = []
            for child in children:
                out, err = child.communicate(timeout=90)
                assert child.returncode == 0, err[-2000:]
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait(timeout=10)

    assert [r["records"] for r in results] == [3000] * processes
    admitted = sorted(t for t, ok in log if ok)
    rejected = sum(1 for _, ok in log if not ok)
    assert len(admitted) == sum(r["requests"] for r in results) - rejected
    share_429 = rejected / len(log)
    budget_use = mean_window_fill(admitted, window) / limit
    print(
        f"\n{len(log)} requests, {rejected} 429s ({share_429:.1%}), busy {admitted[-1] - admitted[0]:.1f} s "
        f"({(admitted[-1] - admitted[0]) / window:.1f} windows), budget use {budget_use:.1%}"
    )
    assert admitted[-1] - admitted[0] > 2.5 * window, "the run is too short to measure budget use"
    assert share_429 < 0.01
    assert budget_use >= 0.90


def mean_window_fill(admitted: list[float], window: float, samples: int = 1000) -> float:
    """Average number of admissions in the rolling window, sampled after the first window.

    This is what the server's budget counts, so it can never exceed the limit (a plain rate
    over a short busy period can: an empty window lets any client burst ``limit`` at once).
    """
    first, last = admitted[0] + window, admitted[-1]
    grid = [first + (last - first) * i / (samples - 1) for i in range(samples)]
    return sum(bisect_right(admitted, t) - bisect_right(admitted, t - window) for t in grid) / samples


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s"]))
