"""The outbox on PostgreSQL (`PostgresOutbox`): the SQLite outbox's contract, plus what a fleet needs: concurrent
claims (SKIP LOCKED), heartbeats that hand a dead sender's leases back within seconds, a rate limit shared by every
sender, and captured events completed once however many relays race for them. Against a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import pytest

from centure_audit_middleware import Auditor, Target
from centure_audit_middleware.delivery.dispatcher import Dispatcher, DispatcherConfig
from centure_audit_middleware.delivery.outbox import open_outbox
from centure_audit_middleware.delivery.pg_outbox import PostgresOutbox, PostgresRateLimiter
from centure_audit_middleware.delivery.policy import RetryPolicy
from centure_audit_middleware.delivery.relay import Relay
from centure_audit_middleware.events import new_event_id
from centure_audit_middleware.sinks import StoreSink, WorkOSSink
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import ALICE, ORG
from .pg_outbox_fixtures import pg_outbox_url
from .reliability_support import wait_until

__all__ = ["pg_outbox_url"]  # the fixture, imported for pytest

pytestmark = pytest.mark.postgres


def rows(n: int, prefix: str = "e") -> list[tuple[str, float, str]]:
    return [(new_event_id(), time.time(), f'{{"n": "{prefix}{i}"}}') for i in range(n)]


def test_a_postgresql_url_opens_a_postgresql_outbox(pg_outbox_url: str) -> None:
    outbox = open_outbox(pg_outbox_url)
    try:
        assert isinstance(outbox, PostgresOutbox)
        assert ":***@" in outbox.path and ":centure_test@" not in outbox.path  # the password never shows
    finally:
        outbox.close()


def test_add_claim_settle_dead_letters_replay_and_purge(pg_outbox_url: str) -> None:
    outbox = PostgresOutbox(pg_outbox_url)
    try:
        events = rows(5)
        outbox.add(events, ["workos", "store"], dead=[(new_event_id(), time.time(), '{"error": "no org"}', "no org")])
        assert outbox.stats("workos").pending == 5 and outbox.stats("workos").dead == 1
        claims = outbox.claim("workos", 10, lease=60)
        assert [c.event_id for c in claims] == sorted(e[0] for e in events)  # UUIDv7: oldest first
        assert outbox.claim("workos", 10, lease=60) == []  # leased
        first, second, third, *rest = (c.event_id for c in claims)
        outbox.settle("workos", delivered=[first], retry=[(second, time.time() + 3600, "503")], dead=[(third, "400")])
        outbox.settle("workos", release=rest)
        stats = outbox.stats("workos")
        assert (stats.pending, stats.dead) == (3, 2)
        assert {d.event_id for d in outbox.dead_letters("workos")} >= {third}
        assert outbox.replay("workos", [third]) == 1
        # The event delivered to WorkOS stays while the store still owes it, then goes.
        outbox.settle("store", delivered=[c.event_id for c in outbox.claim("store", 10, lease=60)])
        assert outbox.stats("store").pending == 0
        assert outbox.purge(dead_only=False) >= 3
        assert outbox.stats().pending == 0 and outbox.stats().dead == 0
    finally:
        outbox.close()


def test_concurrent_claims_never_hand_a_row_to_two_senders(pg_outbox_url: str) -> None:
    outboxes = [PostgresOutbox(pg_outbox_url) for _ in range(4)]
    try:
        outboxes[0].add(rows(2000), ["workos"])
        claimed: list[Counter[str]] = [Counter() for _ in outboxes]

        def drain(k: int) -> None:
            while batch := outboxes[k].claim("workos", 50, lease=60):
                claimed[k].update(c.event_id for c in batch)
                outboxes[k].settle("workos", delivered=[c.event_id for c in batch])

        threads = [threading.Thread(target=drain, args=(k,)) for k in range(len(outboxes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = sum(claimed, Counter())
        assert len(total) == 2000 and set(total.values()) == {1}
        assert sum(1 for c in claimed if c) >= 2  # they really ran side by side
        assert outboxes[0].stats().pending == 0
    finally:
        for outbox in outboxes:
            outbox.close()


def test_a_silent_senders_leases_are_handed_back_within_seconds(pg_outbox_url: str) -> None:
    """A sender whose heartbeat stops (SIGKILL, host gone) loses its leases once `dead_after` passes, long before the
    leases themselves (an hour here) would expire."""
    dead = PostgresOutbox(pg_outbox_url, dead_after=1.0)
    alive = PostgresOutbox(pg_outbox_url, dead_after=1.0)
    try:
        dead.add(rows(20), ["workos"])
        assert len(dead.claim("workos", 20, lease=3600)) == 20
        dead._stop_beating.set()  # it stops beating: as if killed (its rows stay leased)
        assert alive.claim("workos", 20, lease=3600) == []
        started = time.monotonic()
        assert wait_until(lambda: len(alive.claim("workos", 20, lease=3600)) == 20, 10)
        assert time.monotonic() - started < 5
        assert any(s.owner == alive.owner and s.alive for s in alive.senders())
        assert any(s.owner == dead.owner and not s.alive for s in alive.senders())
    finally:
        alive.close()
        dead.close()


def test_a_late_settle_by_a_sender_that_lost_its_lease_changes_nothing(pg_outbox_url: str) -> None:
    slow = PostgresOutbox(pg_outbox_url)
    fast = PostgresOutbox(pg_outbox_url)
    try:
        slow.add(rows(1), ["workos"])
        [claim] = slow.claim("workos", 1, lease=0.01)
        time.sleep(0.05)  # the lease runs out (a slow send)
        [again] = fast.claim("workos", 1, lease=60)
        slow.settle("workos", retry=[(claim.event_id, time.time() + 3600, "timeout")])
        assert fast.claim("workos", 1, lease=60) == []  # still fast's: the retry did not hand it back
        fast.settle("workos", delivered=[again.event_id])
        assert fast.stats().pending == 0
    finally:
        slow.close()
        fast.close()


def test_the_rate_limit_is_one_bucket_for_every_sender(pg_outbox_url: str) -> None:
    outbox = PostgresOutbox(pg_outbox_url)
    try:
        limiters = [PostgresRateLimiter(lambda: outbox, "workos", 5, 60.0) for _ in range(3)]
        refused = threading.Event()
        refused.set()  # acquire() then answers at once: a token now, or no
        granted = sum(limiter.acquire(refused) for _ in range(4) for limiter in limiters)
        assert granted == 5  # 5 per minute, whichever sender asks
    finally:
        outbox.close()


def test_two_relays_complete_each_captured_event_once(pg_outbox_url: str, workos_emulator: WorkOSEmulator) -> None:
    app = Auditor(
        sinks=[WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)],
        outbox=pg_outbox_url,
        delivery="relay",
        geoip=False,
    )
    for i in range(300):
        app.record("report.export", actor=ALICE, organization=ORG, targets=[Target("report", id=f"cap-{i}")])
    assert app.flush(10)
    assert workos_emulator.requests == []  # the app only committed
    relays = [Relay.for_auditor(app, pg_outbox_url) for _ in range(2)]
    try:
        for relay in relays:
            relay.start()
            assert relay.sending  # on PostgreSQL every relay sends
        assert wait_until(lambda: len(workos_emulator.events) >= 300, 30)
        assert relays[0].flush(10)
    finally:
        for relay in relays:
            relay.close()
        app.close()
    targets = Counter(e.event["targets"][0]["id"] for e in workos_emulator.events)
    assert len(targets) == 300 and set(targets.values()) == {1}
    assert set(workos_emulator.count_by_key().values()) == {1}


def test_an_auditor_delivers_through_a_postgresql_outbox(pg_outbox_url: str, workos_emulator: WorkOSEmulator) -> None:
    sink = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    auditor = Auditor(sinks=[sink], outbox=pg_outbox_url, geoip=False)
    try:
        for i in range(200):
            auditor.record("report.export", actor=ALICE, organization=ORG, targets=[Target("report", id=f"r-{i}")])
        assert auditor.flush(20)
        stats = auditor.stats()
        assert stats["outbox_depth"] == 0 and stats["sinks"]["workos"]["sent"] == 200
    finally:
        auditor.close()
    assert len({e.event["targets"][0]["id"] for e in workos_emulator.events}) == 200


def test_a_dispatcher_with_an_unreachable_database_holds_events_and_never_raises() -> None:
    dispatcher = Dispatcher(
        [],
        Auditor.for_tests().dispatcher.builder,
        DispatcherConfig(outbox_path="postgresql://nobody@127.0.0.1:9/none?connect_timeout=1"),
    )
    assert dispatcher.stats()["outbox_depth"] is None  # unknown, not zero, and no exception


def test_outbox_status_shows_the_fleet(pg_outbox_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`centure-audit outbox status` on PostgreSQL: depth per sink, oldest age, dead letters, and the senders seen."""
    from centure_audit_middleware.cli import main

    sender = PostgresOutbox(pg_outbox_url, role="relay")
    try:
        sender.add(rows(3), ["workos"], dead=[(new_event_id(), time.time(), '{"error": "x"}', "no organization")])
        sender.claim("workos", 1, lease=60)  # a claim starts its heartbeat
        assert main(["outbox", "--outbox", pg_outbox_url, "status", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["sinks"]["workos"]["pending"] == 3 and report["sinks"]["workos"]["dead"] == 1
        assert report["sinks"]["workos"]["oldest_pending_age"] is not None
        [seen] = report["senders"]
        assert (seen["pid"], seen["role"], seen["alive"]) == (os.getpid(), "relay", True)
        assert main(["outbox", "--outbox", pg_outbox_url, "status"]) == 0
        text = capsys.readouterr().out
        assert "workos" in text and "relay" in text and "alive" in text
        assert "centure_test@" not in text  # no password in what an operator may paste
    finally:
        sender.close()


def test_outbox_status_on_an_unreachable_database_is_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    from centure_audit_middleware.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["outbox", "--outbox", "postgresql://u:secret@127.0.0.1:9/none?connect_timeout=1", "status"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "cannot open postgresql://u:***@127.0.0.1:9/none" in err and "secret" not in err


def test_a_store_in_the_outbox_database_commits_in_the_outbox_transaction(
    pg_outbox_url: str, workos_emulator: WorkOSEmulator
) -> None:
    """The event store and the outbox in one PostgreSQL database: each group's store rows and outbox rows are one
    transaction (no store row without its WorkOS delivery row, nor the reverse), and the store needs no sender."""
    import psycopg

    workos_emulator.set_down(True)  # WorkOS's rows stay in the outbox: what the transaction committed is visible
    workos = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    auditor = Auditor(sinks=[workos, StoreSink(pg_outbox_url)], outbox=pg_outbox_url, geoip=False)
    try:
        for i in range(50):
            auditor.record("report.export", actor=ALICE, organization=ORG, targets=[Target("report", id=f"j-{i}")])
        assert wait_until(lambda: auditor.stats()["sinks"]["store"]["sent"] == 50, 20), auditor.stats()
        with psycopg.connect(pg_outbox_url) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM audit_events),"
                " (SELECT count(*) FROM centure_audit_outbox_deliveries WHERE sink = 'workos'),"
                " (SELECT count(*) FROM centure_audit_outbox_deliveries WHERE sink = 'store')"
            ).fetchone()
        assert counts == (50, 50, 0)  # the store owes nothing through the outbox
        with psycopg.connect(pg_outbox_url) as conn:
            # xmin: the transaction that wrote a row. Each event's store row and outbox row: the same one.
            pairs = conn.execute(
                "SELECT s.xmin::text, o.xmin::text"
                " FROM audit_events s JOIN centure_audit_outbox_events o ON o.id = s.id"
            ).fetchall()
        assert len(pairs) == 50 and all(store_tx == outbox_tx for store_tx, outbox_tx in pairs)
    finally:
        auditor.close(1)


def test_a_store_failure_in_the_joined_transaction_never_holds_back_the_outbox(
    pg_outbox_url: str, workos_emulator: WorkOSEmulator
) -> None:
    import psycopg

    store = StoreSink(pg_outbox_url)
    workos = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    auditor = Auditor(
        sinks=[workos, store], outbox=pg_outbox_url, geoip=False, retry=RetryPolicy(base=0.05, max_delay=0.2)
    )
    try:
        assert store.store is not None  # opened (tables made), then broken: every store insert fails
        with psycopg.connect(pg_outbox_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE audit_event_actions RENAME TO audit_event_actions_away")
        for i in range(20):
            auditor.record("report.export", actor=ALICE, organization=ORG, targets=[Target("report", id=f"f-{i}")])
        assert wait_until(lambda: len(workos_emulator.events) == 20, 20)  # WorkOS is not held back
        with psycopg.connect(pg_outbox_url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM audit_events").fetchone() == (0,)  # all or nothing
            conn.execute("ALTER TABLE audit_event_actions_away RENAME TO audit_event_actions")
        assert auditor.flush(20), auditor.stats()  # the store's sender retries them once it works again
        with psycopg.connect(pg_outbox_url) as conn:
            assert conn.execute("SELECT count(*) FROM audit_events").fetchone() == (20,)
    finally:
        auditor.close(5)


def test_a_forked_child_leaves_the_parents_connections_alone(pg_outbox_url: str) -> None:
    """gunicorn --preload: the master's outbox is open when the workers fork. The child opens a pool of its own (on
    first use) and collecting the inherited one leaves the parent's session alone: the parent keeps its very
    session."""
    import gc

    outbox = PostgresOutbox(pg_outbox_url)
    try:
        with outbox._pool.connection() as conn:
            parent_session = conn.info.backend_pid
        outbox.add(rows(1, "parent"), ["workos"])
        pid = os.fork()
        if pid == 0:  # the child: the dispatcher's at-fork hook calls forget_connections()
            code = 1
            try:
                outbox.forget_connections()
                gc.collect()
                outbox.add(rows(1, "child"), ["workos"])
                with outbox._pool.connection() as conn:
                    code = 0 if conn.info.backend_pid != parent_session else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with outbox._pool.connection() as conn:
            assert conn.info.backend_pid == parent_session  # the parent's session survived the child
        assert outbox.stats("workos").pending == 2
    finally:
        outbox.close()


def test_a_group_is_held_in_memory_while_the_database_is_away(pg_outbox_url: str) -> None:
    """With the store joined to the outbox's database and the database unreachable, a committed-to group waits in
    memory (bounded) for the next round: it is neither lost nor dropped."""
    down = "postgresql://nobody:pw@127.0.0.1:9/none?connect_timeout=1"
    auditor = Auditor(sinks=[StoreSink(down)], outbox=down, geoip=False)
    try:
        for i in range(3):
            auditor.record("report.export", actor=ALICE, organization=ORG, targets=[Target("report", id=f"h-{i}")])
        dispatcher = auditor.dispatcher
        assert wait_until(lambda: sum(len(w.rows) for w in list(dispatcher._pending_writes)) == 3, 30)
        stats = auditor.stats()
        assert stats["recorded"] == 3 and stats["dropped"] == {}
    finally:
        auditor.close(0.5)
