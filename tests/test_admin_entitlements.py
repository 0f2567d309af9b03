"""Entitlements and the delivery gate: who has the add-on, and what reaches WorkOS for those who don't."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from centure_audit_middleware import Actor, Auditor
from centure_audit_middleware.admin import (
    NOT_ENTITLED,
    EntitledSink,
    EntitlementGate,
    EntitlementStatus,
    EntitlementsUnavailable,
    StaticEntitlements,
)
from centure_audit_middleware.admin.gate import is_local_sink
from centure_audit_middleware.events import AuditEvent
from centure_audit_middleware.sinks import MemorySink, RetryLater, Sink, StoreSink
from centure_audit_middleware.store import EventQuery, EventStore, open_store

PAYING = "org_01PAYING"
FREE = "org_01FREE"
ADA = Actor("user_ada", name="Ada")


class RemoteSink(Sink):
    """Stands for WorkOSSink: not a local sink, so the default policy gates it."""

    name = "workos"
    default_rate_limit = (6000, 60.0)

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self._lock = threading.Lock()

    def send(self, event: AuditEvent) -> None:
        with self._lock:
            self.events.append(event)


class Broken:
    """Entitlements whose backend is down."""

    def is_active(self, organization_id: str) -> bool:
        raise EntitlementsUnavailable("billing down")

    def status(self, organization_id: str) -> EntitlementStatus:
        raise EntitlementsUnavailable("billing down")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with open_store(tmp_path / "audit.db") as store:
        yield store


def test_static_entitlements() -> None:
    ent = StaticEntitlements([PAYING])
    assert ent.is_active(PAYING) and not ent.is_active(FREE)
    assert ent.status(FREE) == EntitlementStatus(active=False)
    end = dt.datetime(2026, 12, 31, tzinfo=dt.UTC)
    ent.activate(FREE, cancel_at_period_end=True, current_period_end=end)
    assert ent.status(FREE).to_dict() == {
        "active": True,
        "cancel_at_period_end": True,
        "current_period_end": "2026-12-31T00:00:00Z",
    }
    ent.deactivate(PAYING)
    assert not ent.is_active(PAYING)


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="policy"):
        EntitlementGate(StaticEntitlements(), policy="maybe")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "remote_orgs", "store_orgs", "counts"),
    [
        pytest.param("store_only", {PAYING}, {PAYING, FREE}, {"entitled": 2, "skipped": 2}, id="store_only"),
        pytest.param("drop", {PAYING}, {PAYING}, {"entitled": 4, "skipped": 4}, id="drop"),
        pytest.param("deliver", {PAYING, FREE}, {PAYING, FREE}, {"entitled": 4, "passed_unentitled": 4}, id="deliver"),
    ],
)
def test_unentitled_organizations_events_do_not_reach_workos(
    tmp_path: Path,
    store: EventStore,
    policy: str,
    remote_orgs: set[str],
    store_orgs: set[str],
    counts: dict[str, int],
) -> None:
    gate = EntitlementGate(StaticEntitlements([PAYING]), policy=policy)  # type: ignore[arg-type]
    remote = RemoteSink()
    sinks = gate.apply([remote, StoreSink(store)])
    assert isinstance(sinks[0], EntitledSink)
    assert isinstance(sinks[1], EntitledSink) == (policy != "store_only")
    auditor = Auditor(sinks=sinks, outbox=tmp_path / "outbox.db", geoip=False, commit_interval=0.01)
    try:
        for org in (PAYING, PAYING, FREE, FREE):
            auditor.record("api_key.create", actor=ADA, organization=org)
        assert auditor.flush(timeout=10), auditor.stats()
        stats = auditor.stats()
    finally:
        auditor.close(timeout=5)
    assert {e.organization_id for e in remote.events} == remote_orgs
    stored = {o for o in (PAYING, FREE) if store.query(EventQuery(o)).events}
    assert stored == store_orgs
    # Held back events are acknowledged for that sink: nothing waits in the outbox, nothing is dead-lettered.
    assert stats["outbox_depth"] == 0 and stats["dead_lettered"] == 0
    gate_stats = gate.stats()
    for key, value in counts.items():
        assert gate_stats[key] == value, gate_stats  # type: ignore[literal-required]
    assert gate_stats["policy"] == policy
    if policy != "deliver":
        assert gate_stats["skipped_by_sink"]["workos"] == 2


def test_an_unknown_answer_retries_instead_of_dropping() -> None:
    gate = EntitlementGate(Broken())
    sink = gate.wrap(MemorySink())
    event = AuditEvent(
        id="evt_1",
        organization_id=PAYING,
        action="api_key.create",
        occurred_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        actor=ADA,
    )
    (outcome,) = sink.send_many([event])
    assert isinstance(outcome, RetryLater) and outcome.retry_after
    with pytest.raises(RetryLater):
        sink.send(event)
    assert gate.stats()["lookup_failures"] == 2 and gate.stats()["skipped"] == 0


def test_the_wrapper_looks_like_the_sink_it_wraps() -> None:
    remote = RemoteSink()
    wrapped = EntitlementGate(StaticEntitlements()).wrap(remote)
    assert (wrapped.name, wrapped.concurrency, wrapped.default_rate_limit) == ("workos", 1, (6000, 60.0))
    assert is_local_sink(EntitlementGate(StaticEntitlements()).wrap(MemorySink()))
    assert not is_local_sink(wrapped)
    assert "Audit Logging" in NOT_ENTITLED
