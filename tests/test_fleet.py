"""A fleet on one PostgreSQL outbox (RELIABILITY rows 24 and 25): real processes on loopback.

The apps are gunicorn (Flask, sync workers) with ``CENTURE_AUDIT_DELIVERY=relay`` and ``CENTURE_AUDIT_OUTBOX`` a
``postgresql://`` URL: they only commit. Relays are ``centure-audit relay --outbox <url>`` processes, all sending at
once (FOR UPDATE SKIP LOCKED), to the WorkOS emulator. Each test has an outbox schema of its own (`pg_outbox_url`),
read from here with plain SQL, as an operator would.

The retry policy, the WorkOS timeout and the emulator's faults are short (seconds, not minutes) so that thousands of
events go through flapping in well under a minute; the relays use the apps' configuration (``--auditor``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from centure_audit_middleware.testing import WorkOSEmulator

from .pg_outbox_fixtures import pg_outbox_url
from .reliability_support import (
    APP,
    REPO_ROOT,
    Proc,
    ProcessGroup,
    app_env,
    assert_delivered_once,
    delivered_targets,
    free_port,
    gunicorn_argv,
    requests_per_key,
    wait_until,
)
from .workos_spec import Recorder

__all__ = ["pg_outbox_url"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

EVENTS = "centure_audit_outbox_events"
DELIVERIES = "centure_audit_outbox_deliveries"


# -- the outbox, read from outside -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Depth:
    #: committed by an app, not yet completed by a relay
    captured: int
    #: completed, owed to WorkOS
    pending: int
    dead: int

    @property
    def owed(self) -> int:
        return self.captured + self.pending


def outbox_depth(url: str) -> Depth:
    with psycopg.connect(url) as conn:
        [(captured,)] = conn.execute(f"SELECT count(*) FROM {EVENTS} WHERE captured").fetchall()
        [(pending, dead)] = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead')"
            f" FROM {DELIVERIES}"
        ).fetchall()
    return Depth(int(captured), int(pending), int(dead))


def outbox_targets(url: str) -> set[str]:
    """The target id of every event row in the outbox (captured or completed, not yet delivered everywhere)."""
    with psycopg.connect(url) as conn:
        bodies = [str(row[0]) for row in conn.execute(f"SELECT body FROM {EVENTS}")]
    return {str(json.loads(body)["targets"][0]["id"]) for body in bodies}


def live_leases_of(url: str, pid: int) -> int:
    """Deliveries leased, right now, by process `pid` (a lease owner is ``host:pid:nonce``)."""
    with psycopg.connect(url) as conn:
        [(count,)] = conn.execute(
            f"SELECT count(*) FROM {DELIVERIES}"
            " WHERE lease_owner LIKE %s AND lease_until > extract(epoch from clock_timestamp())",
            (f"%:{pid}:%",),
        ).fetchall()
    return int(count)


def no_app_write_in_flight(url: str) -> bool:
    """No server backend is still running an app's insert into the outbox, or a commit: a process SIGKILLed just
    after sending its COMMIT has its transaction finished (or rolled back) by the server a moment later, and what it
    committed must be read after that."""
    with psycopg.connect(url) as conn:
        [(busy,)] = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND state <> 'idle' AND (query LIKE %s OR query = 'COMMIT')",
            (f"INSERT INTO {EVENTS}%",),
        ).fetchall()
    return int(busy) == 0


# -- processes -------------------------------------------------------------------------------------------------------
def fleet_env(emulator: WorkOSEmulator, url: str, **extra: str) -> dict[str, str]:
    return app_env(
        emulator,
        url,
        RELIABILITY_RETRY_MAX_DELAY="1",  # retries within a second, not a minute
        RELIABILITY_WORKOS_TIMEOUT="0.5",  # a commit-then-stall costs a sender thread half a second
        # The fleet's shared token bucket (a row in PostgreSQL, updated by every send), set above what two relays
        # reach here: WorkOS's real 100/s would make 20,000 events take minutes.
        CENTURE_AUDIT_RATE_LIMIT="5000/1",
        **extra,
    )


def start_relay(procs: ProcessGroup, emulator: WorkOSEmulator, url: str, name: str) -> Proc:
    argv = [
        sys.executable,
        "-m",
        "centure_audit_middleware.cli",
        "relay",
        "--outbox",
        url,
        "--auditor",
        f"{APP}:auditor",
    ]
    relay = procs.spawn(name, argv, fleet_env(emulator, url))
    relay.wait_output(lambda out: "centure-audit relay: delivering" in out, 45, "the relay started")
    password = urllib.parse.urlsplit(url).password
    assert password and f":{password}@" not in relay.output()  # the DSN's password never reaches the log
    return relay


def start_app(
    procs: ProcessGroup, emulator: WorkOSEmulator, url: str, name: str, *, workers: int, home: Path = REPO_ROOT
) -> Proc:
    """gunicorn serving the Flask app in relay mode; with `home`, that directory is its cwd and its TMPDIR."""
    port = free_port()
    env = fleet_env(emulator, url, CENTURE_AUDIT_DELIVERY="relay")
    if home != REPO_ROOT:
        env["TMPDIR"] = str(home)
    app = procs.spawn(name, gunicorn_argv("flask_app", port, workers=workers), env, port=port, cwd=home)
    app.wait_ready()
    return app


def post_batch(client: httpx.Client, prefix: str, count: int) -> list[str]:
    """One request recording `count` events (``item`` targets ``<prefix>-<i>``); the targets the app says it
    recorded (each `audit.record` returned)."""
    response = client.post(f"/batch/{prefix}", params={"count": count})
    response.raise_for_status()
    recorded: list[str] = response.json()["recorded"]
    return recorded


class Flapping:
    """The emulator flapping while it runs: a share of 503s (set once), and, every `tick` seconds, 429s with
    Retry-After and a commit-then-stall (the event committed, the answer after the client's timeout)."""

    def __init__(self, emulator: WorkOSEmulator, tick: float = 2.0) -> None:
        self.emulator = emulator
        self.tick = tick
        self.stop = threading.Event()
        self.throttled = 0
        self.stalled = 0
        self._thread = threading.Thread(target=self._run, name="flapping", daemon=True)

    def __enter__(self) -> Flapping:
        self.emulator.set_failure_rate(0.1, 503, seed=24)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(self.tick):
            # Each holds back a relay for about a second (Retry-After; a wave of sends waits for its stalled one):
            # sparse enough that the delivery still moves.
            self.emulator.fail_next(429, 1, retry_after="1")
            self.emulator.commit_then_stall(1.0)  # past the relays' 0.5 s timeout: they resend under the same key
            self.throttled += 1
            self.stalled += 1

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join()
        self.emulator.set_failure_rate(0)


@pytest.fixture
def spec_sample(workos_spec_recorder: Recorder) -> Iterator[None]:
    """The WorkOS spec oracle (conftest) checks a sample of this test's exchanges, not tens of thousands (about a
    minute): the first 50, and the first of each status (200, 429, 503, the stalled ones' late answers)."""
    yield
    exchanges = workos_spec_recorder.drain()
    firsts = {exchange.status: exchange for exchange in reversed(exchanges)}
    for exchange in [*exchanges[:50], *firsts.values()]:
        workos_spec_recorder(exchange)


@pytest.fixture
def homes() -> Iterator[list[Path]]:
    """Directories the test makes for app processes (each deleted by the test itself, as a lost disk; any left)."""
    made: list[Path] = []
    yield made
    for home in made:
        shutil.rmtree(home, ignore_errors=True)


# -- row 24 ----------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_three_apps_and_two_relays_deliver_20000_events_through_flapping_and_relay_kills(
    procs: ProcessGroup, workos_emulator: WorkOSEmulator, pg_outbox_url: str, spec_sample: None
) -> None:
    """Row 24: 3 gunicorn workers record 20,000 events (80 requests of 250) while 2 relays deliver them to an
    emulator answering 10 % 503, 429s with Retry-After and commit-then-stalls; a relay is SIGKILLed 5 times while
    it holds leases (mid-batch) and restarted. loss 0, dup 0, nothing dead-lettered."""
    url = pg_outbox_url
    started = time.monotonic()
    relays = [start_relay(procs, workos_emulator, url, f"relay-{k}") for k in range(2)]
    app = start_app(procs, workos_emulator, url, "apps", workers=3)
    workos_emulator.set_latency(0.002)
    recorded: list[str] = []
    with Flapping(workos_emulator) as flapping, ThreadPoolExecutor(3) as pool:

        def record_share(share: int) -> list[str]:
            with httpx.Client(base_url=app.url, timeout=30) as client:
                return [t for j in range(share, 80, 3) for t in post_batch(client, f"r24-{j}", 250)]

        recording = [pool.submit(record_share, share) for share in range(3)]
        kills: list[str] = []
        for k in range(5):
            victim = relays[k % 2]
            seen = len(workos_emulator.events)
            # Spread over the delivery: some progress since the last kill, then the victim holding leases.
            assert wait_until(lambda: len(workos_emulator.events) >= seen + 300, 60), victim.output()  # noqa: B023
            held = [0]

            def leasing(victim: Proc = victim, held: list[int] = held) -> bool:
                held[0] = live_leases_of(url, victim.pid)
                return held[0] > 0

            assert wait_until(leasing, 30), victim.output()
            victim.kill_group()  # at once: the leases just read are most likely still held
            kills.append(f"{held[0]} leased at {len(workos_emulator.events)} delivered")
            relays[k % 2] = start_relay(procs, workos_emulator, url, f"relay-{k % 2}-after-kill-{k}")
        for future in recording:
            recorded += future.result()
        recorded_in = time.monotonic() - started
    assert len(recorded) == 20_000 == len(set(recorded))

    def drained() -> bool:
        return len(delivered_targets(workos_emulator)) >= 20_000 and outbox_depth(url).owed == 0

    assert wait_until(drained, 120, interval=0.2), [r.output()[-3000:] for r in relays]
    assert_delivered_once(workos_emulator, recorded)
    assert outbox_depth(url).dead == 0
    took = time.monotonic() - started
    attempts = requests_per_key(workos_emulator)
    statuses = {s: sum(1 for r in workos_emulator.requests if r.status == s) for s in (200, 429, 503)}
    print(f"FIGURE row24 relay kills (each mid-batch): {kills}")
    print(
        f"FIGURE row24 20,000 events: recorded by {recorded_in:.1f} s, all delivered once at {took:.1f} s "
        f"(relays and apps started included); {len(workos_emulator.requests)} requests ({statuses}); "
        f"{flapping.throttled} 429s and {flapping.stalled} stalls injected; "
        f"most attempts for one event: {max(attempts.values())}"
    )


# -- row 25 ----------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_app_hosts_that_vanish_with_their_disks_lose_nothing_they_committed(
    procs: ProcessGroup, workos_emulator: WorkOSEmulator, pg_outbox_url: str, homes: list[Path], spec_sample: None
) -> None:
    """Row 25: three runs of 3 app processes, each in a fresh directory (its cwd and TMPDIR), as pods: each records
    batches that the test waits to see committed to the outbox, then a stream of batches cut by SIGKILL, and its
    directory is deleted. Every event committed by then is delivered once by the 2 relays; what was recorded but not
    yet committed at the kill (the hand-off window, which `durable=True` closes) is reported."""
    url = pg_outbox_url
    relays = [start_relay(procs, workos_emulator, url, f"relay-{k}") for k in range(2)]
    committed_all: set[str] = set()
    for run in range(3):
        pods = [Path(tempfile.mkdtemp(prefix=f"centure-pod-{run}-{k}-")) for k in range(3)]
        homes.extend(pods)
        apps = [
            start_app(procs, workos_emulator, url, f"pod-{run}-{k}", workers=1, home=pod) for k, pod in enumerate(pods)
        ]
        clients = [httpx.Client(base_url=app.url, timeout=30) for app in apps]
        try:
            firm = {
                t
                for k, client in enumerate(clients)
                for j in range(2)
                for t in post_batch(client, f"r25-{run}-{k}-a{j}", 250)
            }

            def seen_committed(targets: set[str] = firm) -> bool:
                # In the outbox, or already delivered (read in this order: a row delivered in between is in both).
                return targets <= outbox_targets(url) | set(delivered_targets(workos_emulator))

            assert wait_until(seen_committed, 30), [a.output()[-2000:] for a in apps]
            streamed: list[list[str]] = [[] for _ in apps]
            stop = threading.Event()

            def stream(k: int) -> None:
                j = 0
                while not stop.is_set():  # noqa: B023
                    try:
                        streamed[k] += post_batch(clients[k], f"r25-{run}-{k}-b{j}", 100)  # noqa: B023
                    except httpx.HTTPError:
                        return  # the pod is gone
                    j += 1

            streams = [threading.Thread(target=stream, args=(k,), daemon=True) for k in range(len(apps))]
            for thread in streams:
                thread.start()
            assert wait_until(lambda: all(len(s) >= 800 for s in streamed), 30)  # noqa: B023
            for app in apps:
                app.kill_group()
            stop.set()
            for thread in streams:
                thread.join(timeout=30)
        finally:
            for client in clients:
                client.close()
        for pod in pods:
            shutil.rmtree(pod)  # the disk goes with the pod
        assert wait_until(lambda: no_app_write_in_flight(url), 10)
        prefix = f"r25-{run}-"
        committed = {t for t in outbox_targets(url) | set(delivered_targets(workos_emulator)) if t.startswith(prefix)}
        recorded = firm | {t for s in streamed for t in s}
        in_flight = recorded - committed
        assert firm <= committed
        committed_all |= committed
        print(
            f"FIGURE row25 run {run}: {len(recorded)} events recorded (responses received), {len(committed)} committed "
            f"at the SIGKILL, {len(in_flight)} recorded but not yet committed (in flight), "
            f"{len(committed - recorded)} committed for requests whose response never came"
        )

    def drained() -> bool:
        return set(delivered_targets(workos_emulator)) >= committed_all and outbox_depth(url).owed == 0

    assert wait_until(drained, 120, interval=0.2), [r.output()[-3000:] for r in relays]
    assert_delivered_once(workos_emulator, committed_all)
    assert outbox_depth(url).dead == 0
    print(f"FIGURE row25 {len(committed_all)} events committed by 9 pods that vanished, all delivered once")
