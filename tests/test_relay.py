"""Delivery out of the app's process: `centure-audit relay`, and one sender per outbox (RELIABILITY rows 20-23).

Real processes on loopback: jobs that record with `Auditor(delivery="relay")` (they only commit), relays started as
`python -m centure_audit_middleware.cli relay`, the WorkOS emulator in between, SIGKILL where the rows say so.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import pytest

from centure_audit_middleware import Actor, AuditEvent, Auditor, EventError, Target
from centure_audit_middleware.delivery.outbox import Outbox
from centure_audit_middleware.delivery.relay import Relay
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import ALICE, ORG
from .reliability_support import (
    Proc,
    ProcessGroup,
    app_env,
    assert_delivered_once,
    read_outbox,
    requests_per_key,
    script_argv,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


def record_via_relay(procs: ProcessGroup, emulator: WorkOSEmulator, outbox: Path, prefix: str, count: int) -> Proc:
    """A job that records `count` events with `delivery="relay"`, flushes (commits) and exits."""
    env = app_env(emulator, outbox, CENTURE_AUDIT_DELIVERY="relay")
    argv = script_argv("stream", "--prefix", prefix, "--count", str(count), "--rate", "2000")
    job = procs.spawn(f"job-{prefix}", argv, env)
    job.wait_exit(60)
    assert job.popen.returncode == 0 and job.lines("flushed") == ["True"], job.output()
    assert len(job.lines("recorded")) == count
    return job


def start_relay(procs: ProcessGroup, emulator: WorkOSEmulator, outbox: Path, name: str) -> Proc:
    argv = [sys.executable, "-m", "centure_audit_middleware.cli", "relay", "--outbox", str(outbox)]
    relay = procs.spawn(name, argv, app_env(emulator, outbox))
    relay.wait_output(lambda out: "centure-audit relay: delivering" in out, 45, "the relay started")
    return relay


def test_the_app_only_commits_and_the_relay_delivers_after_an_outage(
    procs: ProcessGroup, workos_emulator: WorkOSEmulator, outbox: Path
) -> None:
    """Row 22: with the relay down the app keeps committing (and sends nothing itself); the backlog drains when the
    relay returns."""
    started = time.monotonic()
    job = record_via_relay(procs, workos_emulator, outbox, "r22", 500)
    committed_in = time.monotonic() - started
    assert workos_emulator.requests == []  # the app's process never talked to WorkOS
    assert read_outbox(outbox).pending == 500
    relay = start_relay(procs, workos_emulator, outbox, "relay")
    assert wait_until(lambda: read_outbox(outbox).pending == 0, 60), relay.output()
    assert_delivered_once(workos_emulator, job.lines("recorded"))
    print(f"FIGURE row22 500 events committed by the app in {committed_in:.2f} s (process start included)")


def test_a_relay_sigkilled_mid_batch_ten_times_loses_and_duplicates_nothing(
    procs: ProcessGroup, workos_emulator: WorkOSEmulator, outbox: Path
) -> None:
    """Row 20."""
    job = record_via_relay(procs, workos_emulator, outbox, "r20", 600)
    workos_emulator.set_latency(0.02)  # sends take a moment: each kill lands in the middle of a batch
    kills_with_leases = 0
    for round_ in range(10):
        before = len(workos_emulator.requests)
        relay = start_relay(procs, workos_emulator, outbox, f"relay-{round_}")
        assert wait_until(lambda: len(workos_emulator.requests) >= before + 5, 30), relay.output()  # noqa: B023
        kills_with_leases += bool(read_outbox(outbox).leases)
        relay.kill_group()
    assert kills_with_leases >= 5, f"only {kills_with_leases} of 10 kills happened while rows were leased"
    workos_emulator.set_latency(0)
    relay = start_relay(procs, workos_emulator, outbox, "relay-last")
    assert wait_until(lambda: read_outbox(outbox).pending == 0, 60), relay.output()
    assert_delivered_once(workos_emulator, job.lines("recorded"))
    resent = sum(n - 1 for n in requests_per_key(workos_emulator).values() if n > 1)
    print(f"FIGURE row20 requests sent again under the same key (replays, not duplicates): {resent}")


def test_two_relays_one_sends_and_the_other_takes_over_within_a_second(
    procs: ProcessGroup, workos_emulator: WorkOSEmulator, outbox: Path
) -> None:
    """Row 21."""
    job = record_via_relay(procs, workos_emulator, outbox, "r21", 1500)
    workos_emulator.set_latency(0.04)  # ~8 s of sending in all: both relays are up long before it is done
    relays = [start_relay(procs, workos_emulator, outbox, f"relay-{k}") for k in range(2)]
    assert wait_until(lambda: bool(read_outbox(outbox).leases), 30), [r.output() for r in relays]
    owners: set[str] = set()
    for _ in range(20):  # sampled while both run: the leases always belong to one process
        holders = {owner for owner, _ in read_outbox(outbox).leases.values()}
        assert len(holders) <= 1, holders
        owners |= holders
        time.sleep(0.05)
    [owner] = owners
    pid = int(owner.split(":")[1])
    sender = next(r for r in relays if r.pid == pid)
    standby = next(r for r in relays if r is not sender)
    sender.kill_group()
    killed_at = time.time()
    seen = len(workos_emulator.requests)
    assert wait_until(lambda: len(workos_emulator.requests) > seen + 1, 10), standby.output()
    take_over = workos_emulator.requests[seen + 1].received_at - killed_at
    print(f"FIGURE row21 take-over after the sender's SIGKILL: {take_over:.2f} s")
    assert take_over <= 1.0
    assert wait_until(lambda: read_outbox(outbox).pending == 0, 60), standby.output()
    assert_delivered_once(workos_emulator, job.lines("recorded"))


def test_an_app_sigkilled_and_restarted_resends_its_backlog_within_five_seconds(
    procs: ProcessGroup, workos_emulator: WorkOSEmulator, outbox: Path
) -> None:
    """Row 23: in-process delivery; the app dies holding leases (60 s by default), and its restart, on the same
    host, hands them back at once instead of waiting for them to expire."""
    workos_emulator.set_latency(2.0)  # the app is mid-send, its rows leased, when it is killed
    env = app_env(workos_emulator, outbox)
    first = procs.spawn("app", script_argv("stream", "--prefix", "r23", "--count", "50", "--then", "hang"), env)

    def all_committed_some_leased() -> bool:
        try:
            snapshot = read_outbox(outbox)
        except sqlite3.OperationalError:  # the app has created the file, not yet its tables
            return False
        recorded = set(first.lines("recorded"))
        return len(recorded) == 50 and recorded <= snapshot.targets and bool(snapshot.leases)

    assert wait_until(all_committed_some_leased, 30), first.output()
    first.kill_group()
    workos_emulator.set_latency(0)
    recorded = set(first.lines("recorded"))
    restarted_at = time.monotonic()
    second = procs.spawn("app-again", script_argv("stream", "--count", "0", "--flush-timeout", "30"), env)
    assert wait_until(lambda: read_outbox(outbox).pending == 0, 30), second.output()
    resent_in = time.monotonic() - restarted_at
    print(f"FIGURE row23 backlog resent {resent_in:.2f} s after the restart (process start included)")
    assert resent_in <= 5.0
    assert_delivered_once(workos_emulator, recorded)


def refuse_flagged(event: AuditEvent) -> None:
    if event.metadata.get("flag") == "refuse":
        raise EventError("doc.update: metadata.flag: refused by the catalog")


def test_relay_mode_commits_redacted_captures_and_the_relay_completes_them(tmp_path: Path) -> None:
    """In relay mode the app commits what it knows, redacted (no secret ever reaches the outbox), and the relay
    fits, enriches and validates it with the app's configuration, once, before sending."""
    outbox = tmp_path / "outbox.db"
    app = Auditor(sinks=[MemorySink("workos")], outbox=outbox, geoip=False, delivery="relay")
    many = {f"k{i:02d}": i for i in range(60)}
    secret_actor = Actor("user_1", metadata={"apiKey": "sk_live_actor"})
    app.record("doc.update", actor=secret_actor, organization=ORG, metadata={**many, "password": "hunter2"})
    app.record("doc.update", actor=ALICE, organization=ORG, targets=[Target("doc", "d2")], metadata={"flag": "refuse"})
    assert app.flush(5)
    app.close()
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"hunter2" not in written and b"sk_live_actor" not in written

    sink = MemorySink("workos")
    relay = Relay.for_auditor(Auditor(sinks=[sink], outbox=outbox, geoip=False, validators=[refuse_flagged]), outbox)
    relay.start()
    try:
        assert relay.flush(10), relay.stats()
    finally:
        relay.close()
    [event] = sink.events
    assert event.actor.metadata == {"apiKey": "[REDACTED]"}
    assert len(event.metadata) == 50 and event.metadata["metadata_overflow_keys"] == 13
    assert event.original_metadata is not None and event.original_metadata["event"]["password"] == "[REDACTED]"
    [dead] = Outbox(outbox).dead_letters()
    assert dead.reason is not None and "refused by the catalog" in dead.reason
    assert '"d2"' in dead.body  # the whole capture is kept
