"""Helpers for the process-level reliability tests: real servers and scripts on loopback, and what they left behind.

Every process is started in its own session (so that gunicorn's and uvicorn's workers can be killed with their
master, by the group id we created) with its output in a file (a pipe nobody reads can fill up and stall the
server; a file also survives a SIGKILL and is read afterwards). `ProcessGroup` kills and reaps whatever is still
running when a test ends, whatever happened in it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from centure_audit_middleware.testing import WorkOSEmulator

from .apps.reliability_app import ACTION, DUMP_STACKS_SIGNAL

__all__ = [
    "APP",
    "REPO_ROOT",
    "SCRIPT",
    "OutboxSnapshot",
    "Proc",
    "ProcessGroup",
    "app_env",
    "assert_delivered_once",
    "delivered_targets",
    "free_port",
    "gunicorn_argv",
    "percentile",
    "read_outbox",
    "requests_per_key",
    "rss_kib",
    "script_argv",
    "uvicorn_argv",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.reliability_app"
SCRIPT = "tests.apps.record_script"


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick); the server binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app_env(emulator: WorkOSEmulator, outbox: Path | str, **extra: str) -> dict[str, str]:
    """The environment of an app or script process: the emulator as WorkOS, our outbox (a file, or a
    ``postgresql://`` URL), no local store.

    Our own variables are removed from the inherited environment first, so a developer's shell can't change what a
    test means."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CENTURE_AUDIT_", "WORKOS_", "RELIABILITY_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        WORKOS_API_KEY=emulator.api_key,
        WORKOS_BASE_URL=emulator.url,
        CENTURE_AUDIT_OUTBOX=str(outbox),
        CENTURE_AUDIT_STORE="off",
    )
    env.update(extra)
    return env


def uvicorn_argv(target: str, port: int, *, workers: int | None = None) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", f"{APP}:{target}", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv


def gunicorn_argv(
    target: str,
    port: int,
    *,
    worker_class: str = "sync",
    workers: int = 2,
    threads: int | None = None,
    preload: bool = False,
    graceful_timeout: int = 10,
) -> list[str]:
    argv = [sys.executable, "-m", "gunicorn", f"{APP}:{target}", "--bind", f"127.0.0.1:{port}"]
    argv += ["--worker-class", worker_class, "--workers", str(workers), "--graceful-timeout", str(graceful_timeout)]
    argv += ["--log-level", "info"]  # "Worker exiting" and SIGKILL notices are what the shutdown tests read
    # gunicorn >= 24 opens a control socket in ~/.gunicorn by default: one path shared by every gunicorn on the box.
    argv.append("--no-control-socket")
    if threads is not None:
        argv += ["--threads", str(threads)]
    if preload:
        argv.append("--preload")
    return argv


def script_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", SCRIPT, *args]


@dataclass
class Proc:
    """One process we started (and, through its session, its children)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} does not serve HTTP"
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self, prefix: str) -> list[str]:
        """The words after `prefix` on each output line that starts with it (the scripts' protocol)."""
        return [line[len(prefix) :].strip() for line in self.output().splitlines() if line.startswith(prefix)]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, timeout: float = 45.0) -> dict[str, Any]:
        """Poll `GET /health` until the server answers; its JSON. Fails at once, with the log, if it died."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                if not self.alive():
                    raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    response = client.get("/health")
                    if response.status_code == 200:
                        health: dict[str, Any] = response.json()
                        return health
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.output()}")
                time.sleep(0.1)

    def wait_output(self, predicate: Callable[[str], bool], timeout: float, what: str) -> None:
        """Until `predicate(output)` holds; fails (with the log) on timeout or if the process exits first."""
        deadline = time.monotonic() + timeout
        while not predicate(self.output()):
            if not self.alive() and not predicate(self.output()):
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} after {timeout} s:\n{self.output()}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        """To the process itself only: a server's master forwards SIGTERM to its workers as it sees fit."""
        self.popen.send_signal(signum)

    def dump_stacks(self) -> None:
        """Every thread's stack of every process of the group, into the log (for a test about to fail on a hang)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, DUMP_STACKS_SIGNAL)
        time.sleep(0.5)

    def kill_group(self) -> None:
        """SIGKILL the process and everything in its session (workers), then reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def wait_exit(self, timeout: float) -> float:
        """Seconds from now until the process exits; on timeout, kills it and fails."""
        started = time.monotonic()
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            self.kill_group()
            raise AssertionError(f"{self.name} still running {timeout} s later:\n{self.output()}") from None
        return time.monotonic() - started


class ProcessGroup:
    """Starts processes for one test and kills whatever is left of them at the end (`close()`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[Proc] = []

    def spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], *, port: int | None = None, cwd: Path = REPO_ROOT
    ) -> Proc:
        """Start `argv` in `cwd` (the repository by default; the environment's PYTHONPATH finds the tests' apps)."""
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers die with it in kill_group()
            )
        proc = Proc(name, popen, log, port)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            # Even an exited master may have left workers behind in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100): with 100 samples, p99 is the second largest."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of `pid` in KiB, from /proc (VmRSS, VmHWM)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@dataclass(frozen=True)
class OutboxSnapshot:
    """What an outbox file holds, read from outside the processes that write it."""

    #: event id -> target id of every event row still in the file (pending or dead for some sink)
    targets_by_id: dict[str, str]
    #: deliveries still pending for the WorkOS sink
    pending: int
    #: event id -> (lease owner, lease until) of pending WorkOS deliveries that hold an unexpired-at-write lease
    leases: dict[str, tuple[str, float]]
    dead: int
    integrity: str

    @property
    def targets(self) -> set[str]:
        return set(self.targets_by_id.values())


def read_outbox(path: Path, *, copy: bool = False) -> OutboxSnapshot:
    """Read the outbox as a separate SQLite client would (WAL readers don't block the writers).

    `copy=True` reads a copy of the database and its WAL instead: after a crash, the first connection to open the
    file recovers the WAL (and the last to close checkpoints it), and that must be the restarted app's, not ours."""
    if not path.exists():
        return OutboxSnapshot({}, 0, {}, 0, "missing")
    if copy:
        with tempfile.TemporaryDirectory() as directory:
            for suffix in ("", "-wal"):  # not -shm: SQLite rebuilds the WAL index, as after a reboot
                source = Path(f"{path}{suffix}")
                if source.exists():
                    shutil.copyfile(source, Path(directory) / f"{path.name}{suffix}")
            return read_outbox(Path(directory) / path.name)
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        events = conn.execute("SELECT id, body FROM events").fetchall()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        # Events an app in relay mode committed, not yet completed by a relay: owed to WorkOS too.
        captured = (
            conn.execute("SELECT count(*) FROM events WHERE captured = 1").fetchone()[0] if "captured" in columns else 0
        )
        deliveries = conn.execute(
            "SELECT event_id, state, lease_owner, lease_until FROM deliveries WHERE sink = 'workos'"
        ).fetchall()
        (integrity,) = conn.execute("PRAGMA quick_check").fetchone()
    targets = {event_id: _target_of(json.loads(body)) for event_id, body in events}
    pending = [row for row in deliveries if row[1] == "pending"]
    leases = {row[0]: (str(row[2]), float(row[3])) for row in pending if row[2] is not None}
    dead = sum(1 for row in deliveries if row[1] == "dead")
    return OutboxSnapshot(targets, len(pending) + captured, leases, dead, str(integrity))


def _target_of(event: Mapping[str, Any]) -> str:
    targets = event.get("targets") or [{}]
    return str(targets[0].get("id"))


def delivered_targets(emulator: WorkOSEmulator) -> Counter[str]:
    """Target id -> how many times the emulator committed a `reliability.test` event for it: the business-level
    count. An event id is assigned when an event is committed to the outbox, so a pipeline that committed one
    recorded event twice (e.g. a forked child replaying its parent's queue) shows here, not in `count_by_key`."""
    return Counter(_target_of(e.event) for e in emulator.events if e.event.get("action") == ACTION)


def requests_per_key(emulator: WorkOSEmulator) -> Counter[str | None]:
    """Idempotency key -> event requests that reached the emulator with it (attempts, replays included)."""
    return Counter(r.header("idempotency-key") for r in emulator.requests if r.path.endswith("/audit_logs/events"))


def assert_delivered_once(emulator: WorkOSEmulator, expected: Iterable[str]) -> None:
    """loss = 0 and dup = 0 for the target ids `expected` (and nothing else delivered)."""
    expected = set(expected)
    delivered = delivered_targets(emulator)
    lost = expected - set(delivered)
    assert not lost, f"loss = {len(lost)}: {sorted(lost)[:20]}"
    unexpected = set(delivered) - expected
    assert not unexpected, f"delivered but never recorded: {sorted(unexpected)[:20]}"
    duplicated = {t: n for t, n in delivered.items() if n > 1}
    assert not duplicated, f"dup = {sum(duplicated.values()) - len(duplicated)}: {duplicated}"
    by_key = emulator.count_by_key()
    assert set(by_key.values()) <= {1}, f"committed twice under one key: {[k for k, n in by_key.items() if n > 1]}"
