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


DESCRIPTION = """\
Serve a local Clarky API with seeded data until interrupted (Ctrl-C or SIGTERM).
Prints its base URL, its keys and an AIRFLOW_CONN_CLARKY_DEFAULT value first.
Durations are in API seconds: real seconds are API seconds times --time-scale.
"""
EXAMPLES = """\
examples:
  # 10,000 contacts on port 8080, 1% of requests answered 503
  python -m clarky_provider.testing serve --port 8080 --contacts 10000 --fault 503=0.01

  # a free port; a rate-limit minute lasting 3 s; every list request in a fresh order, and
  # the contacts changing every 5 requests of their list (paging against a moving CRM)
  python -m clarky_provider.testing serve --port 0 --time-scale 0.05 --order per_request \\
      --mutate-every 5
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line, apart from ``main`` so that tests can parse the help's examples."""
    parser = argparse.ArgumentParser(prog="python -m clarky_provider.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve a Clarky emulator on loopback until interrupted",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--host",
        metavar="ADDRESS",
        default="127.0.0.1",
        help="loopback address to listen on (default: %(default)s)",
    )
    serve.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        default=8080,
        help="TCP port; 0 picks a free one (default: %(default)s)",
    )
    serve.add_argument(
        "--contacts",
        type=int,
        metavar="N",
        default=1000,
        help="contacts in the dataset, 10 to 1,000,000; the other resources scale with it "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--seed",
        type=int,
        metavar="SEED",
        default=42,
        help="seed of the dataset and of the keys (default: %(default)s)",
    )
    serve.add_argument(
        "--time-scale",
        type=float,
        metavar="FACTOR",
        default=1.0,
        help="real seconds per API second: 0.05 makes a rate-limit minute last 3 s (default: %(default)s)",
    )
    serve.add_argument(
        "--rate-limit",
        type=int,
        metavar="READS",
        default=120,
        help="reads per rolling API minute per key; 0 disables the limit (default: %(default)s)",
    )
    serve.add_argument(
        "--latency",
        type=float,
        metavar="SECONDS",
        default=0.0,
        help="API seconds added to each response (default: %(default)s)",
    )
    serve.add_argument(
        "--latency-jitter",
        type=float,
        metavar="SECONDS",
        default=0.0,
        help="up to this many more API seconds per response, at random (default: %(default)s)",
    )
    serve.add_argument(
        "--fault",
        type=_fault_rate,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help=f"answer this share (0 to 1) of requests with fault KIND, one of {', '.join(FAULT_KINDS)}; "
        "repeatable (default: none)",
    )
    serve.add_argument(
        "--mutate-every",
        type=int,
        default=None,
        metavar="N",
        help="after every N-th contacts list request, insert one contact and update one, like a CRM "
        "changing while a client pages (default: never)",
    )
    serve.add_argument(
        "--order",
        choices=ORDERS,
        default="stable",
        help="list order: stable (one order for every request) or per_request (a fresh random order "
        "per request, for lists whose order the API leaves open) (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

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
