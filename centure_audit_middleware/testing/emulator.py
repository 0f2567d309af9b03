"""A faithful fake of the WorkOS Audit Logs, Admin Portal and retention API: a real HTTP server on loopback.

The real `workos` SDK talks to it unchanged (`WorkOSClient(api_key=emulator.api_key, base_url=emulator.url,
max_retries=0)`), so tests exercise the SDK's own request building, error mapping and timeouts, not a mock of them.
It validates like the real API (DESIGN.md §6), keeps `Idempotency-Key` replays for 24 hours on an injectable
clock, records everything it received, and injects the faults the delivery pipeline must survive (RELIABILITY.md):
status codes with `Retry-After`, flapping, latency, connection resets, commit-then-stall, endpoint down, revoked key.

It is the standard library's `ThreadingHTTPServer` with HTTP/1.1 keep-alive, one `write` per response and no
per-request logging, because the delivery benchmarks need thousands of requests per second from it on two cores.

What it answers is checked against WorkOS's own published OpenAPI spec (npm `@workos/openapi-spec`, pinned and
checksummed by scripts/fetch-workos-openapi-spec.sh): this project's test suite records every request and answer
of every emulator (`observe_exchanges`, an opt-in hook) and fails a test whose exchanges disagree with the spec
(tests/workos_spec.py). Per the spec: POST /audit_logs/exports answers 400 (never 404 or 422) for an unknown
organization or invalid parameters, creating a schema identical to the latest answers 201, a 422 always carries
`errors`, an event's `occurred_at` must be an RFC 3339 date-time with its offset, and a present `name` or
`user_agent` must be a string (null is refused).

Where the spec is silent, the emulator assumes the following (and the suite allows exactly these):

- 401 for a missing, wrong or revoked API key, on every API route, with the body `{"message": "Unauthorized"}`
  (the spec declares no 401 for the Audit Logs routes, nor its body).
- `Retry-After` (integer seconds) on the 429 of its rate limiter, on every API route (the spec declares a 429
  without headers for POST /audit_logs/events only). An injected failure carries `Retry-After` only when the
  test passes `retry_after=` (seconds or an HTTP-date, sent verbatim).
- Bodies over `max_body_bytes` (1 MiB by default) answer 413 `{message, code: "payload_too_large"}` (WorkOS does
  not publish its limit). An emulator bug answers 500 `{message}` and is kept in `internal_errors`.
- An answer with a status the spec does not declare (those above, and whatever a test injects with `fail_next`
  or `set_failure_rate`) has a JSON body with a string `message`.
- `event_success_status=201` answers 201 `{"success": true}` to a new event (the spec says 200; the option exists
  to check that clients take a 201 too).
- A repeated `Idempotency-Key` with a *different* body answers 422 `idempotency_key_reused` (the IETF
  Idempotency-Key draft's choice). Only committed (2xx) responses are stored; a rejected request leaves the key free.
  Replays carry `Idempotent-Replayed: true`.
- Two requests with one key racing each other never both commit: the check and the commit are one atomic step,
  the loser replays the winner's response (a real server might answer 409 instead; clients must not rely on either).
- Creating a schema identical to the action's latest version returns that version (no new one).
- PUT .../audit_logs_retention also takes the SDK's `retention_period` ("3_MONTHS", ...), which the spec lacks,
  and any of the SDK's day counts (30..330 by 30, 365..3650 by 365), where the spec's prose says 30 or 365.
- Export CSV columns are the emulator's own (WorkOS does not publish them): see `EXPORT_CSV_COLUMNS`. The CSV and
  the Admin Portal page a link opens are served by the emulator itself (WorkOS serves them from other hosts,
  outside the API spec).
- Retention is `null` until set, as the spec's `AuditLogsRetentionJson` allows.
- "Endpoint down" (`set_down`) refuses connections by default (the listening socket is closed, so clients get
  "connection refused" at once); `mode="blackhole"` keeps the port open but stops answering, so clients time out.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import itertools
import json
import logging
import math
import random
import re
import secrets
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import parse_qs, quote, unquote

__all__ = [
    "EVENTS_PATH",
    "EXPORT_CSV_COLUMNS",
    "PORTAL_INTENTS",
    "Exchange",
    "ReceivedEvent",
    "ReceivedRequest",
    "WorkOSEmulator",
    "observe_exchanges",
]

logger = logging.getLogger(__name__)

EVENTS_PATH: Final = "/audit_logs/events"
#: Intents `POST /portal/generate_link` accepts (the SDK's `GenerateLinkIntent`).
PORTAL_INTENTS: Final = frozenset(
    {"audit_logs", "log_streams", "sso", "dsync", "domain_verification", "certificate_renewal", "bring_your_own_key"}
)
#: Columns of the CSV an export's `url` serves. WorkOS does not document its own; these carry every event field.
EXPORT_CSV_COLUMNS: Final = (
    "id",
    "organization_id",
    "action",
    "occurred_at",
    "version",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_metadata",
    "targets",
    "location",
    "user_agent",
    "metadata",
    "created_at",
)

IDEMPOTENCY_TTL: Final = 24 * 3600.0
PORTAL_LINK_TTL: Final = 5 * 60.0
EXPORT_URL_TTL: Final = 10 * 60.0
# "Events from the past three months can be included in the export."
EXPORT_MAX_AGE: Final = 90 * 24 * 3600.0
METADATA_MAX_KEYS: Final = 50
METADATA_MAX_VALUE_LENGTH: Final = 500
# fullmatch, not `re.match(...$)`: Python's `$` also matches before a trailing newline, the API's regex does not.
METADATA_KEY: Final = re.compile(r"[a-zA-Z0-9_-]{0,40}")
# 30..330 in 30-day steps, 365..3650 in 365-day steps (the SDK's `AuditLogsRetention` docstring).
RETENTION_DAYS: Final = frozenset([*range(30, 331, 30), *range(365, 3651, 365)])
RETENTION_PERIODS: Final = {
    **{f"{n}_MONTH{'S' if n > 1 else ''}": 30 * n for n in range(1, 12)},
    **{f"{n}_YEAR{'S' if n > 1 else ''}": 365 * n for n in range(1, 11)},
}

_JSON_TYPE: Final = "application/json"
# Bodies over max_body_bytes but under this are read (and dropped) so that the 413 reaches the client.
_DRAIN_LIMIT: Final = 64 * 1024 * 1024
_SUCCESS_BODY: Final = b'{"success":true}'
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Bodies for injected failures and generic errors, shaped like the real API's.
_DEFAULT_ERROR_BODIES: Final[dict[int, dict[str, Any]]] = {
    400: {"message": "Invalid Audit Log event", "code": "invalid_audit_log_event", "errors": []},
    401: {"message": "Unauthorized"},
    403: {"message": "Forbidden"},
    404: {"message": "Not Found", "code": "entity_not_found"},
    413: {"message": "Request Entity Too Large", "code": "payload_too_large"},
    422: {"message": "Validation failed.", "code": "invalid_request_parameters", "errors": []},
    429: {"message": "Rate limit exceeded", "code": "rate_limit_exceeded"},
}

Clock = Callable[[], float]
DownMode = Literal["refuse", "blackhole"]


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One event the emulator committed: what a correct client must make arrive exactly once."""

    organization_id: str
    event: dict[str, Any]
    """The `event` object exactly as received (JSON-decoded)."""
    idempotency_key: str | None
    received_at: float
    """The emulator's clock (the injectable `clock`) when it committed the event."""
    id: str = ""
    """The emulator's id for the event (`audit_log_event_<ULID>`), the first column of export CSVs."""


@dataclass(slots=True)
class ReceivedRequest:
    """One HTTP request as it arrived, and what the emulator did with it."""

    method: str
    path: str
    """The path without the query string, still percent-encoded."""
    query: str
    headers: dict[str, str]
    """Header names lower-cased: `request.headers["idempotency-key"]`."""
    body: bytes
    received_at: float
    """The emulator's clock when the request arrived."""
    monotonic: float
    """`time.monotonic()` when the request arrived: for asserting gaps (e.g. no retry before `Retry-After`)."""
    status: int | None = None
    """The status answered (or, for a stall, to be answered late); None for a reset connection or no answer yet."""
    fault: str | None = None
    """The injected fault that shaped the answer: fail_next, failure_rate, rate_limit, reset, stall, revoked, down."""
    replayed: bool = False
    """True when the answer is a stored idempotent replay (nothing committed)."""

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name."""
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request an emulator handled and the answer it decided on: what `observe_exchanges` observers see."""

    request: ReceivedRequest
    status: int | None
    """None when the connection is reset instead of answered."""
    content_type: str
    headers: tuple[tuple[str, str], ...]
    """The headers the answer adds to Date, Content-Type, Content-Length and X-Request-ID (e.g. Retry-After)."""
    body: bytes


ExchangeObserver = Callable[[Exchange], None]
# Replaced, never mutated, so that handler threads can read it without a lock.
_observers: tuple[ExchangeObserver, ...] = ()
_observers_lock = threading.Lock()


@contextlib.contextmanager
def observe_exchanges(observer: ExchangeObserver) -> Iterator[None]:
    """Call `observer` with every exchange of every emulator in this process while the block runs.

    Opt-in and off by default (a test suite's conftest turns it on to check each request and answer against
    WorkOS's published OpenAPI spec). The observer runs in the emulator's handler thread before the answer is
    written: it must be quick and thread-safe, such as appending to a list that is checked later.
    """
    global _observers
    with _observers_lock:
        _observers = (*_observers, observer)
    try:
        yield
    finally:
        with _observers_lock:
            remaining = list(_observers)
            remaining.remove(observer)
            _observers = tuple(remaining)


@dataclass(slots=True)
class _Outcome:
    """What the HTTP layer does with a request: answer, reset the socket, or stall and then answer."""

    status: int
    body: bytes = b""
    content_type: str = _JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    action: Literal["respond", "reset", "stall"] = "respond"
    stall_seconds: float = 0.0
    close: bool = False


@dataclass(slots=True)
class _Injected:
    status: int
    remaining: int
    retry_after: str | None
    body: dict[str, Any] | None
    path: str | None


@dataclass(slots=True)
class _PostCommitFault:
    kind: Literal["stall", "reset"]
    remaining: int
    seconds: float = 0.0


@dataclass(slots=True)
class _StoredResponse:
    fingerprint: str
    status: int
    body: bytes
    stored_at: float


@dataclass(slots=True)
class _Schema:
    version: int
    targets: list[dict[str, Any]]
    actor: dict[str, Any] | None
    metadata: dict[str, Any] | None
    created_at: float

    def shape(self) -> str:
        return _canonical({"targets": self.targets, "actor": self.actor, "metadata": self.metadata})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"object": "audit_log_schema", "version": self.version, "targets": self.targets}
        if self.actor is not None:
            out["actor"] = self.actor
        if self.metadata is not None:
            out["metadata"] = self.metadata
        out["created_at"] = _iso(self.created_at)
        return out


@dataclass(slots=True)
class _Action:
    name: str
    created_at: float
    updated_at: float
    schemas: list[_Schema] = field(default_factory=list)


@dataclass(slots=True)
class _Export:
    id: str
    organization_id: str
    filters: dict[str, Any]
    created_at: float
    updated_at: float
    polls: int = 0
    csv: bytes | None = None  # the snapshot taken when the export became ready

    def to_json(self, url: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "object": "audit_log_export",
            "id": self.id,
            "state": "ready" if self.csv is not None else "pending",
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }
        if url is not None:
            out["url"] = url
        return out


@dataclass(slots=True)
class _PortalLink:
    organization_id: str
    intent: str
    expires_at: float


class WorkOSEmulator:
    """A WorkOS API on loopback for the real SDK. Thread-safe; fault injection applies to the next matching requests.

    >>> with WorkOSEmulator(organizations=["org_01TEST"]) as emulator:     # doctest: +SKIP
    ...     client = WorkOSClient(api_key=emulator.api_key, base_url=emulator.url, max_retries=0)
    """

    def __init__(
        self,
        *,
        api_key: str = "sk_test_emulator",
        organizations: Iterable[str] = ("org_01TEST",),
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.time,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
        max_body_bytes: int = 1024 * 1024,
        event_success_status: int = 200,
        export_polls_until_ready: int = 1,
        max_requests_recorded: int | None = None,
        on_event: Callable[[ReceivedEvent], None] | None = None,
    ) -> None:
        """Configure; nothing listens until `start()`.

        `clock` drives every time the API exposes or checks (idempotency window, link expiry, timestamps), so tests
        can age keys without sleeping. `event_success_status`: DESIGN §6 says WorkOS answers 200; some tools
        see 201, and the SDK accepts both. `export_polls_until_ready`: the GET of an export that turns it `ready`
        (1 = the first poll). `max_requests_recorded` bounds `requests` for long benchmarks (None: unbounded,
        0: record nothing). `on_event` is called, outside the emulator's lock, for each committed event.
        """
        self._api_key = api_key
        self._host = host
        self._port = port
        self._clock = clock
        self.idempotency_ttl = idempotency_ttl
        self.max_body_bytes = max_body_bytes
        self.event_success_status = event_success_status
        self.export_polls_until_ready = export_polls_until_ready
        self._on_event = on_event
        self._record_requests = max_requests_recorded != 0
        self._max_requests_recorded = max_requests_recorded

        self._lock = threading.Lock()
        # Signalled on every commit, for `wait_for_events`.
        self._committed = threading.Condition(self._lock)
        # Set on stop(): wakes every injected sleep so shutdown never waits out a stall.
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._started = False
        self._down: DownMode | None = None
        # Live connections and their handler threads, so stop()/set_down() can end keep-alive connections
        # that would otherwise keep a handler thread blocked in a read forever.
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._reset_sockets: set[socket.socket] = set()
        self._request_ids = itertools.count(1)

        self._organizations: set[str] = set(organizations)
        self._revoked = False
        self.internal_errors: list[str] = []
        self._init_state()

    def _init_state(self) -> None:
        """Everything `reset()` forgets: what was received, stored and injected."""
        self._events: list[ReceivedEvent] = []
        self._requests: deque[ReceivedRequest] = deque(maxlen=self._max_requests_recorded)
        self._commits_by_key: dict[str, int] = {}
        self._idempotency: dict[str, _StoredResponse] = {}
        self._injected: list[_Injected] = []
        self._resets_before_commit: list[tuple[int, str | None]] = []  # [remaining, path]
        self._post_commit: list[_PostCommitFault] = []
        self._failure_rate = 0.0
        self._failure_status = 503
        self._failure_path: str | None = EVENTS_PATH
        self._rng = random.Random()
        self._latency = 0.0
        self._rate_limit: tuple[int, float] | None = None
        self._rate_log: deque[float] = deque()
        self._actions: dict[str, _Action] = {}
        self._exports: dict[str, _Export] = {}
        self._export_tokens: dict[str, tuple[str, float]] = {}
        self._portal_links: dict[str, _PortalLink] = {}
        self._retention: dict[str, int | None] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def url(self) -> str:
        """The SDK's `base_url` (the SDK adds the trailing slash itself if missing; this has one)."""
        if not self._started:
            raise RuntimeError("WorkOSEmulator is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    @property
    def port(self) -> int:
        return self._port

    @property
    def organizations(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._organizations)

    def start(self) -> Self:
        """Bind (port 0 picks a free one, kept across `set_down` cycles) and serve in a background thread."""
        if self._started:
            raise RuntimeError("WorkOSEmulator already started")
        self._stopping.clear()
        self._bind_and_serve()
        self._started = True
        return self

    def stop(self) -> None:
        """Stop serving, end every connection (and any injected stall), release the port. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        self._close_listener()
        self._close_connections(join=True)
        self._down = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _bind_and_serve(self) -> None:
        server = _Server((self._host, self._port), self)
        self._port = server.server_address[1]
        self._server = server
        # A short poll interval: `shutdown()` waits for the loop to notice, and tests stop an emulator per test.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"workos-emulator:{self._port}"
        )
        thread.daemon = True
        thread.start()
        self._serve_thread = thread

    def _stop_accepting(self) -> None:
        if self._server is not None and self._serve_thread is not None:
            self._server.shutdown()
            self._serve_thread.join()
            self._serve_thread = None

    def _close_listener(self) -> None:
        self._stop_accepting()
        if self._server is not None:
            self._server.server_close()
            self._server = None

    def _close_connections(self, *, join: bool) -> None:
        with self._lock:
            connections = list(self._connections.items())
        for sock, _thread in connections:
            # shutdown() (not close()) so the handler thread blocked in a read sees EOF and exits by itself,
            # then closes the socket it owns.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if join:
            for _sock, thread in connections:
                if thread is not threading.current_thread():
                    thread.join(timeout=5)

    # ------------------------------------------------------------------ configuration and inspection

    def add_organization(self, organization_id: str) -> None:
        with self._lock:
            self._organizations.add(organization_id)

    @property
    def events(self) -> list[ReceivedEvent]:
        """Committed events in commit order (a snapshot: safe to iterate while the server runs)."""
        with self._lock:
            return list(self._events)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request in arrival order (a snapshot), including rejected, injected and reset ones."""
        with self._lock:
            return list(self._requests)

    def count_by_key(self) -> dict[str, int]:
        """Idempotency key -> times an event was committed under it: 1 for a correct client. A replay is not a
        commit; only a key reused after the 24 h window counts twice. A client that sends a new key per attempt
        shows up as several keys instead (see `duplicate_events`). Events sent without a key are not counted here."""
        with self._lock:
            return dict(self._commits_by_key)

    def duplicate_events(self) -> list[ReceivedEvent]:
        """Events whose organization and exact `event` body were already committed earlier (under any key or none):
        the business-level duplicates a client that changes keys between attempts would create."""
        seen: set[str] = set()
        duplicates: list[ReceivedEvent] = []
        for received in self.events:
            shape = _canonical([received.organization_id, received.event])
            if shape in seen:
                duplicates.append(received)
            seen.add(shape)
        return duplicates

    def wait_for_events(self, count: int, timeout: float) -> bool:
        """Block until at least `count` events are committed; False on timeout."""
        with self._committed:
            return self._committed.wait_for(lambda: len(self._events) >= count, timeout=timeout)

    def reset(self) -> None:
        """Forget events, requests, idempotency keys, faults, latency, rate limit, schemas, exports, links and
        retention. Keeps the organizations, the API key, and whether it is revoked or down."""
        with self._lock:
            self._init_state()

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: str | None = None,
        body: dict[str, Any] | None = None,
        path: str | None = EVENTS_PATH,
    ) -> None:
        """Answer the next `count` requests to `path` (None: any path) with `status`, before anything is committed.

        `retry_after` is sent verbatim as the `Retry-After` header: seconds ("2") or an HTTP-date. `body`
        defaults to the real API's body for that status. Several calls queue up in order.
        """
        with self._lock:
            self._injected.append(_Injected(status, count, retry_after, body, path))

    def set_failure_rate(
        self, rate: float, status: int = 503, *, seed: int | None = None, path: str | None = EVENTS_PATH
    ) -> None:
        """Flapping: each request to `path` fails with `status` with probability `rate` (0 turns it off)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        with self._lock:
            self._failure_rate = rate
            self._failure_status = status
            self._failure_path = path
            self._rng = random.Random(seed)

    def set_latency(self, seconds: float) -> None:
        """Delay every request by `seconds` before it is processed (a client that times out meanwhile may still
        see its event committed afterwards: the server does not know the client left)."""
        with self._lock:
            self._latency = max(0.0, seconds)

    def set_rate_limit(self, limit: int | None, window_seconds: float = 60.0) -> None:
        """Answer 429 with `Retry-After` beyond `limit` API requests per sliding window (WorkOS: 6,000 per 60 s
        per IP). None turns it off (the default: benchmarks send far more than 100 requests per second)."""
        with self._lock:
            self._rate_limit = None if limit is None else (limit, window_seconds)
            self._rate_log.clear()

    def reset_connections(self, count: int = 1, *, after_commit: bool = False, path: str | None = EVENTS_PATH) -> None:
        """Reset (TCP RST) the connection of the next `count` requests instead of answering.

        Before the commit by default (nothing happened); `after_commit=True` commits the event first, the
        ambiguous case where only the idempotency key keeps the retry from duplicating it (events path only).
        """
        with self._lock:
            if after_commit:
                self._post_commit.append(_PostCommitFault("reset", count))
            else:
                self._resets_before_commit.append((count, path))

    def commit_then_stall(self, seconds: float, count: int = 1) -> None:
        """For the next `count` new events: commit (it counts as accepted), then wait `seconds` before answering,
        to outlast the client's timeout. A replay of an already committed key is answered at once."""
        with self._lock:
            self._post_commit.append(_PostCommitFault("stall", count, seconds))

    def set_down(self, down: bool, *, mode: DownMode = "refuse") -> None:
        """Take the endpoint down, or bring it back on the same port.

        `refuse` (default) closes the listening socket and every open connection: clients fail at once with
        "connection refused" (the SDK's `WorkOSConnectionError`). `blackhole` keeps the port open but stops
        accepting: the kernel still completes the TCP handshake, requests are never answered and clients time out
        (`WorkOSTimeoutError`); queued connections are served once the endpoint is back, like a healed partition.
        """
        if not self._started:
            raise RuntimeError("WorkOSEmulator is not started")
        if down:
            if self._down is not None:
                return
            self._down = mode
            if mode == "refuse":
                self._close_listener()
            else:
                self._stop_accepting()
            # Idle keep-alive connections would otherwise keep being served.
            self._close_connections(join=False)
        else:
            if self._down is None:
                return
            if self._down == "refuse":
                self._bind_and_serve()
            else:
                assert self._server is not None
                thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"workos-emulator:{self._port}",
                )
                thread.daemon = True
                thread.start()
                self._serve_thread = thread
            self._down = None

    def revoke_key(self) -> None:
        """401 for every API request until `restore_key()`."""
        with self._lock:
            self._revoked = True

    def restore_key(self) -> None:
        with self._lock:
            self._revoked = False

    # ------------------------------------------------------------------ request processing (handler threads)

    def _register_connection(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections[sock] = thread

    def _unregister_connection(self, sock: socket.socket) -> bool:
        """Forget the connection; True when it must be reset (RST) rather than closed gracefully."""
        with self._lock:
            self._connections.pop(sock, None)
            if sock in self._reset_sockets:
                self._reset_sockets.discard(sock)
                return True
            return False

    def _mark_reset(self, sock: socket.socket) -> None:
        with self._lock:
            self._reset_sockets.add(sock)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _next_request_id(self) -> str:
        return f"req_emulator_{next(self._request_ids)}"

    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes, too_large: bool) -> _Outcome:
        """Process one request; never raises (an emulator bug answers 500 and is kept in `internal_errors`)."""
        path, _, query = target.partition("?")
        record = ReceivedRequest(method, path, query, headers, body, self._clock(), time.monotonic())
        with self._lock:
            if self._record_requests:
                self._requests.append(record)
            latency = self._latency
        self._sleep(latency)
        try:
            outcome = self._process(record, too_large)
        except Exception as exc:  # the emulator must answer even when it has a bug, and the bug must be visible
            logger.exception("WorkOS emulator failed on %s %s", method, path)
            self.internal_errors.append(f"{method} {path}: {exc!r}")
            outcome = _json_outcome(500, {"message": "Internal Server Error"})
            record.fault = "internal_error"
        record.status = None if outcome.action == "reset" else outcome.status
        observers = _observers
        if observers:
            exchange = Exchange(record, record.status, outcome.content_type, outcome.headers, outcome.body)
            for observer in observers:
                observer(exchange)
        return outcome

    def _process(self, record: ReceivedRequest, too_large: bool) -> _Outcome:
        path = record.path
        with self._lock:
            injected = self._take_pre_commit_fault(path)
        if injected is not None:
            record.fault = injected[0]
            return injected[1]
        if too_large:
            return _json_outcome(413, _DEFAULT_ERROR_BODIES[413])

        segments = [unquote(s) for s in path.strip("/").split("/")]
        method = record.method
        # Public routes: a presigned export URL and a portal link work without the API key, like the real ones.
        if method == "GET" and len(segments) == 2 and segments[0] == "portal":
            return self._portal_page(segments[1], record.query)
        if method == "GET" and len(segments) == 2 and segments[0] == "exports" and segments[1].endswith(".csv"):
            return self._download_export(segments[1].removesuffix(".csv"))

        with self._lock:
            revoked = self._revoked
            limited = self._check_rate_limit()
        if revoked or record.headers.get("authorization") != f"Bearer {self._api_key}":
            record.fault = "revoked" if revoked else None
            return _json_outcome(401, _DEFAULT_ERROR_BODIES[401])
        if limited is not None:
            record.fault = "rate_limit"
            return _json_outcome(429, _DEFAULT_ERROR_BODIES[429], headers=(("Retry-After", limited),))

        match (method, segments):
            case ("POST", ["audit_logs", "events"]):
                return self._create_event(record)
            case ("POST", ["audit_logs", "exports"]):
                return self._create_export(record.body)
            case ("GET", ["audit_logs", "exports", export_id]):
                return self._get_export(export_id)
            case ("GET", ["audit_logs", "actions"]):
                return self._list_actions(record.query)
            case ("POST", ["audit_logs", "actions", action, "schemas"]):
                return self._create_schema(action, record.body)
            case ("GET", ["audit_logs", "actions", action, "schemas"]):
                return self._list_schemas(action, record.query)
            case ("POST", ["portal", "generate_link"]):
                return self._generate_link(record.body)
            case ("GET", ["organizations", org, "audit_logs_retention"]):
                return self._get_retention(org)
            case ("PUT", ["organizations", org, "audit_logs_retention"]):
                return self._set_retention(org, record.body)
        return _json_outcome(404, {"message": f"Cannot {method} {path}", "code": "not_found"})

    def _take_pre_commit_fault(self, path: str) -> tuple[str, _Outcome] | None:
        """The injected fault for this request, if any (called with the lock held)."""
        for index, (remaining, reset_path) in enumerate(self._resets_before_commit):
            if reset_path is None or reset_path == path:
                if remaining <= 1:
                    del self._resets_before_commit[index]
                else:
                    self._resets_before_commit[index] = (remaining - 1, reset_path)
                return "reset", _Outcome(0, action="reset")
        for injected in self._injected:
            if injected.path is None or injected.path == path:
                injected.remaining -= 1
                if injected.remaining <= 0:
                    self._injected.remove(injected)
                body = injected.body if injected.body is not None else _default_error_body(injected.status)
                extra = (("Retry-After", injected.retry_after),) if injected.retry_after is not None else ()
                return "fail_next", _json_outcome(injected.status, body, headers=extra)
        matches = self._failure_path is None or self._failure_path == path
        if self._failure_rate > 0 and matches and self._rng.random() < self._failure_rate:
            status = self._failure_status
            return "failure_rate", _json_outcome(status, _default_error_body(status))
        return None

    def _check_rate_limit(self) -> str | None:
        """The Retry-After value when over the limit, else None (called with the lock held)."""
        if self._rate_limit is None:
            return None
        limit, window = self._rate_limit
        now = time.monotonic()
        log = self._rate_log
        while log and log[0] <= now - window:
            log.popleft()
        if len(log) >= limit:
            return str(max(1, math.ceil(log[0] + window - now)))
        log.append(now)
        return None

    # ------------------------------------------------------------------ POST /audit_logs/events

    def _create_event(self, record: ReceivedRequest) -> _Outcome:
        payload = _parse_json(record.body)
        if payload is _INVALID:
            return _invalid_json()
        key = record.headers.get("idempotency-key") or None
        fingerprint = _canonical(payload)
        if key is not None:
            with self._lock:
                stored = self._lookup_idempotent(key)
            if stored is not None:
                return self._replay(record, stored, fingerprint)

        errors = _validate_event_request(payload)
        if errors:
            return _validation_failed(errors)
        organization_id: str = payload["organization_id"]
        event: dict[str, Any] = payload["event"]
        with self._lock:
            known = organization_id in self._organizations
            schema = self._schema_for(event)
        if not known:
            return _org_not_found(organization_id)
        if isinstance(schema, _Outcome):
            return schema
        problems = _validate_event_metadata(event) + _validate_against_schema(event, schema)
        if problems:
            return _json_outcome(
                400, {"message": "Invalid Audit Log event", "code": "invalid_audit_log_event", "errors": problems}
            )

        status = self.event_success_status
        with self._lock:
            # Check again, atomically with the commit: a request with the same key may have committed while this
            # one was validating. Then this one is a replay, and two racing attempts never both commit.
            stored = self._lookup_idempotent(key) if key is not None else None
            if stored is None:
                committed = self._commit(organization_id, event, key, fingerprint, status, _SUCCESS_BODY)
                post_commit = self._take_post_commit_fault()
        if stored is not None:
            return self._replay(record, stored, fingerprint)
        if self._on_event is not None:
            try:
                self._on_event(committed)
            except Exception:
                logger.exception("WorkOS emulator on_event callback failed")
        outcome = _Outcome(status, _SUCCESS_BODY)
        if post_commit is not None:
            record.fault = post_commit.kind
            if post_commit.kind == "reset":
                return _Outcome(0, action="reset")
            outcome.action = "stall"
            outcome.stall_seconds = post_commit.seconds
        return outcome

    def _lookup_idempotent(self, key: str) -> _StoredResponse | None:
        """The live stored response for `key` (called with the lock held); an expired one is forgotten."""
        stored = self._idempotency.get(key)
        if stored is not None and self._clock() - stored.stored_at >= self.idempotency_ttl:
            del self._idempotency[key]
            return None
        return stored

    def _replay(self, record: ReceivedRequest, stored: _StoredResponse, fingerprint: str) -> _Outcome:
        if stored.fingerprint != fingerprint:
            return _json_outcome(
                422,
                {
                    "message": "This Idempotency-Key was already used with a different request body.",
                    "code": "idempotency_key_reused",
                    "errors": [],  # the spec's 422 for this route requires the array
                },
            )
        record.replayed = True
        return _Outcome(stored.status, stored.body, headers=(("Idempotent-Replayed", "true"),))

    def _commit(
        self, organization_id: str, event: dict[str, Any], key: str | None, fingerprint: str, status: int, body: bytes
    ) -> ReceivedEvent:
        """Accept the event (called with the lock held)."""
        now = self._clock()
        committed = ReceivedEvent(organization_id, event, key, now, f"audit_log_event_{_ulid(now)}")
        self._events.append(committed)
        if key is not None:
            self._commits_by_key[key] = self._commits_by_key.get(key, 0) + 1
            self._idempotency[key] = _StoredResponse(fingerprint, status, body, now)
            self._prune_idempotency(now)
        self._committed.notify_all()
        return committed

    def _prune_idempotency(self, now: float) -> None:
        # Insertion order is commit order, so expired keys are at the front: memory stays bounded by the window.
        while self._idempotency:
            oldest_key = next(iter(self._idempotency))
            if now - self._idempotency[oldest_key].stored_at < self.idempotency_ttl:
                break
            del self._idempotency[oldest_key]

    def _take_post_commit_fault(self) -> _PostCommitFault | None:
        if not self._post_commit:
            return None
        fault = self._post_commit[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._post_commit.pop(0)
        return fault

    def _schema_for(self, event: dict[str, Any]) -> _Schema | _Outcome | None:
        """The action's schema the event must satisfy (called with the lock held): the version it names, else the
        latest; an unknown version of a known action is a 400."""
        action = self._actions.get(event["action"])
        if action is None or not action.schemas:
            return None
        version = event.get("version")
        if version is None:
            return action.schemas[-1]
        for schema in action.schemas:
            if schema.version == version:
                return schema
        return _json_outcome(
            400,
            {
                "message": f"Schema version {version} does not exist for action '{action.name}'.",
                "code": "invalid_audit_log_event",
                "errors": [{"instancePath": "/version", "keyword": "enum", "message": "unknown schema version"}],
            },
        )

    # ------------------------------------------------------------------ exports

    def _create_export(self, raw: bytes) -> _Outcome:
        payload = _parse_json(raw)
        if payload is _INVALID:
            return _invalid_json()
        errors: list[dict[str, str]] = []
        if not isinstance(payload, dict):
            return _export_bad_request([{"code": "must_be_object", "field": "body"}])
        _require_string(payload, "organization_id", "organization_id", errors)
        for name in ("range_start", "range_end"):
            value = payload.get(name)
            if value is None:
                errors.append({"code": "required", "field": name})
            elif not isinstance(value, str) or _parse_iso(value) is None:
                errors.append({"code": "must_be_iso8601", "field": name})
        for name in ("actions", "actors", "actor_names", "actor_ids", "targets"):
            value = payload.get(name)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                errors.append({"code": "must_be_string_array", "field": name})
        if errors:
            return _export_bad_request(errors)
        start = _parse_iso(payload["range_start"])
        end = _parse_iso(payload["range_end"])
        assert start is not None
        assert end is not None
        now = self._clock()
        earliest = datetime.fromtimestamp(now - EXPORT_MAX_AGE, UTC)
        if start < earliest:
            return _json_outcome(
                400,
                {"code": "invalid_date_range_exception", "message": f"Start date cannot be before {_iso_dt(earliest)}"},
            )
        if end < start:
            return _json_outcome(
                400, {"code": "invalid_date_range_exception", "message": "End date cannot be before start date"}
            )
        with self._lock:
            if payload["organization_id"] not in self._organizations:
                # 400, not the 404 of other routes: the spec declares no 404 for this one.
                return _org_not_found(payload["organization_id"], status=400)
            export = _Export(f"audit_log_export_{_ulid(now)}", payload["organization_id"], payload, now, now)
            self._exports[export.id] = export
        return _json_outcome(201, export.to_json(None))

    def _get_export(self, export_id: str) -> _Outcome:
        with self._lock:
            export = self._exports.get(export_id)
            if export is None:
                return _json_outcome(
                    404,
                    {"message": f"Audit Log Export not found: '{export_id}'.", "code": "entity_not_found"},
                )
            export.polls += 1
            now = self._clock()
            if export.csv is None and export.polls >= self.export_polls_until_ready:
                export.csv = self._export_csv(export)
                export.updated_at = now
            url = None
            if export.csv is not None:
                # Every fetch of a ready export mints a fresh URL valid 10 minutes, like the real one.
                token = secrets.token_urlsafe(16)
                self._export_tokens[token] = (export.id, now + EXPORT_URL_TTL)
                url = f"{self.url}exports/{token}.csv"
            return _json_outcome(200, export.to_json(url))

    def _export_csv(self, export: _Export) -> bytes:
        """The CSV of the export's matching events (called with the lock held), sorted by `occurred_at`."""
        filters = export.filters
        start = _parse_iso(filters["range_start"])
        end = _parse_iso(filters["range_end"])
        actions = set(filters.get("actions") or ())
        actor_names = set(filters.get("actor_names") or ()) | set(filters.get("actors") or ())
        actor_ids = set(filters.get("actor_ids") or ())
        target_types = set(filters.get("targets") or ())
        rows: list[tuple[datetime, ReceivedEvent]] = []
        for received in self._events:
            event = received.event
            occurred = _parse_iso(event["occurred_at"])
            if received.organization_id != export.organization_id or occurred is None:
                continue
            if (start is not None and occurred < start) or (end is not None and occurred > end):
                continue
            actor = event["actor"]
            if actions and event["action"] not in actions:
                continue
            if actor_names and actor.get("name") not in actor_names:
                continue
            if actor_ids and actor["id"] not in actor_ids:
                continue
            if target_types and not any(t["type"] in target_types for t in event["targets"]):
                continue
            rows.append((occurred, received))
        rows.sort(key=lambda row: row[0])
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(EXPORT_CSV_COLUMNS)
        for _occurred, received in rows:
            event = received.event
            actor = event["actor"]
            context = event["context"]
            writer.writerow(
                [
                    received.id,
                    received.organization_id,
                    event["action"],
                    event["occurred_at"],
                    event.get("version", ""),
                    actor["type"],
                    actor["id"],
                    actor.get("name") or "",
                    _json_cell(actor.get("metadata")),
                    _json_cell(event["targets"]),
                    context["location"],
                    context.get("user_agent") or "",
                    _json_cell(event.get("metadata")),
                    _iso(received.received_at),
                ]
            )
        return buffer.getvalue().encode()

    def _download_export(self, token: str) -> _Outcome:
        with self._lock:
            entry = self._export_tokens.get(token)
            if entry is None or self._clock() >= entry[1]:
                return _Outcome(403, b"Request has expired or the signature is invalid.", "text/plain")
            export = self._exports.get(entry[0])
            data = export.csv if export is not None else None
        if data is None:
            return _Outcome(404, b"Not Found", "text/plain")
        return _Outcome(200, data, "text/csv; charset=utf-8")

    # ------------------------------------------------------------------ actions and schemas

    def _create_schema(self, action_name: str, raw: bytes) -> _Outcome:
        payload = _parse_json(raw)
        if payload is _INVALID:
            return _invalid_json()
        errors = _validate_schema_request(payload)
        if errors:
            return _validation_failed(errors)
        now = self._clock()
        candidate = _Schema(0, payload["targets"], payload.get("actor"), payload.get("metadata"), now)
        with self._lock:
            action = self._actions.get(action_name)
            if action is None:
                action = self._actions[action_name] = _Action(action_name, now, now)
            latest = action.schemas[-1] if action.schemas else None
            if latest is not None and latest.shape() == candidate.shape():
                # Identical to the latest version: return it, no new version (201 all the same: the only
                # success the spec declares for this route).
                return _json_outcome(201, latest.to_json())
            candidate.version = len(action.schemas) + 1
            action.schemas.append(candidate)
            action.updated_at = now
            return _json_outcome(201, candidate.to_json())

    def _list_actions(self, query: str) -> _Outcome:
        with self._lock:
            items = [
                (
                    action.name,
                    {
                        "object": "audit_log_action",
                        "name": action.name,
                        "schema": action.schemas[-1].to_json(),
                        "created_at": _iso(action.created_at),
                        "updated_at": _iso(action.updated_at),
                    },
                )
                for action in self._actions.values()
                if action.schemas
            ]
        return _paginate(items, query)

    def _list_schemas(self, action_name: str, query: str) -> _Outcome:
        with self._lock:
            action = self._actions.get(action_name)
            if action is None:
                return _json_outcome(
                    404, {"message": f"Audit Log Action not found: '{action_name}'.", "code": "entity_not_found"}
                )
            items = [(str(schema.version), schema.to_json()) for schema in action.schemas]
        return _paginate(items, query)

    # ------------------------------------------------------------------ admin portal

    def _generate_link(self, raw: bytes) -> _Outcome:
        payload = _parse_json(raw)
        if payload is _INVALID:
            return _invalid_json()
        if not isinstance(payload, dict):
            return _validation_failed([{"code": "must_be_object", "field": "body"}])
        errors: list[dict[str, str]] = []
        _require_string(payload, "organization", "organization", errors)
        intent = payload.get("intent")
        if intent is None:
            errors.append({"code": "required", "field": "intent"})
        elif intent not in PORTAL_INTENTS:
            errors.append({"code": "invalid_intent", "field": "intent"})
        for name in ("return_url", "success_url", "external_user_id"):
            if payload.get(name) is not None and not isinstance(payload[name], str):
                errors.append({"code": "must_be_string", "field": name})
        if errors:
            return _validation_failed(errors)
        organization_id: str = payload["organization"]
        intent = str(intent)
        with self._lock:
            if organization_id not in self._organizations:
                return _org_not_found(organization_id)
            token = secrets.token_urlsafe(24)
            self._portal_links[token] = _PortalLink(organization_id, intent, self._clock() + PORTAL_LINK_TTL)
        return _json_outcome(201, {"link": f"{self.url}portal/{token}?intent={quote(intent)}"})

    def _portal_page(self, token: str, query: str) -> _Outcome:
        with self._lock:
            link = self._portal_links.get(token)
            valid = link is not None and self._clock() < link.expires_at
        if link is None or not valid:
            page = (
                "<!doctype html><title>Link expired</title><h1>This Admin Portal link is invalid or has expired.</h1>"
            )
            return _Outcome(404, page.encode(), "text/html; charset=utf-8")
        intent = parse_qs(query).get("intent", [link.intent])[0]
        page = (
            "<!doctype html><html><head><meta charset=utf-8><title>WorkOS Admin Portal (emulator)</title></head>"
            f"<body><h1>Admin Portal: {html.escape(intent)}</h1>"
            f"<p>Organization <code>{html.escape(link.organization_id)}</code></p></body></html>"
        )
        return _Outcome(200, page.encode(), "text/html; charset=utf-8")

    # ------------------------------------------------------------------ retention

    def _get_retention(self, organization_id: str) -> _Outcome:
        with self._lock:
            if organization_id not in self._organizations:
                return _org_not_found(organization_id)
            days = self._retention.get(organization_id)
        return _json_outcome(200, {"retention_period_in_days": days})

    def _set_retention(self, organization_id: str, raw: bytes) -> _Outcome:
        payload = _parse_json(raw)
        if payload is _INVALID:
            return _invalid_json()
        days: int | None = None
        if isinstance(payload, dict):
            value = payload.get("retention_period_in_days")
            period = payload.get("retention_period")
            if isinstance(value, int) and not isinstance(value, bool) and value in RETENTION_DAYS:
                days = value
            elif value is None and isinstance(period, str) and period in RETENTION_PERIODS:
                days = RETENTION_PERIODS[period]
        if days is None:
            return _validation_failed([{"code": "invalid_retention_period", "field": "retention_period_in_days"}])
        with self._lock:
            if organization_id not in self._organizations:
                return _org_not_found(organization_id)
            self._retention[organization_id] = days
        return _json_outcome(200, {"retention_period_in_days": days})


# ---------------------------------------------------------------------- HTTP layer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Benchmarks open many connections at once; the default backlog of 5 would drop SYNs.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: WorkOSEmulator) -> None:
        self.emulator = emulator
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn's, plus registering the connection so stop()/set_down() can end it.
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), name="workos-emulator-conn"
        )
        thread.daemon = True
        self.emulator._register_connection(request, thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        if self.emulator._unregister_connection(request):
            # SO_LINGER 0 then close() sends RST instead of FIN: the client sees "connection reset by peer".
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing (timeouts, resets, stop()) are normal here; anything else is an emulator bug.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        logger.error("WorkOS emulator connection error", exc_info=exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "WorkOSEmulator/1.0"
    sys_version = ""
    # The response is one write, but Nagle would still delay it behind the client's delayed ACK on keep-alive.
    disable_nagle_algorithm = True
    server: _Server
    header_map: dict[str, str]
    raw_requestline: bytes

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: a line per request on stderr would cost more than the request."""

    def parse_request(self) -> bool:
        """A lean replacement for the base class's: `http.client.parse_headers` (the email package) costs ~170 us
        per request, most of the server's time; this costs ~5. Headers land in `header_map`, names lower-cased;
        `self.headers` is not set. No obsolete line folding, as no HTTP/1.1 client sends it."""
        self.command = ""
        # Not the base class's HTTP/0.9 default: error answers to garbage still get a status line.
        self.request_version = "HTTP/1.0"
        self.close_connection = True  # until the request is known to be well-formed
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request syntax")
            return False
        self.command, self.path, self.request_version = words
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if len(line) > 65536 or len(headers) >= 100 or not colon:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE if colon else HTTPStatus.BAD_REQUEST)
                return False
            headers[name.strip().lower()] = value.strip()
        self.header_map = headers
        connection = headers.get("connection", "").lower()
        if self.request_version == "HTTP/1.0":
            self.close_connection = connection != "keep-alive"
        else:
            self.close_connection = connection == "close"
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _serve(self) -> None:
        emulator = self.server.emulator
        headers = self.header_map
        too_large = unread = False
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            self._write(_json_outcome(411, {"message": "Length Required"}, close=True))
            return
        length_header = headers.get("content-length")
        if length_header is not None:
            try:
                length = int(length_header)
                if length < 0:
                    raise ValueError(length_header)
            except ValueError:
                self._write(_json_outcome(400, {"message": "Invalid Content-Length"}, close=True))
                return
            if length > emulator.max_body_bytes:
                too_large = True
                # Read and drop the body: closing a socket with unread input makes the kernel send RST, and the
                # client would see "connection reset" instead of the 413. Absurd sizes are not worth reading.
                unread = length > _DRAIN_LIMIT
                if not unread:
                    self._discard(length)
            elif length:
                body = self.rfile.read(length)
        outcome = emulator._handle(self.command, self.path, headers, body, too_large)
        if unread:
            outcome.close = True  # whatever the answer, the unread body would desynchronise the connection
        if outcome.action == "reset":
            emulator._mark_reset(self.connection)
            self.close_connection = True
            return
        if outcome.action == "stall":
            emulator._sleep(outcome.stall_seconds)
        self._write(outcome)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                return
            length -= len(chunk)

    def _write(self, outcome: _Outcome) -> None:
        status = outcome.status
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {_http_date()}",
            f"Content-Type: {outcome.content_type}",
            f"Content-Length: {len(outcome.body)}",
            f"X-Request-ID: {self.server.emulator._next_request_id()}",
        ]
        lines.extend(f"{name}: {value}" for name, value in outcome.headers)
        if outcome.close or self.close_connection:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + outcome.body)
        except OSError:  # the client gave up (timeout) or the emulator is stopping
            self.close_connection = True


# ---------------------------------------------------------------------- validation


def _validate_event_request(payload: Any) -> list[dict[str, str]]:
    """The request DTO checks that answer 422 `Validation failed.` with `[{code, field}]`."""
    if not isinstance(payload, dict):
        return [{"code": "must_be_object", "field": "body"}]
    errors: list[dict[str, str]] = []
    _require_string(payload, "organization_id", "organization_id", errors)
    event = payload.get("event")
    if event is None:
        errors.append({"code": "required", "field": "event"})
        return errors
    if not isinstance(event, dict):
        errors.append({"code": "must_be_object", "field": "event"})
        return errors
    _require_string(event, "action", "event.action", errors)
    occurred_at = event.get("occurred_at")
    if occurred_at is None:
        errors.append({"code": "required", "field": "event.occurred_at"})
    elif not isinstance(occurred_at, str) or not _RFC3339.fullmatch(occurred_at) or _parse_iso(occurred_at) is None:
        # The spec's `format: date-time` (RFC 3339): a date alone or a time without its offset is refused.
        errors.append({"code": "must_be_iso8601", "field": "event.occurred_at"})
    version = event.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        errors.append({"code": "must_be_positive_integer", "field": "event.version"})
    _validate_entity(event.get("actor"), "event.actor", errors)
    targets = event.get("targets")
    if targets is None:
        errors.append({"code": "required", "field": "event.targets"})
    elif not isinstance(targets, list):
        errors.append({"code": "must_be_array", "field": "event.targets"})
    else:
        for index, target in enumerate(targets):
            _validate_entity(target, f"event.targets.{index}", errors)
    context = event.get("context")
    if context is None:
        errors.append({"code": "required", "field": "event.context"})
    elif not isinstance(context, dict):
        errors.append({"code": "must_be_object", "field": "event.context"})
    else:
        _require_string(context, "location", "event.context.location", errors)
        _optional_string(context, "user_agent", "event.context.user_agent", errors)
    return errors


def _validate_entity(entity: Any, where: str, errors: list[dict[str, str]]) -> None:
    if entity is None:
        errors.append({"code": "required", "field": where})
    elif not isinstance(entity, dict):
        errors.append({"code": "must_be_object", "field": where})
    else:
        _require_string(entity, "id", f"{where}.id", errors)
        _require_string(entity, "type", f"{where}.type", errors)
        _optional_string(entity, "name", f"{where}.name", errors)


def _require_string(obj: dict[str, Any], key: str, where: str, errors: list[dict[str, str]]) -> None:
    value = obj.get(key)
    if value is None:
        errors.append({"code": "required", "field": where})
    elif not isinstance(value, str):
        errors.append({"code": "must_be_string", "field": where})
    elif not value:
        errors.append({"code": "must_not_be_empty", "field": where})


def _optional_string(obj: dict[str, Any], key: str, where: str, errors: list[dict[str, str]]) -> None:
    # Absent is fine; present must be a string: the spec's `type: string` refuses null too.
    if key in obj and not isinstance(obj[key], str):
        errors.append({"code": "must_be_string", "field": where})


def _validate_event_metadata(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The metadata rules (event, actor, each target) that answer 400 with ajv-style `instancePath` errors."""
    problems: list[dict[str, Any]] = []
    _check_metadata(event.get("metadata"), "/metadata", problems)
    _check_metadata(event["actor"].get("metadata"), "/actor/metadata", problems)
    for index, target in enumerate(event["targets"]):
        _check_metadata(target.get("metadata"), f"/targets/{index}/metadata", problems)
    return problems


def _check_metadata(metadata: Any, where: str, problems: list[dict[str, Any]]) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        problems.append(_ajv(where, "type", {"type": "object"}, "must be object"))
        return
    if len(metadata) > METADATA_MAX_KEYS:
        problems.append(
            _ajv(where, "maxProperties", {"limit": METADATA_MAX_KEYS}, "must NOT have more than 50 properties")
        )
    for key, value in metadata.items():
        if not METADATA_KEY.fullmatch(key):
            problems.append(
                _ajv(where, "additionalProperties", {"additionalProperty": key}, "must NOT have additional properties")
            )
            continue
        path = f"{where}/{_json_pointer(key)}"
        if isinstance(value, str):
            # The API is JavaScript: a string's length is in UTF-16 code units (an emoji counts 2).
            if len(value.encode("utf-16-le")) // 2 > METADATA_MAX_VALUE_LENGTH:
                problems.append(
                    _ajv(
                        path,
                        "maxLength",
                        {"limit": METADATA_MAX_VALUE_LENGTH},
                        "must NOT have more than 500 characters",
                    )
                )
        elif not isinstance(value, (bool, int, float)):
            problems.append(_ajv(path, "anyOf", {}, "must be string, number or boolean"))


def _validate_against_schema(event: dict[str, Any], schema: _Schema | None) -> list[dict[str, Any]]:
    """An action's registered schema: each schema target type must appear among the event's targets, and each
    metadata object must satisfy its JSON Schema (a subset: type, properties, required, additionalProperties,
    enum, maxLength)."""
    if schema is None:
        return []
    problems: list[dict[str, Any]] = []
    types = [t.get("type") for t in event["targets"]]
    for index, target_schema in enumerate(schema.targets):
        wanted = target_schema.get("type")
        if wanted not in types:
            problems.append(
                {
                    "instancePath": "/targets",
                    "schemaPath": f"#/properties/targets/allOf/{index}/contains",
                    "keyword": "contains",
                    "params": {"type": wanted},
                    "message": f"must contain a target of type {wanted!r}",
                }
            )
    _check_json_schema(event.get("metadata") or {}, schema.metadata, "/metadata", problems)
    if schema.actor is not None:
        _check_json_schema(
            event["actor"].get("metadata") or {}, schema.actor.get("metadata"), "/actor/metadata", problems
        )
    for target_schema in schema.targets:
        for index, target in enumerate(event["targets"]):
            if target.get("type") == target_schema.get("type"):
                _check_json_schema(
                    target.get("metadata") or {}, target_schema.get("metadata"), f"/targets/{index}/metadata", problems
                )
    return problems


_JSON_SCHEMA_TYPES: Final[dict[str, Callable[[Any], bool]]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def _check_json_schema(value: Any, schema: Any, where: str, problems: list[dict[str, Any]]) -> None:
    if not isinstance(schema, dict):
        return
    expected = schema.get("type")
    if isinstance(expected, str) and expected in _JSON_SCHEMA_TYPES and not _JSON_SCHEMA_TYPES[expected](value):
        problems.append(_ajv(where, "type", {"type": expected}, f"must be {expected}"))
        return
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        problems.append(
            _ajv(where, "enum", {"allowedValues": schema["enum"]}, "must be equal to one of the allowed values")
        )
    max_length = schema.get("maxLength")
    if isinstance(value, str) and isinstance(max_length, int) and len(value) > max_length:
        problems.append(
            _ajv(where, "maxLength", {"limit": max_length}, f"must NOT have more than {max_length} characters")
        )
    if isinstance(value, dict):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        for name in schema.get("required") or ():
            if name not in value:
                problems.append(
                    _ajv(where, "required", {"missingProperty": name}, f"must have required property '{name}'")
                )
        for name, item in value.items():
            if name in properties:
                _check_json_schema(item, properties[name], f"{where}/{_json_pointer(name)}", problems)
            elif schema.get("additionalProperties") is False:
                problems.append(
                    _ajv(
                        where,
                        "additionalProperties",
                        {"additionalProperty": name},
                        "must NOT have additional properties",
                    )
                )


def _validate_schema_request(payload: Any) -> list[dict[str, str]]:
    if not isinstance(payload, dict):
        return [{"code": "must_be_object", "field": "body"}]
    errors: list[dict[str, str]] = []
    targets = payload.get("targets")
    if targets is None:
        errors.append({"code": "required", "field": "targets"})
    elif not isinstance(targets, list) or not targets:
        errors.append({"code": "must_be_non_empty_array", "field": "targets"})
    else:
        for index, target in enumerate(targets):
            if not isinstance(target, dict):
                errors.append({"code": "must_be_object", "field": f"targets.{index}"})
                continue
            _require_string(target, "type", f"targets.{index}.type", errors)
            if target.get("metadata") is not None and not isinstance(target["metadata"], dict):
                errors.append({"code": "must_be_object", "field": f"targets.{index}.metadata"})
    actor = payload.get("actor")
    if actor is not None and not (isinstance(actor, dict) and isinstance(actor.get("metadata"), dict)):
        errors.append({"code": "must_be_object", "field": "actor.metadata"})
    if payload.get("metadata") is not None and not isinstance(payload["metadata"], dict):
        errors.append({"code": "must_be_object", "field": "metadata"})
    return errors


# ---------------------------------------------------------------------- helpers

_INVALID: Final = object()


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; the API's JSON.parse does not.
    raise ValueError(name)


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return _INVALID


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _canonical(obj: Any) -> str:
    """Key order and whitespace never make two requests "different" for idempotency."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _json_cell(value: Any) -> str:
    return "" if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _ajv(instance_path: str, keyword: str, params: dict[str, Any], message: str) -> dict[str, Any]:
    return {"instancePath": instance_path, "keyword": keyword, "params": params, "message": message}


def _json_outcome(
    status: int, body: Any, *, headers: tuple[tuple[str, str], ...] = (), close: bool = False
) -> _Outcome:
    return _Outcome(status, _json_bytes(body), _JSON_TYPE, headers, close=close)


def _default_error_body(status: int) -> dict[str, Any]:
    if status in _DEFAULT_ERROR_BODIES:
        return dict(_DEFAULT_ERROR_BODIES[status])
    try:
        return {"message": HTTPStatus(status).phrase}
    except ValueError:
        return {"message": "Error"}


def _validation_failed(errors: list[dict[str, str]]) -> _Outcome:
    return _json_outcome(422, {"message": "Validation failed.", "code": "invalid_request_parameters", "errors": errors})


def _invalid_json() -> _Outcome:
    return _json_outcome(400, {"message": "Request body is not valid JSON.", "code": "invalid_json"})


def _export_bad_request(errors: list[dict[str, str]]) -> _Outcome:
    """POST /audit_logs/exports declares no 422: its invalid parameters answer the spec's 400 alternative
    `{message: [...], error: "Bad Request"}` (NestJS's validation shape), one message per `{code, field}`."""
    messages = [f"{error['field']}: {error['code']}" for error in errors]
    return _json_outcome(400, {"message": messages, "error": "Bad Request", "code": "invalid_request_parameters"})


def _org_not_found(organization_id: str, *, status: int = 404) -> _Outcome:
    return _json_outcome(
        status,
        {
            "message": f"Organization not found: '{organization_id}'.",
            "code": "entity_not_found",
            "entity_id": organization_id,
        },
    )


def _paginate(items: list[tuple[str, dict[str, Any]]], query: str) -> _Outcome:
    """The API's list envelope over `(cursor, object)` pairs in creation order: `limit` (1-100, default 10),
    `order` (`desc` default), `before` / `after` cursors; `list_metadata.after` is set when more follow."""
    params = {name: values[-1] for name, values in parse_qs(query).items()}
    errors: list[dict[str, str]] = []
    limit = 10
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            errors.append({"code": "must_be_between_1_and_100", "field": "limit"})
    order = params.get("order", "desc")
    if order not in ("asc", "desc", "normal"):
        errors.append({"code": "invalid_order", "field": "order"})
    if errors:
        return _validation_failed(errors)
    ordered = items[::-1] if order == "desc" else list(items)
    cursors = [cursor for cursor, _ in ordered]
    start, stop = 0, len(ordered)
    if params.get("after") in cursors:
        start = cursors.index(params["after"]) + 1
    elif params.get("before") in cursors:
        stop = cursors.index(params["before"])
        start = max(0, stop - limit)
    page = ordered[start : min(stop, start + limit)]
    end = start + len(page)
    return _json_outcome(
        200,
        {
            "object": "list",
            "data": [obj for _, obj in page],
            "list_metadata": {
                "before": page[0][0] if page and start > 0 else None,
                "after": page[-1][0] if page and end < len(ordered) else None,
            },
        },
    )


_RFC3339: Final = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _parse_iso(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso_dt(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(timestamp: float) -> str:
    return _iso_dt(datetime.fromtimestamp(timestamp, UTC))


def _ulid(now: float) -> str:
    """A ULID (48-bit millisecond time, 80 random bits, Crockford base32), the shape of WorkOS ids."""
    value = (int(now * 1000) & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    # formatdate costs a few microseconds; one per second is enough.
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]
