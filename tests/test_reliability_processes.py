"""The process-level rows of ../shared/RELIABILITY.md (1, 7, 8, 9, 12, 14, 15, 17), against real processes.

Apps run under uvicorn and gunicorn, jobs as plain python scripts, all on loopback, with the real `workos` SDK inside
them and the WorkOS emulator in this process. Each test counts, by target id (one per recorded business event):
loss = recorded and committed - delivered (must be 0) and dup = delivered twice (must be 0), and checks that no
idempotency key was committed twice. Counts are scaled down for a 2-core box (row 7 kills 10 times, not 50); the
figures each test measures are printed (``pytest -s``) as ``FIGURE ...`` lines.
"""

from __future__ import annotations

import functools
import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from centure_audit_middleware import Auditor
from centure_audit_middleware.delivery.policy import RetryPolicy
from centure_audit_middleware.sinks import WorkOSSink
from centure_audit_middleware.testing import WorkOSEmulator
from centure_audit_middleware.testing.emulator import DownMode

from .apps.reliability_app import ORG
from .reliability_support import (
    ProcessGroup,
    app_env,
    assert_delivered_once,
    delivered_targets,
    free_port,
    gunicorn_argv,
    percentile,
    read_outbox,
    requests_per_key,
    rss_kib,
    script_argv,
    uvicorn_argv,
    wait_until,
)

GRACEFUL_TIMEOUT = 10


@pytest.fixture
def emulator(workos_emulator: WorkOSEmulator) -> WorkOSEmulator:
    return workos_emulator  # (organization org_01TEST, the app's ORG); `procs` stops its processes before it


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


def figure(name: str, value: Any) -> None:
    print(f"FIGURE {name}: {value}")


def post_events(
    client: httpx.Client, prefix: str, count: int, rate: float | None = None
) -> tuple[list[str], list[float]]:
    """POST /events/<prefix>-<i> `count` times, paced at `rate` per second; (target ids, latencies in seconds)."""
    ids: list[str] = []
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        if rate is not None:
            time.sleep(max(0.0, started + i / rate - time.perf_counter()))
        target = f"{prefix}-{i}"
        before = time.perf_counter()
        response = client.post(f"/events/{target}")
        latencies.append(time.perf_counter() - before)
        assert response.status_code == 200, response.text
        ids.append(target)
    return ids, latencies


def drain_here(emulator: WorkOSEmulator, outbox: Path, timeout: float = 20.0) -> float:
    """Deliver what an earlier process left in `outbox`, from an Auditor in this process (a "next start"); the
    seconds it took."""
    sink = WorkOSSink(api_key=emulator.api_key, base_url=emulator.url, timeout=2.0)
    auditor = Auditor(sinks=[sink], outbox=outbox, geoip=False, retry=RetryPolicy(base=0.05, max_delay=0.5))
    started = time.monotonic()
    try:
        assert auditor.flush(timeout), auditor.stats()
    finally:
        auditor.close(timeout=1)
    return time.monotonic() - started


def requests_beyond(emulator: WorkOSEmulator, count: int) -> bool:
    return len(emulator.requests) > count


# -- row 1 -----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_row1_outage_neither_slows_requests_nor_loses_events(
    emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path, mode: DownMode
) -> None:
    """Endpoint down (connections refused, or accepted and never answered) while uvicorn serves ~50 requests/s."""
    port = free_port()
    # A 2 s backoff ceiling (instead of 60 s) so that the drain after a 3 s outage is measured in seconds.
    env = app_env(emulator, outbox, RELIABILITY_RETRY_MAX_DELAY="2")
    server = procs.spawn("uvicorn", uvicorn_argv("fastapi_app", port), env, port=port)
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        warm, _ = post_events(client, "warm", 20)  # first-request costs (imports, pools) are not the point
        up, up_latency = post_events(client, "up", 100, rate=50)
        assert wait_until(lambda: read_outbox(outbox).pending == 0 and len(emulator.events) == 120, 15)
        rss_before, _ = rss_kib(server.pid)

        emulator.set_down(True, mode=mode)
        down_started = time.monotonic()
        down, down_latency = post_events(client, "down", 150, rate=50)
        # Every event recorded during the outage is on disk (the committer runs every 50 ms) and none was sent.
        assert wait_until(lambda: read_outbox(outbox).pending == len(down), 5), read_outbox(outbox).pending
        depth = read_outbox(outbox).pending
        stats = client.get("/stats").json()
        rss_down, peak_down = rss_kib(server.pid)
        outage = time.monotonic() - down_started

        emulator.set_down(False)
        drain_started = time.monotonic()
        everything = [*warm, *up, *down]
        assert emulator.wait_for_events(len(everything), 30), f"{len(emulator.events)} of {len(everything)}"
        drain = time.monotonic() - drain_started
        assert wait_until(lambda: read_outbox(outbox).pending == 0, 10)

    p50_up, p99_up = percentile(up_latency, 50), percentile(up_latency, 99)
    p50_down, p99_down = percentile(down_latency, 50), percentile(down_latency, 99)
    figure(f"row1[{mode}] request latency up p50/p99 ms", f"{p50_up * 1e3:.2f} / {p99_up * 1e3:.2f}")
    figure(f"row1[{mode}] request latency down p50/p99 ms", f"{p50_down * 1e3:.2f} / {p99_down * 1e3:.2f}")
    figure(f"row1[{mode}] outbox depth after {outage:.1f} s outage", f"{depth} (events recorded: {len(down)})")
    figure(f"row1[{mode}] drain time s", f"{drain:.2f}")
    figure(f"row1[{mode}] RSS KiB before/during outage (peak)", f"{rss_before} / {rss_down} ({peak_down})")
    # Requests never wait on delivery: a pipeline on the request path would add a refused connection's retries or
    # a blackholed request's 10 s timeout to every request. Generous bounds: this box is shared and has 2 cores.
    assert p99_down < p99_up + 0.050
    assert p99_down < 0.100
    assert depth == len(down)
    assert stats["dropped"] == {}
    if mode == "refuse":
        # The sender met the outage (a blackholed request is still waiting for its 10 s timeout when it ends).
        assert stats["retried"] > 0
    # Memory stays bounded: the backlog is on disk, not in the process.
    assert rss_down - rss_before < 64 * 1024

    started = time.monotonic()
    server.signal(signal.SIGTERM)
    figure(f"row1[{mode}] uvicorn SIGTERM to exit s", f"{server.wait_exit(GRACEFUL_TIMEOUT):.2f}")
    assert time.monotonic() - started < GRACEFUL_TIMEOUT
    assert_delivered_once(emulator, everything)


# -- row 7 -----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_row7_sigkill_mid_delivery_then_restart(emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path) -> None:
    """A job recording 200 events/s is SIGKILLed while deliveries are in flight, then restarted on the same outbox,
    10 times; a last clean run drains. Committed rows are never lost or duplicated; the hand-off window (recorded
    but never committed) is measured per kill."""
    cycles, rate = 10, 200.0
    emulator.set_latency(0.3)  # every delivery is in flight for 300 ms: each kill lands on some
    # A 1 s lease so that a restart reclaims the dead run's in-flight rows within the test (default: 60 s).
    env = app_env(emulator, outbox, RELIABILITY_LEASE="1.0", RELIABILITY_RETRY_MAX_DELAY="0.5")
    committed: set[str] = set()
    windows: list[int] = []
    rng = random.Random(7)
    for cycle in range(cycles):
        requests_before = len(emulator.requests)
        job = procs.spawn(
            f"job-{cycle}",
            script_argv("stream", "--prefix", f"k{cycle}", "--count", "-1", "--rate", str(rate), "--then", "hang"),
            env,
        )
        job.wait_output(lambda out: out.count("recorded ") >= 40, 30, "40 recorded events")
        assert wait_until(functools.partial(requests_beyond, emulator, requests_before), 10), "nothing in flight"
        time.sleep(rng.uniform(0, 0.05))  # land anywhere in the 50 ms commit interval
        job.kill_group()
        recorded = set(job.lines("recorded"))
        snapshot = read_outbox(outbox, copy=True)  # the next job, not this test, opens the crashed file first
        assert snapshot.integrity == "ok"
        # Committed = on disk now, or already at WorkOS (settled rows leave the file).
        mine = (snapshot.targets | set(delivered_targets(emulator))) & recorded
        committed |= mine
        windows.append(len(recorded - mine))
        # "owner" is printed once the outbox file is open: it reopened cleanly after the previous kill.
        assert len(job.lines("owner")) == 1
    emulator.set_latency(0)
    final = procs.spawn("job-final", script_argv("stream", "--count", "0", "--then", "flush"), env)
    figure("row7 last run (start, drain what the kills left, exit) s", f"{final.wait_exit(30):.2f}")
    assert final.lines("flushed") == ["True"], final.output()

    replays = sum(1 for r in emulator.requests if r.replayed)
    figure("row7 hand-off window per kill (events recorded, never committed)", windows)
    figure("row7 hand-off window per kill ms (at 200 events/s)", [round(w / rate * 1000) for w in windows])
    figure("row7 idempotent replays after restarts", replays)
    assert read_outbox(outbox).pending == 0
    assert_delivered_once(emulator, committed)
    # Kills landed mid-delivery: events WorkOS had committed were sent again after the restart, under the same key.
    assert replays > 0
    # About one group-commit interval of traffic (10 events) plus the commit itself (build, fsync): 4x leaves room
    # for a loaded box's fsync; a committer that fell behind (or a longer interval) would show far more.
    assert max(windows) <= rate * 0.05 * 4, windows


# -- row 8 -----------------------------------------------------------------------------------------------------------
SERVERS = {
    "gunicorn-sync": ("flask_app", "sync", None),
    "gunicorn-gthread": ("flask_app", "gthread", 4),
    "gunicorn-uvicorn-worker": ("fastapi_app", "uvicorn.workers.UvicornWorker", None),
    "uvicorn-workers": ("fastapi_app", None, None),
}


def server_argv(kind: str, port: int, *, preload: bool = False) -> list[str]:
    target, worker_class, threads = SERVERS[kind]
    if worker_class is None:
        return uvicorn_argv(target, port, workers=2)
    return gunicorn_argv(
        target, port, worker_class=worker_class, threads=threads, preload=preload, graceful_timeout=GRACEFUL_TIMEOUT
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "fault"),
    [
        ("gunicorn-sync", "down"),
        ("gunicorn-gthread", "slow"),
        ("gunicorn-uvicorn-worker", "slow"),
        ("uvicorn-workers", "slow"),
    ],
)
def test_row8_sigterm_exits_in_time_and_the_rest_is_delivered_later(
    emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path, kind: str, fault: str
) -> None:
    """SIGTERM with 2 workers while WorkOS is down (nothing can drain) or slow (2 s per event: some drains)."""
    port = free_port()
    # A 2 s backoff ceiling: the retry schedule is kept in the outbox, and with the default 60 s one a next start
    # could legitimately wait a minute before its first attempt.
    env = app_env(emulator, outbox, RELIABILITY_RETRY_MAX_DELAY="2")
    server = procs.spawn(kind, server_argv(kind, port), env, port=port)
    server.wait_ready()
    if fault == "down":
        emulator.set_down(True)
    else:
        emulator.set_latency(2.0)
    with httpx.Client(base_url=server.url, timeout=10, headers={"connection": "close"}) as client:
        sent, _ = post_events(client, kind, 40)

    started = time.monotonic()
    server.signal(signal.SIGTERM)
    shutdown = server.wait_exit(GRACEFUL_TIMEOUT + 5)
    figure(f"row8[{kind}, {fault}] SIGTERM to exit s", f"{shutdown:.2f}")
    log = server.output()
    # Exited by itself before the graceful deadline, not because gunicorn SIGKILLed a worker that hung.
    assert time.monotonic() - started < GRACEFUL_TIMEOUT, log
    assert "SIGKILL" not in log and "Traceback" not in log, log
    snapshot = read_outbox(outbox)
    delivered = set(delivered_targets(emulator))
    figure(
        f"row8[{kind}, {fault}] left in the outbox / delivered before exit", f"{snapshot.pending} / {len(delivered)}"
    )
    # Nothing recorded is lost on SIGTERM: every request's event is delivered or waits in the outbox.
    assert snapshot.targets | delivered >= set(sent)
    assert snapshot.pending > 0  # the scenario: something did not drain in time
    # A clean shutdown hands its leases back (Outbox.release_leases): otherwise the next start waits for them to
    # expire (60 s by default) before it can send what was in flight.
    assert snapshot.leases == {}, f"{len(snapshot.leases)} rows still leased after a graceful exit"

    emulator.set_down(False)
    emulator.set_latency(0)
    figure(f"row8[{kind}, {fault}] drain at next start s", f"{drain_here(emulator, outbox):.2f}")
    assert_delivered_once(emulator, sent)


# -- row 9 -----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gunicorn-sync", "gunicorn-uvicorn-worker"])
def test_row9_gunicorn_preload_workers_deliver_their_own_events(
    emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path, kind: str
) -> None:
    """`--preload`: the master builds the app (auditor installed, dispatcher and warm-up threads running) and records
    5 events, then forks 2 workers at once. Workers must deliver what they record while they run; the master's
    events go out once."""
    port = free_port()
    env = app_env(emulator, outbox, RELIABILITY_RECORD_AT_START="5")
    server = procs.spawn(kind, server_argv(kind, port, preload=True), env, port=port)
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=10, headers={"connection": "close"}) as client:
        sent, _ = post_events(client, "w", 20)
    master_events = {f"start-{server.pid}-{i}" for i in range(5)}
    expected = master_events | set(sent)
    delivered_while_running = emulator.wait_for_events(len(expected), 15)
    if not delivered_while_running:
        server.dump_stacks()  # the log then shows where the workers' pipeline is stuck
    server.signal(signal.SIGTERM)
    shutdown = server.wait_exit(GRACEFUL_TIMEOUT + 5)
    figure(f"row9[{kind} --preload] SIGTERM to exit s", f"{shutdown:.2f}")
    log = server.output()
    assert delivered_while_running, f"delivered {sorted(delivered_targets(emulator))}\n{log}"
    assert shutdown < GRACEFUL_TIMEOUT and "SIGKILL" not in log, log
    assert_delivered_once(emulator, expected)
    assert max(requests_per_key(emulator).values()) == 1  # no faults here: not even a replay


@pytest.mark.slow
def test_row9_multiprocessing_fork_while_the_dispatcher_locks_are_held(
    emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path
) -> None:
    """A job forks a `multiprocessing` child while another thread holds every lock of the delivery path; the last
    parent events are still in its queue at the fork. The child delivers its own events and exits; the parent's go
    out exactly once."""
    job = procs.spawn(
        "fork-job",
        script_argv("fork", "--prefix", "m", "--count", "5", "--flush-timeout", "8"),
        app_env(emulator, outbox),
    )
    elapsed = job.wait_exit(40)
    figure("row9[multiprocessing fork] job run time s", f"{elapsed:.2f}")
    out = job.output()
    assert job.popen.returncode == 0, out
    assert job.lines("child-flushed") == ["True"], out
    assert job.lines("child-exit") == ["0"], out  # no deadlock: the child finished its work and exited
    assert job.lines("flushed") == ["True"], out
    expected = {f"m-parent-{i}" for i in range(10)} | {f"m-child-{i}" for i in range(5)}
    expected |= {f"m-child-request-{i}" for i in range(5)}
    assert set(job.lines("recorded")) == expected
    assert_delivered_once(emulator, expected)
    # Parent and child share the outbox: each row was claimed by one of them and sent once.
    assert max(requests_per_key(emulator).values()) == 1


# -- row 12 ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_row12_shared_outbox_one_process_sigkilled(emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path) -> None:
    """4 jobs record into one outbox file; one at a time sends (the outbox's sender lock). The sender is SIGKILLed
    while it holds leases: another job takes over and hands the dead one's leases back at once, long before they
    expire (RELIABILITY row 23), so each event is sent by one process (the victim's leased rows at most twice: once
    in flight when it died, once by the new sender), and everything committed arrives once."""
    lease = 30.0  # far longer than the test may take: anything sent again after the kill was reclaimed, not expired
    # Deliveries take a while (a claimed batch is in flight for seconds): the victim dies holding leases, however
    # the kill falls between its rounds.
    emulator.set_latency(0.2)
    env = app_env(emulator, outbox, RELIABILITY_LEASE=str(lease), RELIABILITY_RETRY_MAX_DELAY="0.5")
    jobs = [
        procs.spawn(
            f"shared-{k}",
            script_argv("stream", "--prefix", f"s{k}", "--count", "150", "--rate", "150", "--flush-timeout", "30"),
            env,
        )
        for k in range(4)
    ]
    for job in jobs:
        job.wait_output(lambda out: "owner " in out, 45, "the outbox opened")
    owners = {job.lines("owner")[0]: job for job in jobs}
    assert wait_until(lambda: len(read_outbox(outbox).leases) >= 20, 30), "no lease held"
    holders = {o for o, _ in read_outbox(outbox).leases.values()}
    assert len(holders) == 1, f"more than one process sends for the outbox: {holders}"
    [owner] = holders
    victim = owners[owner]
    survivors = [job for job in jobs if job is not victim]
    # The victim's leases are read just before the kill: just after it, a standby may already have taken over and
    # handed them back (that is the point), and they would no longer show.
    before_kill = read_outbox(outbox)
    killed_at = time.time()
    victim.kill_group()
    at_kill = read_outbox(outbox)
    victim_leases = {event_id: until for event_id, (o, until) in before_kill.leases.items() if o == owner}
    victim_recorded = set(victim.lines("recorded"))
    victim_committed = (at_kill.targets | set(delivered_targets(emulator))) & victim_recorded

    for job in survivors:
        job.wait_exit(45)
        assert job.popen.returncode == 0 and job.lines("flushed") == ["True"], job.output()
    survivors_recorded = {t for job in survivors for t in job.lines("recorded")}
    assert len(survivors_recorded) == 3 * 150

    attempts = requests_per_key(emulator)
    sent_twice = {key for key, n in attempts.items() if n > 1}
    figure(
        "row12 victim leases at kill / hand-off window",
        f"{len(victim_leases)} / {len(victim_recorded - victim_committed)}",
    )
    figure("row12 keys sent more than once", len(sent_twice))
    assert victim_leases, "the victim held no lease when it died: the scenario did not happen"
    assert read_outbox(outbox).pending == 0
    assert_delivered_once(emulator, survivors_recorded | victim_committed)
    # Claimed once: only a dead process's leases were ever claimed again.
    assert sent_twice <= set(victim_leases), sent_twice - set(victim_leases)
    # Reclaimed at once: what was sent again after the kill went out before the victim's 30 s leases ran out.
    resent = [
        (r.received_at, victim_leases[key])
        for r in emulator.requests
        if (key := r.header("idempotency-key")) in victim_leases and r.received_at > killed_at + 0.5
    ]
    assert resent, "none of the victim's leased rows was sent again: the scenario did not happen"
    late = [at - killed_at for at, until in resent if at >= until]
    assert not late, f"leased rows resent only once their leases expired, {late} s after the kill"


@pytest.mark.slow
def test_row12_batch_slower_than_the_lease_is_not_sent_twice(
    emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path
) -> None:
    """Two healthy jobs share an outbox while WorkOS is slow: a claimed batch takes longer to send than the lease
    lasts (scaled down: 1 s lease, 250 ms per request; with the defaults, 60 s and 256 claims sent 8 at a time, any
    WorkOS slower than ~1.9 s per request). The other job must not claim and send rows the first is still sending."""
    emulator.set_latency(0.25)
    env = app_env(emulator, outbox, RELIABILITY_LEASE="1.0")
    jobs = [
        procs.spawn(
            f"slow-{name}",
            script_argv("stream", "--prefix", name, "--count", str(count), "--rate", "2000", "--flush-timeout", "30"),
            env,
        )
        for name, count in (("a", 80), ("b", 1))
    ]
    recorded: set[str] = set()
    for job in jobs:
        job.wait_exit(45)
        assert job.popen.returncode == 0 and job.lines("flushed") == ["True"], job.output()
        recorded |= set(job.lines("recorded"))
    attempts = requests_per_key(emulator)
    figure("row12[slow WorkOS] keys sent more than once", sum(1 for n in attempts.values() if n > 1))
    assert_delivered_once(emulator, recorded)  # WorkOS deduplicates by key: dup 0 either way
    assert max(attempts.values()) == 1, "rows were claimed and sent again while their first send was still running"


# -- row 14 ----------------------------------------------------------------------------------------------------------
EXIT_CODES = {"sys_exit": 3, "fall_off": 0, "exception": 1}


@pytest.mark.parametrize(
    ("how", "endpoint"),
    [("sys_exit", "up"), ("fall_off", "up"), ("exception", "up"), ("sys_exit", "down")],
)
def test_row14_script_exit_delivers_or_keeps_its_events(
    emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path, how: str, endpoint: str
) -> None:
    """A job records 20 events and leaves at once, with no flush of its own: the atexit hook delivers them (WorkOS
    up) or leaves them in the outbox (WorkOS down) within the flush budget."""
    flush_timeout = 3.0
    if endpoint == "down":
        emulator.set_down(True)
    job = procs.spawn(
        "exit-job",
        script_argv("exit", "--prefix", "x", "--count", "20", "--how", how),
        app_env(emulator, outbox, RELIABILITY_FLUSH_TIMEOUT=str(flush_timeout)),
    )
    job.wait_output(lambda out: "done" in out, 45, "done")
    done_at = time.monotonic()
    exit_time = job.wait_exit(flush_timeout + 10)
    figure(f"row14[{how}, WorkOS {endpoint}] last record to exit s", f"{time.monotonic() - done_at:.2f}")
    assert job.popen.returncode == EXIT_CODES[how], job.output()
    recorded = set(job.lines("recorded"))
    assert len(recorded) == 20
    if endpoint == "up":
        assert_delivered_once(emulator, recorded)
        # Delivered by the exit flush itself, not left over after it timed out.
        assert exit_time < flush_timeout, job.output()
        assert read_outbox(outbox).pending == 0
    else:
        assert read_outbox(outbox).targets == recorded
        emulator.set_down(False)
        drain_here(emulator, outbox)
        assert_delivered_once(emulator, recorded)


def test_row14_exit_while_a_batch_is_in_flight_stays_within_the_flush_budget(
    emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path
) -> None:
    """A job returns while its sender is busy with a batch against a slow WorkOS (2 s per request, 8 at a time):
    the exit must not wait for the whole batch (here ~25 s), only for the flush budget and the sends already in
    flight; what is left waits in the outbox and goes out once at the next start."""
    flush_timeout, latency = 3.0, 2.0
    emulator.set_latency(latency)
    job = procs.spawn(
        "exit-job",
        script_argv("stream", "--prefix", "y", "--count", "100", "--rate", "2000", "--linger", "0.5", "--then", "exit"),
        app_env(emulator, outbox, RELIABILITY_FLUSH_TIMEOUT=str(flush_timeout)),
    )
    job.wait_output(lambda out: "done" in out, 45, "done")
    exit_time = job.wait_exit(60)
    figure("row14[batch in flight, WorkOS 2 s/request] last record to exit s", f"{exit_time:.2f}")
    recorded = set(job.lines("recorded"))
    assert len(recorded) == 100
    assert read_outbox(outbox).targets | set(delivered_targets(emulator)) == recorded
    assert exit_time < flush_timeout + latency + 1.5, job.output()
    emulator.set_latency(0)
    drain_here(emulator, outbox)
    assert_delivered_once(emulator, recorded)


# -- row 15 ----------------------------------------------------------------------------------------------------------
def test_row15_delivery_outlives_the_apps_event_loop(
    emulator: WorkOSEmulator, procs: ProcessGroup, outbox: Path
) -> None:
    """The FastAPI app is driven inside `asyncio.run()` in a thread (async views on that loop, sync views in its
    thread pool); the loop closes; then the job records once more and flushes."""
    job = procs.spawn("loop-job", script_argv("loop", "--prefix", "l", "--count", "5"), app_env(emulator, outbox))
    job.wait_exit(45)
    out = job.output()
    assert job.popen.returncode == 0, out
    assert job.lines("flushed") == ["True"], out
    assert "Event loop is closed" not in out and "Traceback" not in out and "error" not in out.lower(), out
    recorded = set(job.lines("recorded"))
    assert len(recorded) == 11
    assert_delivered_once(emulator, recorded)


# -- row 17 ----------------------------------------------------------------------------------------------------------
FAILING_REQUESTS = [
    ("/events/ok-1", 200),
    ("/fail/f403?status=403", 403),
    ("/fail/f404?status=404", 404),
    ("/fail/f409?status=409", 409),
    ("/fail/f422?status=422", 422),
    ("/crash/c500", 500),
    ("/fail/f503?status=503", 503),
]
#: FastAPI's own request validation answers 422 before the view runs (Flask's `type=int` falls back to a default).
VALIDATION_REQUEST = ("/events/v422?size=not-a-number", 422)


def responses_seen(url: str, requests: list[tuple[str, int]]) -> list[tuple[int, str, dict[str, str]]]:
    """(status, body, headers but the per-response date/server ones) of each request, as a client sees them."""
    seen = []
    # One connection per request: after an unhandled error uvicorn closes the connection, and a keep-alive client
    # racing that close would see a reset that says nothing about the response.
    with httpx.Client(base_url=url, timeout=10, headers={"connection": "close"}) as client:
        for path, _ in requests:
            response = client.post(path)
            headers = {k: v for k, v in response.headers.items() if k not in ("date", "server", "connection")}
            seen.append((response.status_code, response.text, headers))
    return seen


@pytest.mark.parametrize("framework", ["fastapi-uvicorn", "flask-gunicorn"])
def test_row17_failed_requests_recorded_by_policy_and_responses_unchanged(
    emulator: WorkOSEmulator, procs: ProcessGroup, tmp_path: Path, framework: str
) -> None:
    """Three servers of one app: audited with CENTURE_AUDIT_RECORD_FAILURES=1, audited with the default policy
    (successes only), and without the auditor. Clients see the same responses from all three; the first records every
    failure with its status, the second none."""
    requests = [*FAILING_REQUESTS, VALIDATION_REQUEST] if framework == "fastapi-uvicorn" else FAILING_REQUESTS
    with WorkOSEmulator(organizations=[ORG]) as default_policy_emulator:
        variants = {
            "record-failures": app_env(emulator, tmp_path / "a.db", CENTURE_AUDIT_RECORD_FAILURES="1"),
            "default-policy": app_env(default_policy_emulator, tmp_path / "b.db"),
            "no-auditor": app_env(emulator, tmp_path / "c.db", RELIABILITY_AUDIT="0"),
        }
        servers = {}
        for name, env in variants.items():  # spawned together: they boot in parallel
            port = free_port()
            if framework == "fastapi-uvicorn":
                argv = uvicorn_argv("fastapi_app", port)
            else:
                argv = gunicorn_argv("flask_app", port, workers=1, graceful_timeout=GRACEFUL_TIMEOUT)
            servers[name] = procs.spawn(name, argv, env, port=port)
        for server in servers.values():
            server.wait_ready()
        seen = {name: responses_seen(server.url, requests) for name, server in servers.items()}
        assert [status for status, _, _ in seen["no-auditor"]] == [status for _, status in requests]
        assert seen["record-failures"] == seen["no-auditor"]
        assert seen["default-policy"] == seen["no-auditor"]

        for name in ("record-failures", "default-policy"):
            # The shutdown flush (lifespan, or atexit in a gunicorn worker): nothing recorded arrives after it.
            servers[name].signal(signal.SIGTERM)
            servers[name].wait_exit(GRACEFUL_TIMEOUT + 5)
        expected = {path.split("/")[2].split("?")[0]: status for path, status in requests}
        assert_delivered_once(emulator, expected)
        statuses = {
            str(e.event["targets"][0]["id"]): e.event.get("metadata", {}).get("http_status") for e in emulator.events
        }
        assert statuses == {target: (None if status < 400 else status) for target, status in expected.items()}
        assert set(delivered_targets(default_policy_emulator)) == {"ok-1"}
        log = servers["record-failures"].output()
        assert log.count("Traceback") == 1 and "crash c500" in log, log  # the app's own error, logged once
