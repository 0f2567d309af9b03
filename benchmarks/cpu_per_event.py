"""Process CPU per audited event, until flushed, minus the bare app: what auditing costs the app's whole process.

    .venv/bin/python benchmarks/cpu_per_event.py [--events 5000] [--rounds 3] [--quick] [--all] [--json]

DESIGN §5: the background threads (committer, sender, the SDK) share the GIL with the requests, so the budget is
on `time.process_time()` (every thread of the process), not on the request path alone: ≤ 25 µs per event.

Method: a minimal Starlette app with one endpoint, `POST /projects/{project_id}/api-keys`, decorated with
`@audited("api_key.create", targets=[Target.from_path("project", "project_id")])`; the handler sets the actor and
the organization with `audit.actor(...)` / `audit.organization(...)`, as an auth dependency would. Requests carry
a real browser User-Agent. The app is called N times as a raw ASGI app (no server, no HTTP client), then
`auditor.flush()` waits until every event is delivered to every sink; the CPU of calls plus flush, minus the CPU
of N calls of the same app without the auditor, divided by N, is the figure. Each round builds a fresh auditor in
a fresh temporary directory (outbox and store start empty), warms it up (200 events, flushed), then measures;
the table shows the best of R rounds (slower rounds measure the neighbours, not the code).

Rows (configurations):
- `default`: `Auditor()`, exactly as an app writes it (today: the local SQLite event store as the only sink),
  run with the round's temporary directory as the working directory, where its default files go. Always run; a
  few seconds.
- `workos` (`--all`): what `Auditor.from_env()` gives with `WORKOS_API_KEY` set: the WorkOS sink (the SDK on
  the sink's default, standard-library transport) plus the local store. WorkOS is the project's emulator in
  another process, so only the client's side of each HTTP call is counted. WorkOS's rate limit (6,000 / 60 s)
  is off: it would only spread the same sends over more wall time.
- `workos-sdk` (only with `--rows`): the same with `WorkOSSink(transport="sdk")`, the SDK's own httpx client.
- `relay` (`--all`): `Auditor(delivery="relay")`, sends made by `centure-audit relay` in another process; "n/a"
  while that option does not exist.
- `record-all` (`--all`): `Auditor(record_all=RecordAll(prefixes=["/projects/"]))` and the endpoint undecorated:
  the catch-all records every call as `api.request`, with method, route, status and path parameters as metadata.

Geo: the default, whatever `Auditor()` finds with `geoip=None` (`$CENTURE_AUDIT_GEOIP_DB`, then the usual
directories); the output says what was used. The caller's variable is ignored (`--geoip PATH` sets it), so that
the default row means the same on every machine that has no system database. The client address is public
(81.2.69.142, in MaxMind's test databases), so a database, when there is one, is really consulted.

The default invocation prints its summary table in its last lines and ends well within 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from centure_audit_middleware import Actor, Auditor, RecordAll, Target, audit, audited
from centure_audit_middleware.sinks.base import Sink
from centure_audit_middleware.types import ASGIApp, Message, Scope

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apps.bench_emulator import EmulatorProcess

TARGET_US = 25.0
ORG = "org_01BENCH"
ACTOR = Actor(
    "user_01BENCH",
    name="Ada Lovelace",
    metadata={"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"},
)
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
CLIENT_IP = "81.2.69.142"
WARM_UP = 200
FLUSH_TIMEOUT = 120.0
RELAY_FLUSH_TIMEOUT = 10.0  # without a `centure-audit relay` process, nothing in this process may deliver
ROWS = ("default", "workos", "relay", "record-all", "workos-sdk")
ALL_ROWS = ROWS[:4]  # --all; workos-sdk (the SDK's own, heavier HTTP client) only when asked for with --rows
#: rows whose only sink is the local store (no emulator)
LOCAL_ROWS = ("default", "record-all")
#: passed as **kwargs, so that this type-checks both before and after the option exists
RELAY: dict[str, Any] = {"delivery": "relay"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- the app -----------------------------------------------------------------------------------------------------
@audited("api_key.create", targets=[Target.from_path("project", "project_id")])
async def create_key(request: Request) -> Response:
    if audit.active:  # the same endpoint serves the bare app, where there is no audit context
        audit.actor(ACTOR)
        audit.organization(ORG)
    return JSONResponse({"id": "key_01BENCH", "project": request.path_params["project_id"]}, status_code=201)


async def create_key_undecorated(request: Request) -> Response:
    """`create_key` without `@audited` (which marks the function itself, so it needs a function of its own)."""
    if audit.active:
        audit.actor(ACTOR)
        audit.organization(ORG)
    return JSONResponse({"id": "key_01BENCH", "project": request.path_params["project_id"]}, status_code=201)


def make_app(row: str = "default") -> Starlette:
    # The record-all row leaves the endpoint undecorated: the catch-all records it as api.request.
    endpoint = create_key_undecorated if row == "record-all" else create_key
    return Starlette(routes=[Route("/projects/{project_id}/api-keys", endpoint, methods=["POST"])])


SCOPE: Scope = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "https",
    "path": "/projects/proj_01BENCH/api-keys",
    "raw_path": b"/projects/proj_01BENCH/api-keys",
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"app.example.com"),
        (b"user-agent", USER_AGENT.encode()),
        (b"accept", b"application/json, text/plain, */*"),
        (b"accept-language", b"en-GB,en;q=0.9"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
        (b"content-type", b"application/json"),
        (b"content-length", b"0"),
        (b"origin", b"https://app.example.com"),
    ],
    "client": (CLIENT_IP, 50000),
    "server": ("10.0.0.2", 443),
}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


async def _calls(app: ASGIApp, n: int) -> None:
    template = SCOPE
    for _ in range(n):
        await app(dict(template), _receive, _send)


# -- configurations ----------------------------------------------------------------------------------------------
@dataclass
class Env:
    """What the configurations share for the whole run."""

    emulator: EmulatorProcess | None = None
    relay_cli: bool = False


def relay_supported() -> bool:
    """Whether `Auditor(delivery="relay")` exists (another engineer adds it; until then the row says n/a)."""
    with tempfile.TemporaryDirectory() as tmp:
        from centure_audit_middleware.sinks import MemorySink

        try:
            auditor = Auditor(sinks=[MemorySink()], outbox=Path(tmp) / "probe.db", geoip=False, **RELAY)
        except TypeError:
            return False
        auditor.close(timeout=1)
        return True


def relay_cli_supported() -> bool:
    cli = Path(sys.executable).with_name("centure-audit")
    result = subprocess.run([str(cli), "relay", "--help"], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


def _store_sink(path: Path) -> Sink:
    from centure_audit_middleware.sinks import StoreSink

    return StoreSink(path)


def make_auditor(row: str, workdir: Path, env: Env) -> Auditor:
    outbox = workdir / "audit-outbox.db"
    store = workdir / "audit.db"
    if row == "default":
        # Auditor() exactly as an app writes it (StoreSink() in ./audit.db, ./audit-outbox.db): the caller has made
        # the round's temporary directory the working directory.
        return Auditor()
    if row == "record-all":
        return Auditor(record_all=RecordAll(prefixes=["/projects/"]))
    assert env.emulator is not None
    from centure_audit_middleware.sinks import WorkOSSink

    transport: Literal["sdk", "stdlib"] = "sdk" if row == "workos-sdk" else "stdlib"
    sinks = [
        WorkOSSink(api_key=env.emulator.api_key, base_url=env.emulator.url, transport=transport),
        _store_sink(store),
    ]
    if row != "relay":
        return Auditor(sinks, outbox=outbox, rate_limits={"workos": None})
    return Auditor(sinks, outbox=outbox, rate_limits={"workos": None}, **RELAY)


@contextlib.contextmanager
def relay_process(workdir: Path, env: Env) -> Iterator[None]:
    """`centure-audit relay` on the round's outbox, when the CLI has it (configured like `Auditor.from_env()`)."""
    if not env.relay_cli or env.emulator is None:
        yield
        return
    cli = Path(sys.executable).with_name("centure-audit")
    child_env = dict(
        os.environ,
        WORKOS_API_KEY=env.emulator.api_key,
        WORKOS_BASE_URL=env.emulator.url,
        CENTURE_AUDIT_OUTBOX=str(workdir / "audit-outbox.db"),
        CENTURE_AUDIT_STORE=str(workdir / "audit.db"),
        CENTURE_AUDIT_RATE_LIMIT="off",
    )
    log = workdir / "relay.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(cli), "relay"], env=child_env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        # Until it says it delivers: a relay stopped before its signal handlers are set would just die, undrained.
        deadline = time.monotonic() + 60
        while b"centure-audit relay: delivering" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"centure-audit relay did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def store_count(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_events").fetchone()[0])


# -- measuring ---------------------------------------------------------------------------------------------------
def request_thread_cpu() -> float:
    """CPU seconds of this (the request-serving) thread from /proc, 0.0 where there is no /proc: the rest of the
    process CPU is the background threads'. (`time.thread_time()` would do, but only from inside each thread.)"""
    try:
        stat = Path(f"/proc/self/task/{threading.get_native_id()}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Sample:
    cpu_us: float  # process CPU per call (calls, plus flush for the audited rows)
    wall_us: float
    request_thread_us: float = 0.0  # the part of cpu_us spent in the thread making the calls
    flushed: bool = True
    stored: int = 0
    sent_to_workos: int = 0


@dataclass
class Row:
    name: str
    samples: list[Sample] = field(default_factory=list)
    note: str = ""
    available: bool = True

    def best(self) -> Sample:
        return min(self.samples, key=lambda s: s.cpu_us)


def measure_bare(loop: asyncio.AbstractEventLoop, n: int) -> Sample:
    app = make_app()
    loop.run_until_complete(_calls(app, WARM_UP))
    gc.collect()
    cpu, wall, main = time.process_time(), time.perf_counter(), request_thread_cpu()
    loop.run_until_complete(_calls(app, n))
    cpu_s, wall_s, main_s = time.process_time() - cpu, time.perf_counter() - wall, request_thread_cpu() - main
    return Sample(cpu_s / n * 1e6, wall_s / n * 1e6, main_s / n * 1e6)


def measure_audited(loop: asyncio.AbstractEventLoop, row: str, n: int, env: Env, geo_seen: dict[str, str]) -> Sample:
    workdir = Path(tempfile.mkdtemp(prefix=f"cpu-per-event-{row}-"))
    before = env.emulator.count() if env.emulator is not None else 0
    try:
        with contextlib.chdir(workdir), relay_process(workdir, env):
            auditor = make_auditor(row, workdir, env)
            try:
                app = make_app(row)
                auditor.install(app)  # starts the dispatcher and, in the background, loads the enrichers
                auditor.parse_user_agent(USER_AGENT)  # waits for that warm-up: no round pays for it
                geo_seen.setdefault("geo", describe_geo(auditor))
                loop.run_until_complete(_calls(app, WARM_UP))
                if not auditor.flush(FLUSH_TIMEOUT):
                    raise RuntimeError(f"{row}: the warm-up events were not flushed within {FLUSH_TIMEOUT} s")
                gc.collect()
                cpu, wall, main = time.process_time(), time.perf_counter(), request_thread_cpu()
                loop.run_until_complete(_calls(app, n))
                flushed = auditor.flush(FLUSH_TIMEOUT if row != "relay" or env.relay_cli else RELAY_FLUSH_TIMEOUT)
                cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
                main_s = request_thread_cpu() - main
                stats = auditor.stats()
            finally:
                auditor.close(timeout=10)
        stored = store_count(workdir / "audit.db")
        sent = (env.emulator.count() - before) if env.emulator is not None and row not in LOCAL_ROWS else 0
        if stats["dead_lettered"] or stats["dropped"]:
            raise RuntimeError(f"{row}: events dead-lettered or dropped: {stats}")
        return Sample(cpu_s / n * 1e6, wall_s / n * 1e6, main_s / n * 1e6, flushed, stored, sent)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def describe_geo(auditor: Auditor) -> str:
    geo = getattr(auditor, "_geo", None)
    if geo is None:
        return "geo off (no locator)"
    status = geo.status()
    if not status.get("enabled"):
        return "Auditor default discovery found no GeoIP database: geo lookups answer 'no location'"
    return f"GeoIP database {status.get('db_path')} ({status.get('db_type')})"


def check_counts(rows: list[Row], n: int) -> list[str]:
    """Every event of every measured round reached each of its sinks (warm-up included): else the figure measures
    a broken pipeline, and the run fails."""
    problems = []
    expected = n + WARM_UP
    for row in rows:
        for sample in row.samples:
            if row.name == "bare":
                continue
            if not sample.flushed:
                problems.append(f"{row.name}: not flushed within {FLUSH_TIMEOUT} s")
            if sample.stored != expected:
                problems.append(f"{row.name}: {sample.stored} events in the store, expected {expected}")
            if row.name not in LOCAL_ROWS and sample.sent_to_workos != expected:
                problems.append(f"{row.name}: {sample.sent_to_workos} events at the emulator, expected {expected}")
    return problems


def table(rows: list[Row]) -> list[str]:
    bare = next(r for r in rows if r.name == "bare").best()
    head = ("config", "CPU µs/ev", "- bare", "req thr", "bg thr", "wall µs")
    width = max(8, *(len(r.name) for r in rows))
    lines = [
        f"{head[0]:<{width}} " + "{:>9} {:>8} {:>8} {:>7} {:>8}  ".format(*head[1:]) + f"target ≤ {TARGET_US:g} µs"
    ]
    for row in rows:
        if not row.available or not row.samples:
            lines.append(f"{row.name:<{width}} {'n/a':>9} {'n/a':>8} {'':>8} {'':>7} {'':>8}  {row.note}")
            continue
        best = row.best()
        delta = best.cpu_us - bare.cpu_us
        if row.name == "bare":
            delta_cell, verdict = "", "baseline"
        else:
            delta_cell = f"{delta:+.1f}"
            verdict = "ok" if delta <= TARGET_US else f"OVER ({delta / TARGET_US:.1f}x)"
        background = max(0.0, best.cpu_us - best.request_thread_us)  # /proc counts in clock ticks (10 ms)
        lines.append(
            f"{row.name:<{width}} {best.cpu_us:>9.1f} {delta_cell:>8} {best.request_thread_us:>8.1f} {background:>7.1f}"
            f" {best.wall_us:>8.1f}  {verdict}{' ' + row.note if row.note else ''}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="audited calls per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best counts (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="1,000 events x 2 rounds: a smoke run")
    parser.add_argument("--all", action="store_true", help="also the workos and relay rows (slower: ~1 min)")
    parser.add_argument(
        "--rows", help=f"comma-separated rows among {', '.join(ROWS)} (default: default; --all: all of them)"
    )
    parser.add_argument("--geoip", metavar="PATH", help="a MaxMind-format database instead of the default discovery")
    parser.add_argument("--json", action="store_true", help="print the samples as JSON after the table")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds = 1000, 2
    selected = [r.strip() for r in args.rows.split(",")] if args.rows else list(ALL_ROWS if args.all else ROWS[:1])
    unknown = set(selected) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    # The library logs one warning when no GeoIP database is found: once per round here, so say it once ourselves.
    logging.getLogger("centure_audit_middleware").setLevel(logging.ERROR)
    for name in ("CENTURE_AUDIT_OUTBOX", "CENTURE_AUDIT_STORE", "WORKOS_API_KEY", "WORKOS_BASE_URL"):
        os.environ.pop(name, None)  # the rows say where things are; the caller's environment must not
    # Geo: every row leaves `geoip=` at its default (None: the Auditor's own discovery), which reads this variable.
    os.environ.pop("CENTURE_AUDIT_GEOIP_DB", None)
    os.environ.pop("CENTURE_AUDIT_GEOIP_ASN_DB", None)
    if args.geoip is not None:
        os.environ["CENTURE_AUDIT_GEOIP_DB"] = str(Path(args.geoip).resolve())  # the rounds run in other directories

    env = Env()
    rows = [Row("bare")] + [Row(name) for name in selected]
    started = time.perf_counter()
    geo_seen: dict[str, str] = {}
    loop = asyncio.new_event_loop()
    try:
        if "relay" in selected and not relay_supported():
            relay = next(r for r in rows if r.name == "relay")
            relay.available, relay.note = False, 'Auditor(delivery="relay") does not exist yet'
        if any(r.name not in LOCAL_ROWS and r.available for r in rows):
            env.emulator = EmulatorProcess([ORG])
            env.relay_cli = "relay" in selected and relay_cli_supported()
        measurers: dict[str, Callable[[], Sample]] = {"bare": partial(measure_bare, loop, args.events)}
        for row in rows[1:]:
            measurers[row.name] = partial(measure_audited, loop, row.name, args.events, env, geo_seen)
        for round_no in range(args.rounds):
            for row in rows:  # interleaved: drift affects every row alike
                if not row.available:
                    continue
                try:
                    row.samples.append(measurers[row.name]())
                except Exception as exc:
                    if row.name != "relay":  # a row that exists must work; the relay row is best effort for now
                        raise
                    row.available, row.samples, row.note = False, [], f"failed: {exc!r}"[:200]
            print(f"round {round_no + 1}/{args.rounds} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    finally:
        loop.close()
        if env.emulator is not None:
            env.emulator.close()

    relay_row = next((r for r in rows if r.name == "relay"), None)
    if relay_row is not None and relay_row.available and not env.relay_cli:
        relay_row.note = "(no `centure-audit relay` command: events were flushed by whatever delivery='relay' does)"
    problems = check_counts(rows, args.events)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({r.name: [asdict(s) for s in r.samples] for r in rows}))
    load = os.getloadavg()
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load[0]:.2f} at end;"
        f" {args.events} events x {args.rounds} rounds, best round"
    )
    print(f"geo: {geo_seen.get('geo', 'n/a')}; every event reached its sinks: {'yes' if not problems else 'NO'}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    print("\n".join(table(rows)))
    print(
        f"process CPU per event until flushed, minus bare; req thr = the calling thread, bg thr = the other threads"
        f" ({elapsed:.0f} s)"
    )
    within = all(r.best().cpu_us - rows[0].best().cpu_us <= TARGET_US for r in rows[1:] if r.available and r.samples)
    return 0 if within and not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
