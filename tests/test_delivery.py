"""Delivery to WorkOS through the real SDK and the emulator: outcome classes, retries, idempotency, pause.

Rows of ../shared/RELIABILITY.md that run in one process (2, 3, 4, 5, 6, 13, 16); the process-level rows (kill,
term, fork, shared outbox, exit) are in test_reliability_processes.py.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from centure_audit_middleware import Actor, Auditor, Target
from centure_audit_middleware.delivery.policy import RetryPolicy
from centure_audit_middleware.sinks import MemorySink, WorkOSSink
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import ALICE, ORG
from .reliability_support import wait_until

FAST = RetryPolicy(base=0.02, max_delay=0.2, max_retry_after=1.5)


@pytest.fixture
def emulator() -> Iterator[WorkOSEmulator]:
    with WorkOSEmulator(organizations=[ORG]) as emulator:
        yield emulator


@pytest.fixture(params=["sdk", "stdlib"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both HTTP transports of the WorkOS sink go through the outcome tests."""
    return str(request.param)


def make_auditor(tmp_path: Path, emulator: WorkOSEmulator, **kwargs: Any) -> Auditor:
    kwargs.setdefault("retry", FAST)
    sink = WorkOSSink(
        api_key=emulator.api_key,
        base_url=emulator.url,
        timeout=kwargs.pop("timeout", 2.0),
        transport=kwargs.pop("transport", "sdk"),
    )
    return Auditor(sinks=[sink], outbox=tmp_path / "outbox.db", geoip=False, commit_interval=0.01, **kwargs)


def record(auditor: Auditor, n: int, organization: str = ORG, **kwargs: Any) -> None:
    for i in range(n):
        auditor.record(
            "doc.update", actor=ALICE, organization=organization, targets=[Target("doc", id=f"d{i}")], **kwargs
        )


def event_requests(emulator: WorkOSEmulator) -> list[Any]:
    return [r for r in emulator.requests if r.path.endswith("/audit_logs/events")]


def retries_after(emulator: WorkOSEmulator, status: int) -> list[tuple[Any, Any]]:
    """(refused attempt, next attempt of the same event) for each attempt refused with `status`. A retry is scheduled
    after the refusal was answered, so the time between the two is a lower bound the client controls: load on the
    machine can only make it longer, never shorter (no upper bound is asserted on it)."""
    by_key: dict[str | None, list[Any]] = {}
    for request in event_requests(emulator):
        by_key.setdefault(request.header("idempotency-key"), []).append(request)
    return [(a, b) for attempts in by_key.values() for a, b in itertools.pairwise(attempts) if a.status == status]


def assert_exactly_once(emulator: WorkOSEmulator, expected: int) -> None:
    counts = emulator.count_by_key()
    assert len(counts) == expected, f"loss: {expected - len(counts)}"
    assert set(counts.values()) == {1}, "duplicates"


def test_delivers_workos_shaped_events_with_idempotency_keys(
    tmp_path: Path, emulator: WorkOSEmulator, transport: str
) -> None:
    auditor = make_auditor(tmp_path, emulator, transport=transport)
    record(auditor, 20)
    assert auditor.flush(10)
    auditor.close()
    assert_exactly_once(emulator, 20)
    first = emulator.events[0]
    assert first.organization_id == ORG
    assert first.event["action"] == "doc.update"
    assert first.event["actor"] == {
        "id": "user_alice",
        "type": "user",
        "name": "Alice Example",
        "metadata": {"email": "alice@example.com"},
    }
    assert first.event["occurred_at"].endswith("Z")
    stats = auditor.stats()
    assert (stats["sent"], stats["retried"], stats["dead_lettered"], stats["outbox_depth"]) == (20, 0, 0, 0)


def test_429_storm_honours_retry_after_seconds_and_date(tmp_path: Path, emulator: WorkOSEmulator) -> None:
    from email.utils import formatdate

    auditor = make_auditor(tmp_path, emulator)
    for kind in ("seconds", "http-date"):
        # An HTTP-date has one-second resolution: 3 s ahead is at least 2 s, capped by FAST at 1.5 s.
        until = int(time.time() + 3)
        retry_after = "1" if kind == "seconds" else formatdate(until, usegmt=True)
        emulator.reset()
        # Every request of the first concurrent batch is refused: the storm.
        emulator.fail_next(429, count=8, retry_after=retry_after)
        record(auditor, 5)
        assert auditor.flush(15)
        requests = event_requests(emulator)
        limited = [r for r in requests if r.status == 429]
        assert limited
        assert len(emulator.count_by_key()) == 5
        assert set(emulator.count_by_key().values()) == {1}
        # No refused event is tried again before its Retry-After: a second later, or at the date (an absolute
        # time: later refusals carrying the same date wait less), at most FAST's 1.5 s; 50 ms for clock rounding.
        pairs = retries_after(emulator, 429)
        assert len(pairs) == len(limited)
        for refused, retry in pairs:
            wait = 1.0 if kind == "seconds" else min(1.5, until - refused.received_at)
            assert retry.received_at - refused.received_at >= wait - 0.05, (kind, refused, retry)
    auditor.close()


def test_absurd_retry_after_is_capped(tmp_path: Path, emulator: WorkOSEmulator) -> None:
    auditor = make_auditor(tmp_path, emulator)  # max_retry_after=1.5
    emulator.fail_next(429, retry_after="86400")
    record(auditor, 1)
    assert auditor.flush(10)  # delivered within 10 s: the day it was asked to wait was capped
    auditor.close()
    [(refused, retry)] = retries_after(emulator, 429)
    waited = retry.monotonic - refused.monotonic  # (the emulator's clock: the gap between its two requests)
    assert 1.45 <= waited < 5, waited  # ...to max_retry_after (1.5 s): neither ignored nor capped too late
    assert_exactly_once(emulator, 1)


def test_flapping_5xx_loses_and_duplicates_nothing(tmp_path: Path, emulator: WorkOSEmulator, transport: str) -> None:
    auditor = make_auditor(tmp_path, emulator, transport=transport)
    emulator.set_failure_rate(0.5, 503, seed=7)
    record(auditor, 100)
    assert auditor.flush(30), auditor.stats()
    auditor.close()
    assert_exactly_once(emulator, 100)
    attempts = Counter(r.header("idempotency-key") for r in event_requests(emulator))
    assert max(attempts.values()) <= 12  # bounded: 50 % failure gives ~2 on average
    assert auditor.stats()["retried"] > 10
    # Full jitter: the retries of a failed batch do not all land at the same instant.
    retry_times = [r.monotonic for r in event_requests(emulator) if attempts[r.header("idempotency-key")] > 1]
    assert max(retry_times) - min(retry_times) > 0.05


@pytest.mark.parametrize("fault", ["stall", "reset"])
def test_ambiguous_commit_is_not_duplicated(
    tmp_path: Path, emulator: WorkOSEmulator, fault: str, transport: str
) -> None:
    auditor = make_auditor(tmp_path, emulator, timeout=0.5, transport=transport)
    if fault == "stall":
        emulator.commit_then_stall(2.0, count=3)
    else:
        emulator.reset_connections(3, after_commit=True)
    record(auditor, 10)
    assert auditor.flush(20), auditor.stats()
    auditor.close()
    assert_exactly_once(emulator, 10)
    keys_per_target: dict[str, set[str | None]] = {}
    for request in event_requests(emulator):
        body = __import__("json").loads(request.body)
        keys_per_target.setdefault(body["event"]["targets"][0]["id"], set()).add(request.header("idempotency-key"))
    assert all(len(keys) == 1 for keys in keys_per_target.values())
    assert any(r.replayed for r in event_requests(emulator)) or fault == "reset"


def test_same_key_after_restart(tmp_path: Path, emulator: WorkOSEmulator) -> None:
    emulator.set_down(True)
    first = make_auditor(tmp_path, emulator)
    record(first, 3)
    assert not first.flush(0.5)
    first.close(timeout=0.1)
    emulator.set_down(False)
    emulator.commit_then_stall(1.5, count=1)
    second = make_auditor(tmp_path, emulator, timeout=0.5)
    assert second.flush(15), second.stats()
    second.close()
    assert_exactly_once(emulator, 3)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "HTTP 400"), (413, "HTTP 413"), (422, "HTTP 422"), (404, "Organization not found")],
)
def test_rejected_event_is_dead_lettered_and_the_rest_flow(
    tmp_path: Path, emulator: WorkOSEmulator, status: int, reason: str
) -> None:
    auditor = make_auditor(tmp_path, emulator)
    if status == 404:
        auditor.record("doc.update", actor=ALICE, organization="org_unknown")
    else:
        emulator.fail_next(status)
        auditor.record("doc.update", actor=ALICE, organization=ORG, targets=[Target("doc", id="bad")])
    record(auditor, 5)
    assert auditor.flush(10)
    [dead] = auditor.dispatcher.outbox.dead_letters()
    auditor.close()
    assert reason in (dead.reason or "")
    assert dead.attempts == 1
    assert len(emulator.count_by_key()) == 5
    assert len([r for r in event_requests(emulator) if r.header("idempotency-key") == dead.event_id]) == 1


def test_revoked_key_pauses_with_one_alert_then_recovers(
    tmp_path: Path, emulator: WorkOSEmulator, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    auditor = make_auditor(tmp_path, emulator, probe_interval=0.3, transport=transport)
    emulator.revoke_key()
    with caplog.at_level(logging.ERROR, logger="centure_audit_middleware.delivery"):
        record(auditor, 30)

        # After the first concurrent wave hit the 401, one probe at a time, a probe interval (0.3 s) apart. A probe
        # starts a probe interval after the previous attempt was answered, so once a gap of a probe interval shows,
        # every later one is at least as long: the first long gap marks where probing began.
        def probes() -> list[float]:
            arrivals = [r.monotonic for r in event_requests(emulator)]
            gaps = [b - a for a, b in itertools.pairwise(arrivals)]
            first_long = next((i for i, gap in enumerate(gaps) if gap >= 0.25), None)
            return [] if first_long is None else gaps[first_long:]

        assert wait_until(lambda: len(probes()) >= 3, timeout=20), event_requests(emulator)
        assert min(probes()) >= 0.25, probes()
        stats = auditor.stats()
        assert stats["sinks"]["workos"]["paused"] is True
        assert stats["outbox_depth"] == 30
        emulator.restore_key()
        assert auditor.flush(10), auditor.stats()
    auditor.close()
    assert_exactly_once(emulator, 30)
    assert len([r for r in caplog.records if "paused" in r.getMessage()]) == 1
    assert auditor.stats()["dead_lettered"] == 0


def test_backlog_past_idempotency_window_is_dead_lettered_not_resent(tmp_path: Path, emulator: WorkOSEmulator) -> None:
    emulator.set_down(True)
    auditor = make_auditor(tmp_path, emulator, retry=RetryPolicy(base=0.02, max_delay=0.1, idempotency_window=1.0))
    record(auditor, 4)
    # Retried while the endpoint is down until they are older than the window: then dead-lettered, not sent.
    assert wait_until(lambda: len(auditor.dispatcher.outbox.dead_letters()) == 4, timeout=20), auditor.stats()
    emulator.set_down(False)
    auditor.flush(3)
    dead = auditor.dispatcher.outbox.dead_letters()
    auditor.close()
    assert len(dead) == 4
    assert all("idempotency window" in (d.reason or "") for d in dead)
    assert emulator.events == []
    # An operator replays them deliberately.
    replayer = make_auditor(tmp_path, emulator)
    assert replayer.dispatcher.outbox.replay() == 4
    assert replayer.flush(10)
    replayer.close()
    assert_exactly_once(emulator, 4)


def test_failing_log_handler_neither_recurses_nor_deadlocks(tmp_path: Path, emulator: WorkOSEmulator) -> None:
    calls = Counter[str]()

    class AuditingBrokenHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            calls[record.getMessage()[:40]] += 1
            # An app that audits its own log lines, with a handler that then fails.
            auditor.record("log.line", actor=Actor("system", type="system"), organization=ORG)
            raise OSError("log disk full")

    handler = AuditingBrokenHandler()
    handler.handleError = lambda record: None  # type: ignore[method-assign]  # the app's handler swallows
    logger = logging.getLogger("centure_audit_middleware")
    logger.addHandler(handler)
    emulator.set_down(True)
    auditor = make_auditor(tmp_path, emulator)
    try:
        record(auditor, 50)
        done = threading.Event()

        def flush() -> None:
            auditor.flush(1.0)
            done.set()

        threading.Thread(target=flush, daemon=True).start()
        assert done.wait(10), "flush deadlocked"
    finally:
        logger.removeHandler(handler)
        emulator.set_down(False)
        auditor.close(timeout=5)
    # One line per reason per interval, however many events failed.
    assert calls and max(calls.values()) == 1


def test_memory_and_workos_sinks_have_separate_state(tmp_path: Path, emulator: WorkOSEmulator) -> None:
    memory = MemorySink()
    workos = WorkOSSink(api_key=emulator.api_key, base_url=emulator.url, timeout=1)
    auditor = Auditor(sinks=[memory, workos], outbox=tmp_path / "o.db", geoip=False, retry=FAST)
    emulator.set_down(True)
    record(auditor, 3)
    # The local sink is not held back by WorkOS's outage: it gets all three while WorkOS is still down.
    assert wait_until(lambda: len(memory.events) == 3, timeout=10)
    assert emulator.events == []
    emulator.set_down(False)
    assert auditor.flush(10)
    auditor.close()
    assert_exactly_once(emulator, 3)


def test_rate_limit_is_honoured(tmp_path: Path, emulator: WorkOSEmulator) -> None:
    auditor = make_auditor(tmp_path, emulator, rate_limits={"workos": (10, 1.0)})
    record(auditor, 25)
    started = time.monotonic()
    assert auditor.flush(15)
    elapsed = time.monotonic() - started
    auditor.close()
    assert_exactly_once(emulator, 25)
    assert elapsed >= 1.2  # 10 burst, then 10/s: the last 15 need ~1.5 s
