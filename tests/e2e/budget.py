"""How an end-to-end run used the key's budget, on the emulator's clock and projected to the
real one: the figure the real-scheduler and Celery tests report and assert."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from clarky_provider.testing import ClarkyEmulator
from tests.hooks.test_rate_limit import mean_window_fill


@dataclass(frozen=True)
class BudgetUse:
    """How a run used the key's budget, from the emulator's admission times.

    A load's *request phase* runs from its first admitted request to its last (plus one request
    slot). The rest of a run is Airflow's: a task starting (the worker forks, parses the DAG, the
    operator reads the table's watermark), writing to the warehouse, reporting, and the scheduler
    handing the pool slot to the next task. Those seconds do not shrink with the emulator's 20x
    clock, so each one weighs 20 times what it would against Clarky's real minute.
    """

    requesting: float  #: admitted requests over what the budget allows during request phases
    whole_run: float  #: the server's rolling-window fill over the whole busy period
    real_clock: float  #: the same run with request phases at the real clock, Airflow's time as is
    airflow_seconds: float  #: busy time outside every request phase

    @classmethod
    def measure(cls, emulator: ClarkyEmulator, loads: list[tuple[datetime, datetime]]) -> BudgetUse:
        admitted = sorted(t for t, ok in emulator.stats.admissions if ok)
        limit, window = emulator.rate_limit or 1, 60 * emulator.time_scale
        whole = mean_window_fill(admitted, window) / limit if admitted[-1] - admitted[0] > window else 0.0
        to_monotonic = time.monotonic() - time.time()
        phases = []
        for start, end in loads:
            first, last = start.timestamp() + to_monotonic, end.timestamp() + to_monotonic
            inside = [t for t in admitted if first <= t <= last]
            if inside:
                phases.append((inside[0], inside[-1] + window / limit))
        merged = _merged(phases)
        requesting_seconds = sum(end - start for start, end in merged)
        busy = max(e for _, e in loads).timestamp() - min(s for s, _ in loads).timestamp()
        airflow_seconds = max(0.0, busy - requesting_seconds)
        # each request once, however many loads ran while it was admitted
        requests = sum(1 for t in admitted if any(start <= t <= end for start, end in merged))
        real_seconds = requesting_seconds / emulator.time_scale + airflow_seconds
        return cls(
            requesting=requests / (limit * requesting_seconds / window),
            whole_run=whole,
            real_clock=requests / (limit * real_seconds / 60),
            airflow_seconds=airflow_seconds,
        )


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def sync_figures(
    emulator: ClarkyEmulator, loads: list[tuple[datetime, datetime]]
) -> tuple[BudgetUse, dict[str, float]]:
    """How a full sync used the key: its requests, 429s and ``BudgetUse``, as the e2e tests
    print and record them, and the seconds the budget needs for those requests at least."""
    ok, limited = emulator.stats.requests, emulator.stats.rate_limited
    use = BudgetUse.measure(emulator, loads)
    return use, {
        "requests": ok,
        "rate_limited_429": limited,
        "share_429": round(limited / max(ok, 1), 4),
        "budget_use_requesting": round(use.requesting, 3),
        "budget_use_whole_run": round(use.whole_run, 3),
        "budget_use_real_clock": round(use.real_clock, 3),
        "airflow_seconds": round(use.airflow_seconds, 1),
        "budget_floor_seconds": round(ok / (emulator.rate_limit or 1) * 60 * emulator.time_scale, 1),
    }
