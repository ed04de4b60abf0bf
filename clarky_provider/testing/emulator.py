"""ClarkyEmulator: a local, faithful stand-in for the Clarky REST API.

An in-process threaded HTTP server on 127.0.0.1 that serves every read endpoint of the
catalog with the documented pagination, filters, error envelope, scopes and per-key rolling
rate limits, plus seeded faults and live mutation. ``time_scale`` shrinks every API duration
(the rate window, latency, Retry-After) so rate-limit tests run in seconds; headers then carry
real seconds, which is what a client must wait.
"""

from __future__ import annotations

import collections
import hashlib
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from clarky_provider.normalize import parse_timestamp
from clarky_provider.resources import (
    API_PREFIX,
    MAX_PAGE_SIZE,
    RATE_WINDOW_SECONDS,
    READS_PER_MINUTE,
    RESOURCES,
    WRITES_PER_MINUTE,
    FilterKind,
    Resource,
)
from clarky_provider.testing.faults import FaultPlan
from clarky_provider.testing.store import ClarkyStore, DatasetSize, epoch_of, hidden_by_default

DEFAULT_PAGE_SIZE = 25
ORDERS = ("stable", "per_request")
WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE", "PUT"})
HTML_ERROR = b"<html><head><title>%d</title></head><body><h1>%d %s</h1><p>nginx</p></body></html>"


def make_key(label: str, seed: int) -> str:
    """A well-formed key (38 characters) that is stable for a seed."""
    return "ck_live_" + hashlib.sha256(f"{label}-{seed}".encode()).hexdigest()[:30]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}


@dataclass
class EmulatorStats:
    """What the emulator saw, for assertions: requests per route and status, 429s, peak concurrency."""

    by_route: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    rate_limited: int = 0
    faults_injected: collections.Counter[str] = field(default_factory=collections.Counter)
    peak_concurrency: int = 0
    current: int = 0
    requests: int = 0
    #: (monotonic time, admitted) of every request at the budget check, when the emulator was
    #: made with ``record_admissions=True``: what benchmarks plot per rate window.
    admissions: list[tuple[float, bool]] = field(default_factory=list)

    def count(self, route: str, status: int | None = None) -> int:
        return sum(n for (r, s), n in self.by_route.items() if r == route and (status is None or s == status))


class _Budget:
    """A rolling-window request budget of one key and method class."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.sent: collections.deque[float] = collections.deque()

    def take(self, now: float) -> tuple[bool, int, float]:
        """Try to spend one request; returns (allowed, remaining, seconds until a slot frees)."""
        while self.sent and self.sent[0] <= now - self.window:
            self.sent.popleft()
        if len(self.sent) >= self.limit:
            return False, 0, self.sent[0] + self.window - now
        self.sent.append(now)
        return True, self.limit - len(self.sent), self.sent[0] + self.window - now


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    template: str
    resource: Resource
    kind: str  # "list", "item" or "by_email"


def _build_routes() -> list[_Route]:
    routes = [
        _Route(re.compile(r"^/contacts/by-email$"), "/contacts/by-email", RESOURCES["contacts"], "by_email")
    ]
    for res in RESOURCES.values():
        for template, kind in ((res.path, "list"), (res.item_path, "item")):
            if template:
                regex = "^" + re.sub(r"\{[^}]+\}", "([^/]+)", template) + "$"
                routes.append(_Route(re.compile(regex), template, res, kind))
    return routes


ROUTES = _build_routes()


class ClarkyEmulator:
    """
    A local Clarky API. Use as a context manager; ``base_url`` is what a ``clarky`` connection's
    host takes (the client appends ``/api/v1``).

    :param contacts: dataset size (10 to 1,000,000); other resources scale with it.
    :param time_scale: real seconds per API second (0.05 makes a rate-limit minute last 3 s).
    :param rate_limit: reads per rolling minute per key (``None`` disables rate limiting).
    :param latency: API seconds added to each response, plus up to ``latency_jitter``.
    :param faults: a :class:`FaultPlan` of injected failures.
    :param mutate_every: after every N-th contacts list request, apply ``mutation``
        (inserts, updates, deletes) to simulate a CRM that changes while a client pages.
    :param order: ``"stable"`` serves every list in one order; ``"per_request"`` serves each
        request of a list whose order the docs leave open in a fresh random order (nothing in
        the docs forbids it), so page-number paging skips and repeats records. Lists with a
        documented order (activities, stages, messages) keep it.
    :param record_admissions: log every request's time and whether the budget admitted it in
        ``stats.admissions`` (for budget plots; grows with every request).
    """

    def __init__(
        self,
        contacts: int = 200,
        *,
        seed: int = 42,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        rate_limit: int | None = READS_PER_MINUTE,
        write_rate_limit: int = WRITES_PER_MINUTE,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        faults: FaultPlan | None = None,
        mutate_every: int | None = None,
        mutation: tuple[int, int, int] = (1, 1, 0),
        size: DatasetSize | None = None,
        order: str = "stable",
        record_admissions: bool = False,
    ) -> None:
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError("the emulator only listens on loopback addresses")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.store = ClarkyStore(size or DatasetSize(contacts=contacts), seed=seed)
        self.read_key = make_key("read", seed)
        self.write_key = make_key("write", seed)
        self.revoked_key = make_key("revoked", seed)
        self.scopes: dict[str, frozenset[str]] = {
            self.read_key: frozenset({"read"}),
            self.write_key: frozenset({"read", "write"}),
        }
        self.revoked: set[str] = {self.revoked_key}
        self.time_scale = time_scale
        self.rate_limit = rate_limit
        self.write_rate_limit = write_rate_limit
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.faults = faults or FaultPlan()
        self.mutate_every = mutate_every
        self.mutation = mutation
        self.order = order
        self.record_admissions = record_admissions
        self._order_rng = random.Random(seed + 2)
        self.stats = EmulatorStats()
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._lock = threading.Lock()
        self._jitter_rng = random.Random(seed + 1)
        self._list_requests = 0
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    def start(self) -> ClarkyEmulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="clarky-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ClarkyEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def requests_per_minute(self) -> int:
        """The read budget per real minute that a client should pace at (huge when unlimited)."""
        if self.rate_limit is None:
            return 1_000_000
        return max(1, int(self.rate_limit / self.time_scale))

    def connection_uri(self, key: str | None = None, **extra: Any) -> str:
        """An ``AIRFLOW_CONN_...`` JSON value pointing a ``clarky`` connection at this emulator.

        The connection's ``requests_per_minute`` matches the emulator's (scaled) budget.
        """
        import json

        extra = {"requests_per_minute": self.requests_per_minute, **extra}
        return json.dumps(
            {"conn_type": "clarky", "host": self.base_url, "password": key or self.read_key, "extra": extra}
        )

    # -- ground truth and control ------------------------------------------------------------

    @property
    def dataset(self) -> dict[str, list[dict[str, Any]]]:
        """Every record a filter-less sync returns, per resource, exactly as the API serves it."""
        with self.store.lock:
            return {name: self.store.records(name) for name in RESOURCES}

    def mutate(self, inserts: int = 0, updates: int = 0, deletes: int = 0) -> dict[str, list[str]]:
        return self.store.mutate(inserts=inserts, updates=updates, deletes=deletes)

    def log_activities(self, contacts: int) -> list[str]:
        """New activities (now) on ``contacts`` random contacts; see :meth:`ClarkyStore.log_activities`."""
        return self.store.log_activities(contacts)

    def log_messages(self, conversations: int) -> list[str]:
        """A new message (now) in ``conversations`` random conversations; see :meth:`ClarkyStore.log_messages`."""
        return self.store.log_messages(conversations)

    def revoke(self, key: str) -> None:
        self.revoked.add(key)

    def scaled(self, api_seconds: float) -> float:
        return api_seconds * self.time_scale

    # -- request handling (called from handler threads) -------------------------------------

    def _authenticate(self, header: str | None) -> str:
        if not header or not header.startswith("Bearer "):
            raise ApiError(401, "unauthorized", "Missing or invalid API key")
        key = header[len("Bearer ") :].strip()
        if key in self.revoked or key not in self.scopes:
            raise ApiError(401, "unauthorized", "Missing or invalid API key")
        return key

    def _spend(self, key: str, method: str) -> dict[str, str]:
        write = method in WRITE_METHODS
        limit = self.write_rate_limit if write else self.rate_limit
        if limit is None:
            return {}
        window = self.scaled(RATE_WINDOW_SECONDS)
        with self._lock:
            budget = self._budgets.get((key, "write" if write else "read"))
            if budget is None:
                budget = self._budgets[(key, "write" if write else "read")] = _Budget(limit, window)
            now = time.monotonic()
            allowed, remaining, until_free = budget.take(now)
            if self.record_admissions:
                self.stats.admissions.append((now, allowed))
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": self._seconds_header(time.time() + until_free),
        }
        if not allowed:
            with self._lock:
                self.stats.rate_limited += 1
            headers["Retry-After"] = self._seconds_header(until_free)
            raise _RateLimited(headers, until_free)
        return headers

    def _seconds_header(self, seconds: float) -> str:
        """Whole seconds (a delay or an epoch) as Clarky sends them; milliseconds when time is
        scaled down, where a whole real second would be many API seconds of needless waiting."""
        return str(math.ceil(seconds)) if self.time_scale >= 1 else f"{seconds:.3f}"

    def _delay(self) -> None:
        if self.latency or self.latency_jitter:
            with self._lock:
                jitter = self._jitter_rng.uniform(0, self.latency_jitter)
            time.sleep(self.scaled(self.latency + jitter))

    def handle(self, method: str, raw_path: str) -> tuple[int, bytes, str]:
        """Route an authenticated, in-budget request; returns (status, body, route template)."""
        url = urlsplit(raw_path)
        if not url.path.startswith(API_PREFIX + "/"):
            raise ApiError(404, "not_found", "Unknown endpoint")
        path = url.path[len(API_PREFIX) :].rstrip("/")
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        for route in ROUTES:
            match = route.pattern.match(path)
            if match:
                break
        else:
            raise ApiError(404, "not_found", "Unknown endpoint")
        if method in WRITE_METHODS:
            raise ApiError(405, "bad_request", "The emulator serves reads only", {"method": method})
        args = [unquote(a) for a in match.groups()]
        res = route.resource
        if route.kind == "by_email":
            return 200, self._by_email(params), route.template
        if route.kind == "item":
            _reject_unknown(params, set())
            with self.store.lock:
                blob = self.store.find_blob(res.name, args[0])
            if blob is None:
                raise ApiError(404, "not_found", f"{res.name[:-1].capitalize()} not found")
            return 200, b'{"data":' + blob + b"}", route.template
        return 200, self._list(res, args[0] if args else None, params), route.template

    def _by_email(self, params: dict[str, str]) -> bytes:
        _reject_unknown(params, {"email"})
        email = params.get("email", "").strip().lower()
        if not email:
            raise ApiError(422, "validation_error", "email is required", {"field": "email"})
        with self.store.lock:
            for contact in self.store.collection("contacts", None) or []:
                addresses = [
                    e.get("email") if isinstance(e, dict) else e for e in contact.get("emails") or []
                ]
                if email in (str(a).lower() for a in addresses):
                    return b'{"data":' + self.store.find_blob("contacts", contact["id"]) + b"}"  # type: ignore[operator]
        raise ApiError(404, "not_found", "No contact with this email")

    def _list(self, res: Resource, parent_id: str | None, params: dict[str, str]) -> bytes:
        allowed = set(res.filter_index) | ({"page", "page_size"} if res.paginated else set())
        _reject_unknown(params, allowed)
        page = _int_param(params, "page", 1, 1, None)
        page_size = _int_param(params, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        predicate = _predicate(res, {k: v for k, v in params.items() if k not in ("page", "page_size")})
        with self.store.lock:
            if parent_id is not None and not self.store.parent_exists(res, parent_id):
                raise ApiError(404, "not_found", f"{res.parent} {parent_id} not found")
            ids = self.store.view(res, parent_id, params, predicate)
            collection = self.store.collection(res.name, parent_id)
            blobs = collection.blobs if collection else {}
            if not res.paginated:
                return b'{"data":[' + b",".join(blobs[i] for i in ids) + b"]}"
            if _ascending(res, params):
                ids = ids[::-1]  # lists are kept in their documented order, newest first
            if self.order == "per_request" and not res.ordered:
                ids = self._shuffled(ids)
            total = len(ids)
            chunk = ids[(page - 1) * page_size : page * page_size]
            body = b",".join(blobs[i] for i in chunk)
        pagination = (
            f'{{"page":{page},"page_size":{page_size},"total":{total},'
            f'"total_pages":{math.ceil(total / page_size)}}}'
        )
        if res.name == "contacts":
            self._count_list_request()
        return b'{"data":[' + body + b'],"pagination":' + pagination.encode() + b"}"

    def _shuffled(self, ids: list[str]) -> list[str]:
        with self._lock:
            return self._order_rng.sample(ids, len(ids))

    def _count_list_request(self) -> None:
        if not self.mutate_every:
            return
        with self._lock:
            self._list_requests += 1
            due = self._list_requests % self.mutate_every == 0
        if due:
            inserts, updates, deletes = self.mutation
            self.mutate(inserts=inserts, updates=updates, deletes=deletes)


class _RateLimited(Exception):
    def __init__(self, headers: dict[str, str], wait: float) -> None:
        super().__init__("rate limited")
        self.headers, self.wait = headers, wait


def _ascending(res: Resource, params: dict[str, str]) -> bool:
    """Whether the request asks a newest-first list for the other direction (``order=asc``)."""
    return any(f.kind is FilterKind.ORDER and params.get(f.name) == "asc" for f in res.filters)


def _reject_unknown(params: dict[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ApiError(
            400, "bad_request", f"Unsupported query parameter: {unknown[0]}", {"parameter": unknown[0]}
        )


def _int_param(params: dict[str, str], name: str, default: int, low: int, high: int | None) -> int:
    if name not in params:
        return default
    try:
        value = int(params[name])
    except ValueError:
        raise ApiError(422, "validation_error", f"{name} must be an integer", {"field": name}) from None
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high else f"at least {low}"
        raise ApiError(422, "validation_error", f"{name} must be {limit}", {"field": name})
    return value


def _predicate(res: Resource, filters: dict[str, str]) -> Callable[[dict[str, Any]], bool] | None:
    """One predicate for all filters of a request (None when nothing filters), each as the catalog says."""
    checks: list[Callable[[dict[str, Any]], bool]] = []
    specs = res.filter_index
    show_deleted = False
    for name, raw in filters.items():
        spec = specs[name]
        if spec.kind is FilterKind.TIMESTAMP:
            try:
                bound = parse_timestamp(raw)
            except ValueError:
                bound = None
            if bound is None:
                raise ApiError(
                    422, "validation_error", f"{name} must be an ISO 8601 timestamp", {"field": name}
                )
            checks.append(_time_check(res, name, bound.timestamp()))
        elif spec.kind is FilterKind.SHOW_DELETED:
            if raw not in ("true", "false"):
                raise ApiError(422, "validation_error", f"{name} must be true or false", {"field": name})
            show_deleted = raw == "true"
        elif spec.kind in (FilterKind.CHOICE, FilterKind.ORDER) and raw not in spec.choices:
            raise ApiError(
                422, "validation_error", f"{name} must be one of {', '.join(spec.choices)}", {"field": name}
            )
        elif spec.kind is FilterKind.SEARCH:
            checks.append(_search_check(spec.fields, raw.lower()))
        elif spec.kind is FilterKind.ANY_OF:
            checks.append(_any_of(name, {t.strip() for t in raw.split(",") if t.strip()}))
        elif spec.kind is not FilterKind.ORDER:
            checks.append(_equals(name, raw))
    if res.soft_delete_field and not show_deleted:
        checks.append(lambda r: not hidden_by_default(res, r))
    if not checks:
        return None
    return lambda record: all(check(record) for check in checks)


def _equals(field_name: str, value: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: record.get(field_name) == value


def _any_of(field_name: str, wanted: set[str]) -> Callable[[dict[str, Any]], bool]:
    """Records whose list field holds any of the values (for ``tags`` the docs leave any/all open)."""
    return lambda record: bool(wanted & set(record.get(field_name) or []))


def _time_check(res: Resource, name: str, bound: float) -> Callable[[dict[str, Any]], bool]:
    """Inclusive bound on the field the catalog names for this filter (cursor or partition field)."""
    field_name = res.cursor_field if name == res.incremental_filter else res.partition_field
    if field_name is None:
        raise ValueError(f"the catalog gives {res.name!r} a time filter {name!r} but no field for it")
    after = name.endswith("_after")

    def check(record: dict[str, Any]) -> bool:
        value = epoch_of(record.get(field_name))
        return value is not None and (value >= bound if after else value <= bound)

    return check


def _search_check(fields: tuple[str, ...], needle: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: any(needle in str(record.get(n) or "").lower() for n in fields)


def _envelope(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    import json

    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClarkyEmulator/1"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle's algorithm and delayed
        # ACKs add ~40 ms to small responses on a kept-alive connection
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        emulator: ClarkyEmulator = self.server.emulator  # type: ignore[attr-defined]
        stats = emulator.stats
        with emulator._lock:
            stats.current += 1
            stats.peak_concurrency = max(stats.peak_concurrency, stats.current)
        try:
            self._respond(emulator, method)
        finally:
            with emulator._lock:
                stats.current -= 1

    def _respond(self, emulator: ClarkyEmulator, method: str) -> None:
        headers: dict[str, str] = {}
        route = urlsplit(self.path).path.removeprefix(API_PREFIX)
        try:
            key = emulator._authenticate(self.headers.get("Authorization"))
            headers = emulator._spend(key, method)
            with emulator._lock:
                emulator.stats.requests += 1
                number = emulator.stats.requests
            fault = emulator.faults.pick(number)
            if fault is not None:
                with emulator._lock:
                    emulator.stats.faults_injected[fault] += 1
                if self._inject(emulator, fault, key, headers):
                    return
            if method in WRITE_METHODS and "write" not in emulator.scopes[key]:
                raise ApiError(403, "forbidden", "This API key does not have the write scope")
            emulator._delay()
            status, body, route = emulator.handle(method, self.path)
            content_type = "application/json"
        except _RateLimited as limited:
            status, headers = 429, limited.headers
            body = _envelope(
                "rate_limited", f"Too many requests. Retry after {headers['Retry-After']} seconds."
            )
            content_type = "application/json"
        except ApiError as error:
            status, body, content_type = (
                error.status,
                _envelope(error.code, error.message, error.details),
                "application/json",
            )
        with emulator._lock:
            emulator.stats.by_route[(route, status)] += 1
        self._send(status, body, content_type, headers, head=method == "HEAD")

    def _inject(self, emulator: ClarkyEmulator, fault: str, key: str, headers: dict[str, str]) -> bool:
        """Apply a fault; True when the response is already sent (or deliberately never sent)."""
        if fault == "slow":
            time.sleep(emulator.scaled(emulator.faults.slow_seconds))
            return False
        if fault == "revoke":
            emulator.revoke(key)
            raise ApiError(401, "unauthorized", "Missing or invalid API key")
        if fault == "500":
            raise ApiError(500, "internal_error", "Something went wrong")
        if fault == "429":
            wait = emulator.scaled(emulator.faults.retry_after)
            headers = {**headers, "Retry-After": emulator._seconds_header(wait), "X-RateLimit-Remaining": "0"}
            raise _RateLimited(headers, wait)
        if fault in ("502", "503"):
            status = int(fault)
            reason = "Bad Gateway" if status == 502 else "Service Unavailable"
            self._send(status, HTML_ERROR % (status, status, reason.encode()), "text/html", headers)
            return True
        _, body, _ = emulator.handle("GET", self.path)
        if fault == "truncate":
            self._send(200, body[: max(1, len(body) // 2)], "application/json", headers)
            return True
        # "drop": promise the whole body, send part of it, then close the connection
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        return True

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str], head: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
