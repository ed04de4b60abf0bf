"""How much of one key's budget N task processes use together, and how many 429s they cause.

    python bench/shared_budget.py                              # N=1 and N=3, every mode
    python bench/shared_budget.py --processes 1,3,6 --repeat 3

Every Airflow task instance is its own process. This starts ONE emulator (120 reads per rolling
minute per key, clock scaled) in this process and N separate Python processes that each page
all contacts (or ``--resource``) with ``ClarkyHook().paginate(...)`` on the same key, each with the full
budget on its connection, released together once all have imported Airflow. Modes:

* ``process-local``: ``CLARKY_LIMITER_DIR=""``, each process paces alone, as before the shared
  state (this version's pacing from the server's headers still applies): what processes on
  different hosts get, since only the server's headers are shared between them;
* ``shared file``: one state folder, so all processes on the host share one pacing state.

Figures are taken at the server from the emulator's own admission times. The busy period runs
from the first to the last admitted request. "in window" is the mean number of admitted
requests in the rolling window (one scaled minute) over the busy period after its first minute:
what the server counts against the limit, so it cannot exceed it, unlike a plain rate over a
short period (an empty window lets any client burst the whole limit at once). "budget" is that
divided by the limit; "429 %" is the share of requests the server answered 429. Every request
gets the emulator's ``latency`` plus up to ``latency_jitter`` more (default: as much again), so
answers come back out of order. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

LIMIT = 120


@dataclass
class Run:
    """One measured run, from the server's point of view."""

    processes: int
    mode: str
    admitted: list[float]
    rejected: int
    time_scale: float
    records: int
    fell_back: bool

    @property
    def window(self) -> float:
        return 60 * self.time_scale

    @property
    def scaled_minutes(self) -> float:
        return (self.admitted[-1] - self.admitted[0]) / self.window

    @property
    def window_fill(self) -> float:
        """Mean admissions in the rolling window after the first one: what the server counts."""
        admitted, window = self.admitted, self.window
        first, last = admitted[0] + window, admitted[-1]
        samples = 1000
        grid = [first + (last - first) * i / (samples - 1) for i in range(samples)]
        return sum(bisect_right(admitted, t) - bisect_right(admitted, t - window) for t in grid) / samples

    @property
    def share_429(self) -> float:
        return self.rejected / max(1, len(self.admitted) + self.rejected)


def run_processes(
    emulator: Any, processes: int, limiter_dir: str, page_size: int, resource: str, timeout: float = 300.0
) -> list[dict[str, Any]]:
    """Start N children on the emulator, release them together, return their JSON results."""
    env = dict(os.environ)
    env["CLARKY_BENCH_RESOURCE"] = resource
    env["AIRFLOW_CONN_CLARKY_DEFAULT"] = emulator.connection_uri(page_size=page_size)
    if "AIRFLOW_HOME" not in env:
        env["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="clarky-bench-home-")
    env["CLARKY_LIMITER_DIR"] = limiter_dir  # "" turns the shared state off
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "_child"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:  # each says "ready" once Airflow is imported and the hook is built
            line = child.stdout.readline()  # type: ignore[union-attr]
            if line.strip() != "ready":
                raise RuntimeError(f"child did not start: {line!r} {child.stderr.read()[:2000]}")  # type: ignore[union-attr]
        for child in children:
            child.stdin.write("go\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
        results = []
        for child in children:
            out, err = child.communicate(timeout=timeout)
            if child.returncode != 0:
                raise RuntimeError(f"child failed ({child.returncode}): {err[-2000:]}")
            result = json.loads(out.strip().splitlines()[-1])
            result["fell_back"] = "shared pacing state" in err  # the limiter's one warning
            results.append(result)
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)


def measure(
    processes: int,
    mode: str,
    *,
    contacts: int,
    page_size: int,
    time_scale: float,
    latency: float = 0.0,
    latency_jitter: float = 0.0,
    resource: str = "contacts",
) -> Run:
    from clarky_provider.testing import ClarkyEmulator

    with tempfile.TemporaryDirectory(prefix="clarky-limits-") as folder:
        limiter_dir = "" if mode == "process-local" else folder
        with ClarkyEmulator(
            contacts,
            time_scale=time_scale,
            rate_limit=LIMIT,
            record_admissions=True,
            latency=latency,
            latency_jitter=latency_jitter,
        ) as emu:
            log = emu.stats.admissions
            results = run_processes(emu, processes, limiter_dir, page_size, resource)
    return Run(
        processes=processes,
        mode=mode,
        admitted=sorted(t for t, ok in log if ok),
        rejected=sum(1 for _, ok in log if not ok),
        time_scale=time_scale,
        records=sum(r["records"] for r in results),
        fell_back=any(r["fell_back"] for r in results),
    )


def child() -> None:
    """One task process: build the hook, wait for "go", page every contact, print figures."""
    import logging

    from clarky_provider.hooks.clarky import ClarkyHook

    logging.getLogger("clarky_provider.hooks.clarky").setLevel(logging.ERROR)  # no 429 retry lines
    hook = ClarkyHook()
    hook.limiter  # noqa: B018 - reads the connection before the start
    # warm the client up (session, first connection, lazy imports) before the start: on a scaled
    # clock a cold first request lands several slots late; unauthenticated, the server answers
    # 401 without counting it against the budget
    hook.get_conn().get(hook.settings.base_url + "/contacts", headers={"Authorization": None}, timeout=30)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    records = sum(1 for _ in hook.paginate(os.environ["CLARKY_BENCH_RESOURCE"]))
    figures = {
        "records": records,
        "seconds": time.monotonic() - started,
        "requests": hook.stats.requests,
        "rate_limited": hook.stats.rate_limited,
    }
    print(json.dumps(figures), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="run", choices=["run", "_child"])
    parser.add_argument("--processes", default="1,3", help="comma-separated process counts")
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--page-size", type=int, default=10, help="small pages make more requests")
    parser.add_argument("--time-scale", type=float, default=0.1, help="0.1: a rate-limit minute lasts 6 s")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--resource", default="contacts", help="e.g. contact_activities: one list per contact"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.5,
        help="API seconds per request, scaled like the clock (0.5: 50 ms on the x10 clock)",
    )
    parser.add_argument(
        "--latency-jitter",
        type=float,
        default=None,
        help="extra API seconds per request, uniform in [0, this] (default: the latency; "
        "real answers vary, and a fixed latency hides what out-of-order answers do to pacing)",
    )
    args = parser.parse_args()
    if args.latency_jitter is None:
        args.latency_jitter = args.latency
    if args.command == "_child":
        child()
        return
    print(
        f"\nOne key, {LIMIT} reads per rolling minute, clock scaled x{1 / args.time_scale:g} (a minute lasts "
        f"{60 * args.time_scale:g} s), {args.latency:g} API s latency plus up to {args.latency_jitter:g} of jitter; "
        f"each process reads {args.resource} of {args.contacts} contacts, {args.page_size} per page, "
        "\nwith the full budget on its connection. At the server, per scaled minute: req/min = admitted "
        "/ busy minutes;\nin window = mean admitted requests in the rolling window after the first minute "
        "(budget = that / limit)."
    )
    print(
        f"  {'N':>2} {'mode':<14} {'records':>8} {'requests':>9} {'minutes':>8} {'req/min':>8} "
        f"{'in window':>9} {'budget':>7} {'429s':>5} {'429 %':>6}"
    )
    for processes in (int(n) for n in args.processes.split(",")):
        for mode in ("process-local", "shared file"):
            for _ in range(args.repeat):
                r = measure(
                    processes,
                    mode,
                    contacts=args.contacts,
                    page_size=args.page_size,
                    time_scale=args.time_scale,
                    latency=args.latency,
                    latency_jitter=args.latency_jitter,
                    resource=args.resource,
                )
                per_minute = (len(r.admitted) - 1) / r.scaled_minutes
                print(
                    f"  {r.processes:>2} {r.mode:<14} {r.records:>8} {len(r.admitted) + r.rejected:>9} "
                    f"{r.scaled_minutes:>8.2f} {per_minute:>8.1f} {r.window_fill:>9.1f} "
                    f"{r.window_fill / LIMIT:>7.1%} {r.rejected:>5} {r.share_429:>6.1%}"
                    + (
                        "  (a process fell back to pacing alone)"
                        if r.fell_back and mode != "process-local"
                        else ""
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
