"""``python -m clarky_provider.testing serve``: run the emulator until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from clarky_provider.testing.emulator import ORDERS, ClarkyEmulator
from clarky_provider.testing.faults import FAULT_KINDS, FaultPlan


def _fault_rate(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    if kind not in FAULT_KINDS or not rate:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE with KIND in {', '.join(FAULT_KINDS)}")
    return kind, float(rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clarky_provider.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a Clarky emulator on loopback until interrupted")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--contacts", type=int, default=1000)
    serve.add_argument("--seed", type=int, default=42)
    serve.add_argument("--time-scale", type=float, default=1.0, help="real seconds per API second")
    serve.add_argument("--rate-limit", type=int, default=120, help="reads per minute per key; 0 disables")
    serve.add_argument("--latency", type=float, default=0.0, help="API seconds per response")
    serve.add_argument("--latency-jitter", type=float, default=0.0)
    serve.add_argument("--fault", type=_fault_rate, action="append", default=[], metavar="KIND=RATE")
    serve.add_argument("--mutate-every", type=int, default=None, help="mutate contacts every N list requests")
    serve.add_argument(
        "--order", choices=ORDERS, default="stable", help="per_request: a fresh random list order per request"
    )
    args = parser.parse_args(argv)

    emulator = ClarkyEmulator(
        args.contacts,
        seed=args.seed,
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        rate_limit=args.rate_limit or None,
        latency=args.latency,
        latency_jitter=args.latency_jitter,
        faults=FaultPlan(rates=dict(args.fault)),
        mutate_every=args.mutate_every,
        order=args.order,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with emulator:
        print(f"Clarky emulator serving {args.contacts} contacts at {emulator.base_url}", flush=True)
        print(f"  API base URL: {emulator.api_url}")
        print(f"  read key:     {emulator.read_key}")
        print(f"  write key:    {emulator.write_key}")
        print(f"  revoked key:  {emulator.revoked_key}")
        print(f"  connection:   AIRFLOW_CONN_CLARKY_DEFAULT='{emulator.connection_uri()}'", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
