"""The dispatcher: everything after the hand-off, in background threads, independent of any event loop.

    request path ──submit()──► deque ──committer thread──► build/enrich/validate/redact ──► outbox (group commit)
                                                  sender thread per sink ◄── claim due rows ◄──┘
                                                  └─► sink.send (bounded pool, rate limit) ──► settle

`submit()` is the only method the request path calls: an append to a deque (atomic in CPython), no lock, no
wake-up, never raises. The committer polls every `commit_interval` (50 ms): that interval is the whole window a
SIGKILL can lose. Every later step works from the outbox on disk, so outages, restarts and crashes lose nothing.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..context import PendingEvent, RequestContext
from ..events import AuditEvent, EventError, new_event_id
from ..sinks.base import PauseDelivery, RejectEvent, RetryLater, Sink
from .builder import EventBuilder
from .durable import Durable
from .forking import after_fork_in_child
from .location import is_postgres_url, spill_prefix
from .lock import SenderLock
from .outbox import Claim, Outbox, OutboxStats, open_outbox
from .policy import RateLimiter, RetryPolicy
from .spill import Spill

if TYPE_CHECKING:
    from .pg_outbox import PostgresOutbox, PostgresRateLimiter

__all__ = ["OPEN_RETRY", "Dispatcher", "DispatcherConfig", "sink_rate_limits"]

#: Seconds before an outbox that could not be opened is tried again.
OPEN_RETRY = 5.0

logger = logging.getLogger("centure_audit_middleware.delivery")


class _Deferred(Exception):
    """Not attempted (the sink asked everyone to wait): handed back without counting an attempt."""


class _QuietLog:
    """At most one line per reason per interval, and never re-entered from inside a log call: an app that routes
    `logging` into a failing handler (or into something that records audit events) can't make us recurse."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._guard = threading.local()

    def __call__(self, level: int, reason: str, message: str, *args: Any) -> None:
        if getattr(self._guard, "active", False):
            return
        now = time.monotonic()
        if now - self._last.get(reason, -1e18) < self.interval:
            return
        self._last[reason] = now
        self._guard.active = True
        try:
            logger.log(level, message, *args)
        except Exception:  # a broken handler must not break delivery
            pass
        finally:
            self._guard.active = False


@dataclass(slots=True)
class DispatcherConfig:
    outbox_path: str
    commit_interval: float = 0.05
    max_queue: int = 100_000
    batch_size: int = 256
    lease: float = 60.0
    poll_interval: float = 1.0
    probe_interval: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: sink name -> (requests, period seconds)
    rate_limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    log_interval: float = 60.0
    #: Where events are delivered: "in-process" (this process commits and, while it holds the outbox's sender lock,
    #: sends); "relay" (this process only commits, for every sink: `centure-audit relay` sends); "sender" (what the
    #: relay runs: no committer, only senders).
    delivery: str = "in-process"
    #: how often a process that doesn't hold the sender lock tries to take it (the take-over delay when it dies)
    standby_interval: float = 0.5
    #: Past this many events waiting in the hand-off queue (a burst faster than the committer), the handing-off
    #: thread builds the event itself and appends it to the spill file, so that memory stays bounded.
    spill_at: int = 10_000


def sink_rate_limits(
    sinks: Sequence[Sink], overrides: Mapping[str, tuple[int, float] | None] | None = None
) -> dict[str, tuple[int, float]]:
    """Each sink's rate limit: `overrides` by sink name (None: no limit), else the sink's `default_rate_limit`."""
    limits = dict(overrides or {})
    for sink in sinks:
        default_limit = getattr(sink, "default_rate_limit", None)
        if default_limit is not None:
            limits.setdefault(sink.name, default_limit)
    return {name: limit for name, limit in limits.items() if limit is not None}


def _is_captured(body: str) -> bool:
    return body.startswith(('{"captured":1', '{"captured": 1'))


def _parse(claim: Claim) -> AuditEvent | RejectEvent:
    """The claimed row's event, or why it is not one: a replayed dead letter of an event that could never be built
    (no organization, say: its body says why, under "error") is dead-lettered again with that reason, never sent
    and never retried forever."""
    try:
        data = json.loads(claim.body)
        error = data.get("error")
        if error is None:
            return AuditEvent.from_dict(data)
        reason = f"not a deliverable event ({error})"
    except Exception as exc:
        reason = f"not a deliverable event: {exc!r}"
    return RejectEvent(reason[:500])


def _joined_write(
    write: Callable[[Any, Sequence[AuditEvent], Sequence[str]], None],
    events: Sequence[AuditEvent],
    bodies: Sequence[str],
) -> Callable[[Any], None]:
    """A joined sink's write of one group, for the outbox to run on its transaction's connection."""
    return lambda conn: write(conn, events, bodies)


def _timeout(sink: Sink) -> float:
    """How long one send may take (the sink's own request timeout, when it has one)."""
    timeout = getattr(sink, "timeout", None)
    return float(timeout) if isinstance(timeout, int | float) else 0.0


@dataclass(slots=True)
class _Write:
    """Rows waiting to be committed to the outbox: events pending for `sinks`, and dead letters of theirs."""

    rows: list[tuple[str, float, str]]
    sinks: list[str]
    dead: list[tuple[str, float, str, str]]
    #: the rows' bodies are captured events (relay mode), for the relay to complete
    captured: bool = False
    #: writes of inline sinks that live in the outbox's database, committed in the same transaction...
    also: list[Callable[[Any], None]] = field(default_factory=list)
    #: ...and those sinks' names (if the joined transaction fails, the rows are owed to them through the outbox)
    joined: list[str] = field(default_factory=list)


class _SinkState:
    def __init__(self, sink: Sink, limiter: RateLimiter | PostgresRateLimiter | None) -> None:
        self.sink = sink
        self.limiter = limiter
        self.wake = threading.Event()
        self.paused = False
        self.not_before = 0.0
        #: transient failures in a row: the whole sink backs off (an outage must not cost a try per new event)
        self.failures = 0
        self.sent = 0
        self.retried = 0
        self.dead = 0
        self.pool: ThreadPoolExecutor | None = None
        self.ensure_pool()

    def ensure_pool(self) -> None:
        if self.pool is None and self.sink.concurrency > 1:
            self.pool = ThreadPoolExecutor(self.sink.concurrency, f"centure-audit-{self.sink.name}")


class Dispatcher:
    def __init__(self, sinks: Sequence[Sink], builder: EventBuilder, config: DispatcherConfig) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique (they key delivery state in the outbox): {names}")
        self.sinks = list(sinks)
        self.builder = builder
        self.config = config
        self._log = _QuietLog(config.log_interval)
        self._max_queue = config.max_queue
        self._outbox: Outbox | PostgresOutbox | None = None
        self._open_failure: tuple[float, Exception] | None = None  # when opening the outbox last failed, and why
        if config.delivery not in ("in-process", "relay", "sender"):
            raise ValueError(f"delivery must be 'in-process' or 'relay', not {config.delivery!r}")
        self._commits = config.delivery != "sender"
        self._sends = config.delivery != "relay"
        self._captures = config.delivery == "relay"
        self._completing = threading.Lock()  # one sender thread at a time completes captured events
        #: a PostgreSQL outbox: any number of processes send at once (SKIP LOCKED), no sender lock
        self._shared = is_postgres_url(config.outbox_path)
        self._outbox_errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
        if self._shared:
            import psycopg

            self._outbox_errors += (psycopg.Error,)
        self._sender_lock = SenderLock(config.outbox_path) if not self._shared else None
        self._spill = Spill(spill_prefix(config.outbox_path) if self._shared else config.outbox_path)
        self._spill_at = min(config.spill_at, config.max_queue)
        self._init_state()
        after_fork_in_child(self, Dispatcher._after_fork_in_child)

    def _init_state(self) -> None:
        self._queue: deque[RequestContext | PendingEvent] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._committed = threading.Condition(threading.Lock())
        self._running = False
        self._pid = os.getpid()
        self._threads: list[threading.Thread] = []
        self._recorded = 0
        self._drained = 0
        self._in_progress = 0
        self._spooled = 0
        self._dropped: Counter[str] = Counter()
        self._pending_writes: deque[_Write] = deque()
        #: durable-before-response groups, committed first in the next round (which they wake at once)
        self._durable: deque[tuple[list[RequestContext | PendingEvent], Durable]] = deque()
        self._spilled = 0  # events this process spilled, in all
        self._spilled_waiting = 0  # of those, not yet moved into the outbox
        self._orphans_due = True  # look for spill files left by dead processes in the next round
        self._states = {s.name: _SinkState(s, self._limiter(s.name)) for s in self.sinks}
        inline = self.config.delivery == "in-process"  # in relay mode the relay delivers every sink
        self._inline_states = [self._states[s.name] for s in self.sinks if s.inline and inline]
        self._remote_names = [s.name for s in self.sinks if not (s.inline and inline)]
        self._sink_names = [s.name for s in self.sinks]
        #: inline sinks writing in the outbox's own transaction (a PostgreSQL store in the outbox's database), by
        #: name: found once the outbox is open (None: not looked for yet)
        self._joined: dict[str, Callable[[Any, Sequence[AuditEvent], Sequence[str]], None]] | None = None

    def _limiter(self, name: str) -> RateLimiter | PostgresRateLimiter | None:
        limit = self.config.rate_limits.get(name)
        if limit is None:
            return None
        if self._shared:  # the API limits per key, not per process: the fleet shares one bucket
            from .pg_outbox import PostgresRateLimiter

            return PostgresRateLimiter(lambda: self.outbox, name, *limit)  # type: ignore[arg-type,return-value]
        return RateLimiter(*limit)

    @property
    def outbox(self) -> Outbox | PostgresOutbox:
        if self._outbox is None:
            with self._lock:
                if self._outbox is None:
                    # An outbox that could not be opened (a database away: each attempt waits for its connect
                    # timeout) is not tried again for a moment: `stats()` and every thread would each wait again.
                    failed = self._open_failure
                    if failed is not None and time.monotonic() - failed[0] < OPEN_RETRY:
                        raise failed[1]
                    role = "relay" if self.config.delivery == "sender" else "app"
                    try:
                        self._outbox = open_outbox(self.config.outbox_path, role=role)
                    except Exception as exc:
                        self._open_failure = (time.monotonic(), exc)
                        raise
                    self._open_failure = None
        return self._outbox

    # -- the request path ----------------------------------------------------------------------------------------
    def submit(self, item: RequestContext | PendingEvent) -> None:
        """Hand an event to the pipeline. Never blocks, never raises."""
        queue = self._queue
        if self._running and len(queue) < self._spill_at:
            queue.append(item)  # deque.append is atomic in CPython: no lock on the request path
            return
        self._submit_slow(item)

    def submit_durable(self, items: list[RequestContext | PendingEvent]) -> Durable:
        """Hand events off to be committed now (never spilled): the returned `Durable` is settled once they are in
        the outbox (or the inline sinks), or could not be. Never blocks, never raises."""
        durable = Durable()
        try:
            if not self._running:
                self.start()
            self._durable.append((items, durable))
            self._wake.set()  # not at the next interval: a response waits for this
        except Exception as exc:  # pragma: no cover - last line of defence for the request path
            self._log(logging.ERROR, "handoff", "audit hand-off failed: %r", exc)
            durable.settle(False)
        return durable

    def _submit_slow(self, item: RequestContext | PendingEvent) -> None:
        try:
            if not self._running:
                self.start()
            if len(self._queue) >= self._spill_at and self._spill_one(item):
                return
            if len(self._queue) >= self._max_queue:
                self._drop("queue_full")
                return
            self._queue.append(item)
        except Exception as exc:  # pragma: no cover - last line of defence for the request path
            self._drop("handoff_error")
            self._log(logging.ERROR, "handoff", "audit hand-off failed: %r", exc)

    def _spill_one(self, item: RequestContext | PendingEvent) -> bool:
        """Build `item` here and append it to the spill file (a burst: the committer is behind); False to queue it."""
        try:
            if self._captures:
                event_id, body = self.builder.capture(item)
            else:
                event = self.builder.build(item)
                event_id, body = event.id, event.to_json()
        except Exception:
            return False  # the committer dead-letters it, with the reason, from the queue
        if not self._spill.write(event_id, time.time(), body):
            return False
        with self._committed:
            self._spilled += 1
            self._spilled_waiting += 1
        self._wake.set()
        return True

    def _drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += count
        self._log(logging.ERROR, f"drop:{reason}", "audit events dropped (%s); see auditor.stats()", reason)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._running and self._pid == os.getpid():
                return
            if self._pid != os.getpid():  # forked without our hook having run (e.g. os.fork in a C extension)
                self._after_fork_in_child()
            self._stop.clear()
            for state in self._states.values():
                state.ensure_pool()
            self._threads = []
            if self._commits:
                self._threads.append(
                    threading.Thread(target=self._commit_loop, name="centure-audit-commit", daemon=True)
                )
            if self._sends:
                self._threads += [
                    threading.Thread(
                        target=self._send_loop, args=(state,), name=f"centure-audit-send-{name}", daemon=True
                    )
                    for name, state in self._states.items()
                ]
            for thread in self._threads:
                thread.start()
            self._running = True

    def _after_fork_in_child(self) -> None:
        # The child inherits the parent's queue (the parent will commit those itself), locks possibly held by
        # threads that no longer exist, and SQLite connections it must not touch. Start over with none of them.
        if self._outbox is not None:
            self._outbox.forget_connections()
        self._init_state()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is committed and delivered to every sink (or dead-lettered).
        Returns False if the deadline passed first (events stay in the outbox; nothing is lost)."""
        if not self._running:
            if not self._queue and self._outbox_empty() and not self._spill.has_orphans():
                return True
            self.start()  # a backlog left by an earlier run (restart after a crash or an outage)
        deadline = time.monotonic() + timeout
        if not self._wait_committed(deadline):
            return False
        if not self._sends:
            return True  # relay mode: committed to the outbox is this process's whole part; the relay delivers
        for state in self._states.values():
            state.wake.set()
        while not self._outbox_empty():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _wait_committed(self, deadline: float) -> bool:
        with self._committed:
            # (a copy first: request threads append meanwhile; they are counted in _drained once committed)
            waiting_durable = sum(len(items) for items, _ in list(self._durable))
            target = self._drained + self._in_progress + len(self._queue) + waiting_durable
            self._wake.set()
            while self._drained < target or self._pending_writes or self._spilled_waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._committed.wait(min(remaining, 0.05))
                self._wake.set()
        return True

    def _outbox_empty(self) -> bool:
        if self._outbox is None and not self._shared and not os.path.exists(self.config.outbox_path):
            return True  # never written here nor by anyone: nothing owed (and no file made to say so)
        try:
            return not any(self.outbox.has_pending(name) for name in self._states)
        except self._outbox_errors as exc:  # unreadable outbox: not known to be empty, and flush() must not raise
            self._log(logging.ERROR, "outbox", "audit outbox unavailable: %r", exc)
            return False

    def close(self, timeout: float = 5.0, *, close_sinks: bool = True) -> bool:
        """Flush within `timeout`, then stop the threads and hand back this process's leases; undelivered events
        stay in the outbox for next time. A later event starts everything again (with `close_sinks=False`, on the
        same sinks)."""
        if not self._running and not self._queue and self._outbox is None:
            # Never started (or already closed): nothing to flush and no file to open; the sinks may still be open
            # after a close(close_sinks=False), e.g. the app's lifespan shutdown, then the interpreter's exit.
            if close_sinks:
                self._close_sinks()
            return True
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout) if self._running or self._queue else True
        self._stop.set()
        self._wake.set()
        for state in self._states.values():
            state.wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                # Within what is left of `timeout` (a server's graceful shutdown counts on it): a sender still waiting
                # on a slow endpoint is left behind, its rows' leases released below, so the next start resends them
                # under the same idempotency keys.
                thread.join(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        self._commit_once()  # anything submitted during the join
        for state in self._states.values():
            if state.pool is not None:
                state.pool.shutdown(wait=False, cancel_futures=True)
                state.pool = None  # start() makes a new one
        self._running = False
        if self._outbox is not None:
            try:
                self._outbox.release_leases()
            except Exception as exc:  # a read-only or vanished file: the leases simply expire
                self._log(logging.WARNING, "release", "could not release outbox leases: %r", exc)
            self._outbox.close()
            self._outbox = None  # reopened on the next event, if any
        if self._sender_lock is not None:
            self._sender_lock.release()
        if close_sinks:
            self._close_sinks()
        return flushed

    def _close_sinks(self) -> None:
        for sink in self.sinks:  # each sink's close() is idempotent (the Sink contract)
            try:
                sink.close()
            except Exception as exc:
                self._log(logging.WARNING, f"close:{sink.name}", "closing sink %s failed: %r", sink.name, exc)

    # -- committer -----------------------------------------------------------------------------------------------
    def _commit_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.commit_interval)
            self._wake.clear()
            try:
                if self._commit_once():
                    for state in self._states.values():
                        state.wake.set()
                if not self._queue:  # nothing waits: the inline sinks' deferred work (the store's text index)
                    for state in self._inline_states:
                        state.sink.idle()
            except Exception as exc:
                self._log(logging.ERROR, "commit", "audit commit loop error: %r", exc)

    def _commit_once(self) -> int:
        queue = self._queue
        items: list[RequestContext | PendingEvent] = []
        waiting: list[Durable] = []
        with self._committed:  # so that flush() never sees an item neither queued nor counted
            while self._durable:
                batch, durable = self._durable.popleft()
                items += batch
                waiting.append(durable)
            # Groups of at most 1,000: a larger group saves little (one fsync each) and holds more built events.
            while queue and len(items) < 1_000:
                items.append(queue.popleft())
            self._in_progress = len(items)
        events: list[AuditEvent] = []
        rows: list[tuple[str, float, str]] = []
        dead: list[tuple[str, float, str, str]] = []
        now = time.time()
        for item in items:
            try:
                if self._captures:
                    # Relay mode: commit what is known, redacted; the relay fits, enriches and validates it.
                    event_id, body = self.builder.capture(item)
                    rows.append((event_id, now, body))
                    continue
                event = self.builder.build(item)
            except EventError as exc:
                dead.append(self._dead_row(item, str(exc)))
                self._log(logging.WARNING, "invalid", "audit event rejected: %s", exc)
                continue
            except Exception as exc:  # a user callable (target/metadata resolver) failed
                dead.append(self._dead_row(item, f"event could not be built: {exc!r}"))
                self._log(logging.ERROR, "build", "audit event could not be built: %r", exc)
                continue
            events.append(event)
            # recorded_at is when we took responsibility (the idempotency window's start), not when it occurred.
            rows.append((event.id, now, event.to_json()))
        joined = self._joined_writers() if events and not self._captures else {}
        # (empty while the outbox can't be opened: the group then waits in memory like any other, below)
        if rows and self._captures:
            # Relay mode: the event rows alone; the relay adds each one's deliveries when it completes it.
            self._pending_writes.append(_Write(rows, [], [], captured=True))
        elif rows and (self._remote_names or joined):
            # First durable for the senders' sinks, then to the inline ones: a crash in between costs an inline
            # sink (the local store) at most this group, never a remote one (WorkOS) an event the store has. An
            # inline sink in the outbox's own database (PostgreSQL) writes in the very same transaction instead.
            bodies = [body for _, _, body in rows]
            also = [_joined_write(write, events, bodies) for write in joined.values()]
            self._pending_writes.append(_Write(rows, self._remote_names, [], also=also, joined=list(joined)))
        if dead:  # an event that could not be built is dead for every sink
            self._pending_writes.append(_Write([], self._sink_names, dead))
        count = self._write_pending()
        for state in self._inline_states:
            if events and state.sink.name not in joined:
                self._deliver_inline(state, events, rows, now)
        count += self._write_pending()
        if waiting:
            # Committed when nothing is left waiting for the outbox: this group's rows were written (and any older
            # group held back by an unavailable outbox, which would be written first, was too).
            committed = not self._pending_writes
            for durable in waiting:
                durable.settle(committed)
        if (self._spilled_waiting or self._orphans_due) and not queue:
            # Only once what was handed off before the spill is committed: the oldest events go out first.
            self._move_spill(now)
        with self._committed:
            self._drained += len(items)
            self._recorded += len(items)
            self._in_progress = 0
            self._committed.notify_all()
        return count

    def _move_spill(self, now: float) -> None:
        """Move spilled events into the outbox (and to the inline sinks); a file goes once its rows are committed."""
        own = self._spill.take()
        taken = ([own] if own is not None else []) + (self._spill.orphans() if self._orphans_due else [])
        paths = list(dict.fromkeys(taken))  # (a file whose move failed is both ours and held: moved once)
        self._orphans_due = False
        for path in paths:
            moved = 0
            for rows in self._spill.read(path):
                captured = [row for row in rows if _is_captured(row[2])]
                if captured:  # spilled in relay mode: for the relay, like any captured event
                    rows = [row for row in rows if not _is_captured(row[2])]
                    self._pending_writes.append(_Write(captured, [], [], captured=True))
                if self._remote_names and rows:
                    self._pending_writes.append(_Write(rows, self._remote_names, []))
                    self._write_pending()
                    if self._pending_writes:  # the outbox is unavailable: the file stays, to be taken again
                        self._orphans_due = True
                        return
                if self._pending_writes:  # (the captured rows' write) the outbox is unavailable: try again later
                    self._write_pending()
                    if self._pending_writes:
                        self._orphans_due = True
                        return
                if self._inline_states and rows:
                    events = [AuditEvent.from_json(body) for _, _, body in rows]
                    for state in self._inline_states:
                        self._deliver_inline(state, events, rows, now)
                    self._write_pending()
                moved += len(rows) + len(captured)  # (captured ones too: a relay-mode flush() waits for them)
            self._spill.remove(path)
            if self._spill.is_own(path):  # (another process's rows were counted there)
                with self._committed:
                    self._spilled_waiting = max(0, self._spilled_waiting - moved)
                    self._recorded += moved
                    self._committed.notify_all()

    def _deliver_inline(
        self, state: _SinkState, events: list[AuditEvent], rows: list[tuple[str, float, str]], now: float
    ) -> None:
        """Hand the group to an inline sink now; what it can't take goes to the outbox for its sender."""
        try:
            outcomes = state.sink.send_encoded(events, [body for _, _, body in rows])
        except Exception as exc:  # a sink whose send_encoded itself fails: all of the group is retried
            outcomes = [exc] * len(events)
        retry: list[tuple[str, float, str]] = []
        dead: list[tuple[str, float, str, str]] = []
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome is None:
                state.sent += 1
            elif isinstance(outcome, RejectEvent):
                dead.append((*row, outcome.reason))
                self._log(logging.WARNING, f"dead:{state.sink.name}", "audit event dead-lettered: %s", outcome.reason)
            else:
                retry.append(row)
                self._log(logging.WARNING, f"retry:{state.sink.name}", "audit delivery will retry: %r", outcome)
        if retry or dead:
            self._pending_writes.append(_Write(retry, [state.sink.name], dead))
            state.wake.set()

    def _write_pending(self) -> int:
        """Commit what waits for the outbox, oldest first; kept in memory (bounded) while the outbox is unavailable."""
        count = 0
        while self._pending_writes:
            write = self._pending_writes[0]
            try:
                if write.also:
                    self._add_joined(write)
                elif write.rows or write.dead:
                    self.outbox.add(write.rows, write.sinks, write.dead, captured=write.captured)
            except Exception as exc:
                # Disk full, read-only file, locked database: keep them in memory (bounded) and try again.
                self._log(logging.ERROR, "outbox", "audit outbox unavailable, holding events in memory: %r", exc)
                self._bound_pending()
                return count
            self._pending_writes.popleft()
            for name in write.joined:
                self._states[name].sent += len(write.rows)
            count += len(write.rows) + len(write.dead)
            self._spooled += len(write.rows)
            for name in write.sinks:
                self._states[name].dead += len(write.dead)
        return count

    def _joined_writers(self) -> dict[str, Callable[[Any, Sequence[AuditEvent], Sequence[str]], None]]:
        if self._joined is None:
            if not self._shared:
                self._joined = {}
            else:
                try:
                    outbox = self.outbox
                except Exception as exc:  # the database is away: nothing joined this round, looked for again next
                    self._log(logging.ERROR, "outbox", "audit outbox unavailable, holding events in memory: %r", exc)
                    return {}
                joined = {}
                complete = True
                for state in self._inline_states:
                    try:
                        writer = state.sink.joined_writer(outbox)
                    except Exception as exc:  # the store can't be opened now: delivered on its own meanwhile
                        self._log(logging.WARNING, "joined", "audit sink %s not joined: %r", state.sink.name, exc)
                        complete = False  # ...and looked for again next round
                        continue
                    if writer is not None:
                        joined[state.sink.name] = writer
                if not complete:
                    return joined
                self._joined = joined
        return self._joined

    def _add_joined(self, write: _Write) -> None:
        """Commit the outbox rows and the joined sinks' rows in one transaction. If that fails for a reason the
        outbox alone would not (one event the store refuses), the outbox rows are committed alone, owed to the
        joined sinks too, whose senders then retry or dead-letter them one by one: a store problem never holds
        back the outbox."""
        import psycopg

        from .pg_outbox import PostgresOutbox

        outbox = self.outbox
        assert isinstance(outbox, PostgresOutbox)
        try:
            outbox.add(write.rows, write.sinks, write.dead, also=write.also)
        except psycopg.OperationalError:  # (the pool's timeout too)
            raise  # the database itself is away: the group waits in memory, joined as it is, like any other
        except Exception as exc:
            self._log(logging.WARNING, "joined", "audit store write in the outbox transaction failed: %r", exc)
            write.sinks = write.sinks + write.joined
            write.also, write.joined = [], []
            outbox.add(write.rows, write.sinks, write.dead)

    def _bound_pending(self) -> None:
        overflow = sum(len(w.rows) + len(w.dead) for w in self._pending_writes) - self.config.max_queue
        while overflow > 0 and self._pending_writes:
            # The oldest go first, events before dead letters (a dead letter is smaller and says why).
            write = self._pending_writes[0]
            from_rows = min(overflow, len(write.rows))
            del write.rows[:from_rows]
            if from_rows and write.also:
                # The joined writes hold the whole group: what is left of it is owed to those sinks the usual way.
                write.sinks, write.also, write.joined = write.sinks + write.joined, [], []
            from_dead = min(overflow - from_rows, len(write.dead))
            del write.dead[:from_dead]
            self._drop("outbox_unavailable", from_rows + from_dead)
            self._recorded -= from_rows + from_dead  # counted in _dropped now, which stats() also adds to "recorded"
            overflow -= from_rows + from_dead
            if not write.rows and not write.dead:
                self._pending_writes.popleft()

    def _dead_row(self, item: RequestContext | PendingEvent, reason: str) -> tuple[str, float, str, str]:
        # The whole event as far as it is known (actor, organization, targets, metadata: redacted), so that an
        # operator reading the dead letter sees who did what, not just that something failed.
        event_id = new_event_id()
        body = json.dumps(self.builder.describe(item, event_id, reason), ensure_ascii=False, default=repr)
        return (event_id, time.time(), body, reason)

    # -- senders -------------------------------------------------------------------------------------------------
    def _send_loop(self, state: _SinkState) -> None:
        name = state.sink.name
        while not self._stop.is_set():
            if self._sender_lock is not None and not self._sender_lock.held and not self._take_sender_lock():
                # Another process sends for this outbox: stand by, and take over within an interval if it dies.
                state.wake.wait(self.config.standby_interval)
                state.wake.clear()
                continue
            try:
                wait = self._send_round(state)
            except Exception as exc:
                self._log(logging.ERROR, f"send:{name}", "audit sender %s error: %r", name, exc)
                wait = self.config.poll_interval
            if wait > 0:
                state.wake.wait(wait)
                state.wake.clear()

    def _take_sender_lock(self) -> bool:
        assert self._sender_lock is not None
        if not self._sender_lock.try_acquire():
            return False
        try:
            # Only lock holders claim: any lease held by another owner was left by a sender that is gone.
            released = self.outbox.release_foreign_leases()
        except Exception as exc:
            self._sender_lock.release()
            self._log(logging.ERROR, "outbox", "audit outbox unavailable: %r", exc)
            return False
        if released:
            logger.warning(
                "audit: took over sending for %s; %d deliveries left by a gone sender", self.outbox.path, released
            )
        return True

    def _complete_captured(self) -> None:
        """Complete the events apps in relay mode committed as captured, once each, before they can be claimed."""
        if not self._completing.acquire(blocking=False):
            return  # another sender thread of this process is at it
        try:
            while captured := self.outbox.captured():
                done: list[tuple[str, str]] = []
                dead: list[tuple[str, str, str]] = []
                for event_id, body in captured:
                    data: dict[str, Any] = {}
                    try:
                        data = json.loads(body)
                        done.append((event_id, self.builder.complete(data).to_json()))
                    except Exception as exc:  # no organization, a validator's refusal: dead for every sink
                        reason = str(exc) if isinstance(exc, EventError) else f"event could not be built: {exc!r}"
                        # The whole capture and why, as any dead letter of an event that could not be built.
                        letter = {**data, "captured": 0, "error": reason} if data else {"error": reason, "raw": body}
                        dead.append((event_id, json.dumps(letter, ensure_ascii=False), reason[:500]))
                        self._log(logging.WARNING, "invalid", "audit event rejected: %s", reason)
                self.outbox.complete(done, dead, self._sink_names)
        finally:
            self._completing.release()

    def _send_round(self, state: _SinkState) -> float:
        """One claim-send-settle round; returns how long to wait before the next."""
        self._complete_captured()
        now = time.time()
        if state.not_before > now:
            return state.not_before - now
        limit = 1 if state.paused else self.config.batch_size
        claimed_at = time.time()  # the leases run from here (claim() may first wait for another process's lock)
        claims = self.outbox.claim(state.sink.name, limit, self.config.lease, now=claimed_at)
        if not claims:
            if state not in self._inline_states:  # (an inline sink's idle moments are the committer's)
                state.sink.idle()  # nothing to send: its deferred work (the relay's store: the text index)
            next_due = self.outbox.next_due(state.sink.name)
            if next_due is None:
                return self.config.poll_interval
            return min(self.config.poll_interval, max(0.0, next_due - time.time()))
        # A send started later than this could still run when the lease ends, and another process may then claim the
        # row and send it again: such rows are handed back untried (the next round claims them afresh).
        lease = self.config.lease
        outcomes = self._deliver(state, claims, send_before=claimed_at + lease - min(_timeout(state.sink), lease / 2))
        self._settle(state, claims, outcomes)
        return self.config.probe_interval if state.paused else 0.0

    def _deliver(
        self, state: _SinkState, claims: Sequence[Claim], send_before: float = float("inf")
    ) -> list[BaseException | None]:
        window = self.config.retry.idempotency_window
        now = time.time()
        probing = state.paused  # a paused sink gets one event at a time: the probe

        def one(claim: Claim) -> BaseException | None:
            if now - claim.recorded_at > window:
                return RejectEvent(
                    f"undelivered for {window / 3600:.0f} h: past the idempotency window, kept for replay"
                )
            if state.paused and not probing:  # another thread of this batch just hit 401/403
                return PauseDelivery("paused")
            if state.not_before > time.time():  # another thread of this batch just got a Retry-After
                return _Deferred()
            if state.limiter is not None:
                try:
                    if not state.limiter.acquire(self._stop):
                        return RetryLater("shutting down")
                except Exception as exc:  # the shared limiter's database is away: retried like a failed send
                    return RetryLater(f"rate limiter unavailable: {exc!r}")
            if time.time() > send_before:  # this batch outlasted its lease's safe part (a slow endpoint)
                return _Deferred()
            if self._stop.is_set():  # close(): start no new send; the row is handed back for the next start
                return _Deferred()
            event = _parse(claim)
            if isinstance(event, RejectEvent):
                return event
            try:
                state.sink.send(event)
            except PauseDelivery as exc:
                self._pause(state, exc)
                return exc
            except RetryLater as exc:
                if exc.retry_after:  # hold back the rest of the batch at once, not after it is settled
                    wait = min(exc.retry_after, self.config.retry.max_retry_after)
                    state.not_before = max(state.not_before, time.time() + wait)
                return exc
            except Exception as exc:
                return exc
            return None

        if state.pool is not None and len(claims) > 1:
            # One wave of `concurrency` sends at a time, never the whole batch queued in the pool: at interpreter
            # exit, concurrent.futures runs every queued item before atexit hooks (our exit flush and its deadline)
            # even start, so a queued batch of slow sends would hold the exit for batch / concurrency timeouts.
            results: list[BaseException | None] = []
            size = max(1, state.sink.concurrency)
            for start in range(0, len(claims), size):
                wave = claims[start : start + size]
                futures: list[Future[BaseException | None] | None] = []
                for claim in wave:
                    try:
                        futures.append(state.pool.submit(one, claim))
                    except RuntimeError:
                        # The pool takes no more work: the interpreter is exiting (concurrent.futures refuses new
                        # work once threading's shutdown began, before atexit hooks such as the exit flush run), or
                        # close() shut it down. Send from this thread rather than not at all.
                        futures.append(None)
                results += [one(claim) if f is None else f.result() for f, claim in zip(futures, wave, strict=True)]
            return results
        if state.limiter is not None or state.paused:
            return [one(c) for c in claims]
        # A local sink (store, file, memory): one send_many call, so a store can write the batch in one transaction.
        outcomes: list[BaseException | None] = [None] * len(claims)
        batch: list[tuple[int, AuditEvent]] = []
        for i, claim in enumerate(claims):
            event = _parse(claim) if now - claim.recorded_at <= window else None
            if isinstance(event, AuditEvent):
                batch.append((i, event))
            else:
                outcomes[i] = one(claim)
        try:
            results = state.sink.send_many([event for _, event in batch])
        except Exception as exc:  # a sink whose send_many itself fails: every event of the batch is retried
            results = [exc] * len(batch)
        for (i, _), result in zip(batch, results, strict=True):
            outcomes[i] = result
        return outcomes

    def _pause(self, state: _SinkState, exc: PauseDelivery) -> None:
        with self._lock:
            if state.paused:
                return
            state.paused = True
        # One alert per outage, whatever the log interval: an operator must fix the key.
        logger.error("audit delivery to %s paused: %s (events are kept; probing)", state.sink.name, exc)

    def _settle(self, state: _SinkState, claims: Sequence[Claim], outcomes: Sequence[BaseException | None]) -> None:
        policy = self.config.retry
        name = state.sink.name
        delivered: list[str] = []
        retry: list[tuple[str, float, str]] = []
        dead: list[tuple[str, str]] = []
        release: list[str] = []
        now = time.time()
        for claim, outcome in zip(claims, outcomes, strict=True):
            if outcome is None:
                delivered.append(claim.event_id)
            elif isinstance(outcome, RejectEvent):
                dead.append((claim.event_id, outcome.reason))
                self._log(logging.WARNING, f"dead:{name}", "audit event dead-lettered by %s: %s", name, outcome.reason)
            elif isinstance(outcome, PauseDelivery | _Deferred):
                release.append(claim.event_id)
                if isinstance(outcome, PauseDelivery):
                    self._pause(state, outcome)  # no-op when the sending thread already paused it
            else:
                retry_after = outcome.retry_after if isinstance(outcome, RetryLater) else None
                if retry_after:
                    state.not_before = max(state.not_before, now + min(retry_after, policy.max_retry_after))
                retry.append((claim.event_id, now + policy.delay(claim.attempts, retry_after), repr(outcome)[:500]))
                self._log(
                    logging.WARNING, f"retry:{name}", "audit delivery to %s failed, will retry: %r", name, outcome
                )
        if state.paused and delivered:
            state.paused = False
            logger.warning("audit delivery to %s resumed", name)
        if delivered:
            state.failures = 0
        elif retry:
            # Nothing got through: back off as a whole (each event keeps its own schedule too), so that during an
            # outage new events wait with the old ones instead of each costing one more failed request.
            state.failures += 1
            hold = max(policy.base, policy.delay(state.failures))
            state.not_before = max(state.not_before, now + hold)
        self.outbox.settle(name, delivered, retry, dead, release)
        state.sent += len(delivered)
        state.retried += len(retry)
        state.dead += len(dead)

    # -- observability -------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        outbox: OutboxStats | None = None
        try:
            outbox = self.outbox.stats()
        except self._outbox_errors as exc:  # the counters matter most when the disk is the problem: still answer
            self._log(logging.ERROR, "outbox", "audit outbox unavailable: %r", exc)
        return {
            # _in_progress: popped by the committer, not yet counted (else "recorded" dips while a batch commits).
            "recorded": self._recorded
            + self._in_progress
            + len(self._queue)
            + self._spilled_waiting
            + sum(self._dropped.values()),
            "spooled": self._spooled,
            "spilled": self._spilled,
            "queued": len(self._queue),
            "sent": sum(s.sent for s in self._states.values()),
            "retried": sum(s.retried for s in self._states.values()),
            "dead_lettered": sum(s.dead for s in self._states.values()),
            "dropped": dict(self._dropped),
            # None when the outbox can't be read: unknown, not zero.
            "outbox_depth": outbox.pending if outbox else None,
            "outbox_dead": outbox.dead if outbox else None,
            "oldest_age": outbox.oldest_pending_age if outbox else None,
            "sinks": {
                name: {"sent": s.sent, "retried": s.retried, "dead_lettered": s.dead, "paused": s.paused}
                for name, s in self._states.items()
            },
        }
