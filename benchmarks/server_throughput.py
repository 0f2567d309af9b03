"""Real servers on loopback, every request audited: requests per second against the same server bare, in one run.

    .venv/bin/python benchmarks/server_throughput.py [--duration 5] [--rounds 3] [--quick] [--only fastapi,flask]

DESIGN §5: a real server with every request audited keeps ≥ 90 % of its bare throughput (targets here: FastAPI
default ≥ 0.90, Flask ≥ 0.93, FastAPI + WorkOS ≥ 0.85). Unlike the raw-call benchmarks, this counts everything the
server's process does for an event, request path and background threads alike, since they share one GIL.

Servers: FastAPI under uvicorn (one process) and Flask under gunicorn (one sync worker), each started as a
subprocess from `benchmarks/apps/bench_server.py` pinned to core 0 with `taskset`; load from `wrk` pinned to core 1
(one thread, 32 connections, `--duration` seconds after a warm-up). Every request is `POST
/projects/proj_01BENCH/api-keys` with a real browser User-Agent; the endpoint is `@audited("api_key.create",
targets=[Target.from_path("project", "project_id")])` and sets actor and organization with `audit.*`. The WorkOS
emulator (another process, also on core 1) stands in for WorkOS.

Variants, in this order within each round, so drift hits them alike (the best of `--rounds` counts):
- FastAPI: bare; a pass-through pure-ASGI middleware; asgi-correlation-id; OpenTelemetry ASGI (SDK tracer,
  BatchSpanProcessor, an exporter that discards); this library's default (`Auditor.from_env()`: the local SQLite
  store); with WorkOS (`WORKOS_API_KEY` set: WorkOS plus the local store); relay (`delivery="relay"`, "n/a" until
  that option exists; sends then happen in `centure-audit relay`, on core 1, when that command exists); the
  catch-all (`Auditor.from_env(record_all=RecordAll(prefixes=["/projects/"]))`, the endpoint undecorated: every
  request recorded as `api.request` with method, route, status and path parameters; the local store as sink).
- Flask: bare; this library's default; with WorkOS; relay; the catch-all.
WorkOS's rate limit (6,000 / 60 s) is off by default (`--workos-rate-limit default` keeps it): with it, the bucket's
first 6,000 events go at once and the rest wait in the outbox, so a 5 s run would measure how much of the backlog
the run happened to send rather than what sending costs. Off, the app pays for sending every event as it comes.

Each server gets a fresh temporary directory (outbox, store). After each audited run the server is stopped with
SIGTERM (its graceful shutdown flushes what it can) and the benchmark counts, in the files, the events recorded
(in the store, or still in the outbox), and at the emulator those delivered to WorkOS: the table prints them next
to the requests completed, so a broken pipeline can't pass for a fast one.

Columns: "CPU µs/req" is the server's CPU time (all its threads; gunicorn's master and worker) per request of the
measured run, the lowest of the rounds: it moves less with the neighbours' load than req/s does, and audited minus
bare is what the process spends per event; "main thr" is the part of it spent by the thread that serves requests
(the rest is the library's committer and senders), from the same run. "srv CPU" is the server's CPU time over the
run's wall time: ~100 % means the server, not wrk, was the limit. "backlog at run end" is what was still to
deliver, per sink, when the load stopped (read from the outbox file while the server ran): a backlog means the
pipeline had not kept up, and the rest of its cost was paid after the measured run, during the shutdown flush.

Needs `wrk` (installed with apt-get when running as root) and `taskset`. About 4 minutes by default; `--quick`
(2 s runs, one round) under a minute. Other work on the machine moves req/s a lot (the load average is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apps.bench_emulator import EmulatorProcess

BENCH_DIR = Path(__file__).resolve().parent

ORG = "org_01BENCH"
PATH = "/projects/proj_01BENCH/api-keys"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
CONNECTIONS = 32
SERVER_CPU = "0"
LOAD_CPU = "1"
#: audited ÷ bare, per (framework, variant)
TARGETS: dict[tuple[str, str], float] = {
    ("fastapi", "audit"): 0.90,
    ("fastapi", "audit-workos"): 0.85,
    ("flask", "audit"): 0.93,
    ("fastapi", "audit-all"): 0.90,
    ("flask", "audit-all"): 0.93,
}
LABELS = {
    "bare": "bare",
    "passthrough": "pass-through ASGI middleware",
    "correlation-id": "asgi-correlation-id",
    "otel": "OpenTelemetry ASGI (batch, discard)",
    "audit": "centure-audit default (local store)",
    "audit-workos": "centure-audit + WorkOS (emulator)",
    "audit-relay": "centure-audit relay",
    "audit-all": "centure-audit catch-all, no decorator",
}
FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "fastapi": ("bare", "passthrough", "correlation-id", "otel", "audit", "audit-workos", "audit-relay", "audit-all"),
    "flask": ("bare", "audit", "audit-workos", "audit-relay", "audit-all"),
}
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/plain, */*"
wrk.headers["Accept-Language"] = "en-GB,en;q=0.9"
wrk.headers["Origin"] = "https://app.example.com"
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: the variants that deliver to WorkOS (the emulator), besides the local store
WORKOS_VARIANTS = ("audit-workos", "audit-relay")


# -- tools -------------------------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed: run `sudo apt-get install -y wrk` (Debian/Ubuntu), then this again")
    print("installing wrk (apt-get install -y wrk) ...", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

    def apt_get(*args: str) -> int:
        return subprocess.run(["apt-get", *args], env=env, stdout=subprocess.DEVNULL, check=False).returncode

    if apt_get("install", "-y", "-qq", "wrk") != 0:  # the package lists may be missing or stale
        apt_get("update", "-qq")
        apt_get("install", "-y", "-qq", "wrk")
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("could not install wrk with apt-get: install it, then run this again")
    return found


def pinned(cpus: str, argv: Sequence[str], pin: bool) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if pin else list(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def relay_supported() -> bool:
    """Whether `Auditor(delivery="relay")` exists yet (another engineer adds it), asked in a throwaway child."""
    probe = (
        "import sys, tempfile, pathlib\n"
        "from centure_audit_middleware import Auditor\n"
        "from centure_audit_middleware.sinks import MemorySink\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    try:\n"
        "        a = Auditor(sinks=[MemorySink()], outbox=pathlib.Path(d) / 'o.db', geoip=False, delivery='relay')\n"
        "    except TypeError:\n"
        "        sys.exit(3)\n"
        "    a.close(timeout=1)\n"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False, timeout=120).returncode == 0


def relay_cli() -> Path | None:
    cli = Path(sys.executable).with_name("centure-audit")
    result = subprocess.run([str(cli), "relay", "--help"], capture_output=True, check=False, timeout=60)
    return cli if result.returncode == 0 else None


# -- processes ---------------------------------------------------------------------------------------------------
class Processes:
    """Every process this benchmark starts, each in its own session; `kill_all()` ends what is left (and their
    workers) even when the run fails."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=BENCH_DIR.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> float:
        """SIGTERM, as a supervisor would (the server's graceful shutdown flushes the audit pipeline); SIGKILL to
        the whole session if it is still there after `timeout`. Returns the seconds the exit took."""
        started = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"  pid {proc.pid} still running {timeout:.0f} s after SIGTERM: killed", file=sys.stderr)
        self._kill(proc)
        return time.monotonic() - started

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the session: gunicorn's worker too
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def kill_all(self) -> None:
        for proc in self.procs:
            self._kill(proc)


def process_tree_cpu(pid: int) -> tuple[float, float]:
    """(all threads, main threads) CPU seconds (user + system) of `pid` and its descendants (gunicorn: master and
    worker). A main thread is the one that serves requests (uvicorn's event loop, a sync worker's loop); the other
    threads are the library's committer and senders."""
    total = main = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += _stat_cpu(Path(f"/proc/{current}/stat"))  # the process's: threads already gone count too
            main += _stat_cpu(Path(f"/proc/{current}/task/{current}/stat"))
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(c) for c in children)
    return total, main


def _stat_cpu(stat: Path) -> float:
    """User + system CPU seconds from a /proc stat file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 90.0) -> None:
    """Poll the port until it accepts, then `GET /health` until 200 (gunicorn's master binds before its worker
    has imported the app)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server is not ready after {timeout:.0f} s:\n{log.read_text(errors='replace')}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            pass
        time.sleep(0.05)


# -- load --------------------------------------------------------------------------------------------------------
@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float


def _duration_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(output: str) -> WrkResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+),", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if total is None or rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_duration_ms(total.group(2) + total.group(3)) / 1000,
        rps=float(rps.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        # "read" errors count the connections a sync gunicorn worker closes after each response: not failures.
        socket_errors=sum(int(errors.group(i)) for i in (1, 3, 4)) if errors else 0,
        p50_ms=_duration_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_duration_ms(p99.group(1)) if p99 else float("nan"),
    )


def run_wrk(wrk: str, port: int, seconds: float, script: Path, pin: bool) -> WrkResult:
    argv = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script)]
    argv += ["-H", f"User-Agent: {USER_AGENT}", f"http://127.0.0.1:{port}{PATH}"]
    done = subprocess.run(
        pinned(LOAD_CPU, argv, pin), capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


# -- counting what the pipeline recorded -------------------------------------------------------------------------
@dataclass
class Recorded:
    recorded: int  # distinct events in the store or still in the outbox
    in_store: int
    left_in_outbox: int
    dead: int
    at_workos: int = 0


def count_recorded(workdir: Path) -> Recorded:
    store, outbox = workdir / "audit.db", workdir / "audit-outbox.db"
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        parts, in_store, left, dead = [], 0, 0, 0
        if store.exists():
            conn.execute("ATTACH DATABASE ? AS store", (str(store),))
            in_store = conn.execute("SELECT count(*) FROM store.audit_events").fetchone()[0]
            parts.append("SELECT id FROM store.audit_events")
        if outbox.exists():
            conn.execute("ATTACH DATABASE ? AS outbox", (str(outbox),))
            left = conn.execute("SELECT count(*) FROM outbox.events").fetchone()[0]
            dead = conn.execute("SELECT count(*) FROM outbox.deliveries WHERE state = 'dead'").fetchone()[0]
            parts.append("SELECT id FROM outbox.events")
        union = conn.execute(f"SELECT count(*) FROM ({' UNION '.join(parts)})").fetchone()[0] if parts else 0
    return Recorded(int(union), int(in_store), int(left), int(dead))


def pending_deliveries(outbox: Path) -> dict[str, int]:
    """Deliveries not yet made, per sink, read as another SQLite client (WAL: readers don't block the server)."""
    if not outbox.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(outbox, timeout=10)) as conn:
            rows = conn.execute("SELECT sink, count(*) FROM deliveries WHERE state = 'pending' GROUP BY sink")
            return {str(sink): int(count) for sink, count in rows}
    except sqlite3.Error as exc:
        print(f"  could not read {outbox}: {exc!r}", file=sys.stderr)
        return {}


# -- one run -----------------------------------------------------------------------------------------------------
@dataclass
class Run:
    rps: float
    requests: int  # completed by wrk, warm-up included (what the server should have recorded)
    p50_ms: float
    p99_ms: float
    server_cpu: float  # server CPU seconds over wall seconds during the measured run
    cpu_us_per_request: float  # server CPU (all its threads and processes) per request of the measured run
    main_us_per_request: float  # the same, of the processes' main threads only (those that serve requests)
    errors: int
    recorded: Recorded | None = None
    stop_seconds: float = 0.0
    #: deliveries still pending per sink when the measured run ended (read from the outbox file while the server ran)
    backlog: dict[str, int] = field(default_factory=dict)


@dataclass
class Options:
    wrk: str
    duration: float
    warmup: float
    pin: bool
    workos_rate_limit: bool
    emulator: EmulatorProcess | None
    relay_cli: Path | None
    script: Path


@contextlib.contextmanager
def workdir_for(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"server-throughput-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def child_env(variant: str, workdir: Path, options: Options) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKOS_", "CENTURE_AUDIT_", "OTEL_"))}
    env.update(
        BENCH_VARIANT=variant,
        PYTHONUNBUFFERED="1",
        CENTURE_AUDIT_OUTBOX=str(workdir / "audit-outbox.db"),
        CENTURE_AUDIT_STORE=str(workdir / "audit.db"),
    )
    if variant in ("audit-workos", "audit-relay"):
        assert options.emulator is not None
        env.update(WORKOS_API_KEY=options.emulator.api_key, WORKOS_BASE_URL=options.emulator.url)
        if not options.workos_rate_limit:
            env["CENTURE_AUDIT_RATE_LIMIT"] = "off"
    return env


def server_argv(framework: str, port: int) -> list[str]:
    if framework == "fastapi":
        argv = [sys.executable, "-m", "uvicorn", "apps.bench_server:fastapi_app", "--app-dir", str(BENCH_DIR)]
        return [*argv, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    argv = [sys.executable, "-m", "gunicorn", "apps.bench_server:flask_app", "--chdir", str(BENCH_DIR)]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "sync", "--log-level", "warning"]
    # gunicorn >= 24 opens a control socket in ~/.gunicorn by default: one path shared by every gunicorn on the box.
    return [*argv, "--graceful-timeout", "30", "--no-control-socket"]


def run_one(framework: str, variant: str, options: Options, procs: Processes) -> Run:
    with workdir_for(f"{framework}-{variant}") as workdir:
        env = child_env(variant, workdir, options)
        relay = None
        if variant == "audit-relay" and options.relay_cli is not None:
            relay_argv = pinned(LOAD_CPU, [str(options.relay_cli), "relay"], options.pin)
            relay = procs.start(relay_argv, env, workdir / "relay.log")
        port = free_port()
        log = workdir / "server.log"
        server = procs.start(pinned(SERVER_CPU, server_argv(framework, port), options.pin), env, log)
        at_workos = options.emulator.count() if options.emulator is not None else 0
        try:
            wait_ready(server, port, log)
            warm = run_wrk(options.wrk, port, options.warmup, options.script, options.pin)
            (cpu, main_cpu), wall = process_tree_cpu(server.pid), time.monotonic()
            result = run_wrk(options.wrk, port, options.duration, options.script, options.pin)
            cpu_after, main_after = process_tree_cpu(server.pid)
            cpu_seconds, main_seconds = cpu_after - cpu, main_after - main_cpu
            wall_seconds = time.monotonic() - wall
            backlog = pending_deliveries(workdir / "audit-outbox.db") if variant.startswith("audit") else {}
        finally:
            stop_seconds = procs.stop(server)
            if relay is not None:
                procs.stop(relay)
        if server.returncode not in (0, -signal.SIGTERM) and not variant.startswith("audit"):
            print(f"  {framework}/{variant}: exit status {server.returncode}", file=sys.stderr)
        run = Run(
            rps=result.rps,
            requests=warm.requests + result.requests,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            server_cpu=cpu_seconds / wall_seconds,
            cpu_us_per_request=cpu_seconds / max(1, result.requests) * 1e6,
            main_us_per_request=main_seconds / max(1, result.requests) * 1e6,
            errors=warm.non_2xx + result.non_2xx + warm.socket_errors + result.socket_errors,
            stop_seconds=stop_seconds,
            backlog=backlog,
        )
        if variant.startswith("audit"):
            run.recorded = count_recorded(workdir)
            if options.emulator is not None and variant in WORKOS_VARIANTS:
                run.recorded.at_workos = options.emulator.count() - at_workos
        if os.environ.get("BENCH_DEBUG"):
            print(log.read_text(errors="replace"), file=sys.stderr)
        return run


# -- report ------------------------------------------------------------------------------------------------------
@dataclass
class Variant:
    framework: str
    name: str
    runs: list[Run] = field(default_factory=list)
    available: bool = True
    note: str = ""

    def best(self) -> Run:
        return max(self.runs, key=lambda r: r.rps)


def check(variant: Variant) -> list[str]:
    """What would make a run's figure meaningless: errors, or events missing (or more than the requests could
    explain: wrk doesn't count the requests still in flight when it stops, up to one per connection per wrk run)."""
    problems = []
    for run in variant.runs:
        where = f"{variant.framework}/{variant.name}"
        if run.errors:
            problems.append(f"{where}: {run.errors} non-2xx responses or socket errors")
        if run.recorded is None:
            continue
        if not run.requests <= run.recorded.recorded <= run.requests + 2 * CONNECTIONS:
            problems.append(f"{where}: {run.recorded.recorded} events recorded for {run.requests} requests")
        if run.recorded.dead:
            problems.append(f"{where}: {run.recorded.dead} dead letters")
    return problems


def table(variants: list[Variant]) -> list[str]:
    lines = []
    for framework in dict.fromkeys(v.framework for v in variants):
        rows = [v for v in variants if v.framework == framework]
        server = "uvicorn, 1 process" if framework == "fastapi" else "gunicorn, 1 sync worker"
        lines.append(f"{'FastAPI' if framework == 'fastapi' else 'Flask'} ({server})")
        lines.append(
            f"  {'variant':<36} {'req/s':>7} {'÷ bare':>6} {'target':>7} {'CPU µs/req':>10} {'main thr':>8}"
            f" {'p99 ms':>7} {'srv CPU':>7}  events recorded / requests completed"
        )
        bare = next((v for v in rows if v.name == "bare" and v.runs), None)
        for v in rows:
            label = LABELS[v.name]
            if not v.available or not v.runs:
                lines.append(f"  {label:<36} {'n/a':>7} {'n/a':>6} {'':>7} {'':>10} {'':>8} {'':>7} {'':>7}  {v.note}")
                continue
            best = v.best()
            ratio = best.rps / bare.best().rps if bare is not None else float("nan")
            least = min(v.runs, key=lambda r: r.cpu_us_per_request)  # the least disturbed: neighbours add CPU too
            cpu, main_thread = least.cpu_us_per_request, least.main_us_per_request
            target = TARGETS.get((framework, v.name))
            target_cell = f"≥ {target:.2f}" if target is not None else ""
            verdict = ("ok" if ratio >= target else "MISS") if target is not None else ""
            events = ""
            if best.recorded is not None:
                r = best.recorded
                events = f"{r.recorded:,} / {best.requests:,}"
                if v.name in WORKOS_VARIANTS:
                    events += f", {r.at_workos:,} at WorkOS"
                if r.left_in_outbox:
                    events += f", {r.left_in_outbox:,} left in outbox"
                backlog = ", ".join(f"{sink} {n:,}" for sink, n in sorted(best.backlog.items()) if n)
                events += f"; backlog at run end: {backlog or '0'}"
            lines.append(
                f"  {label:<36} {best.rps:>7,.0f} {ratio:>6.3f} {target_cell:>7} {cpu:>10.0f} {main_thread:>8.0f}"
                f" {best.p99_ms:>7.1f}"
                f" {best.server_cpu:>7.0%}  {verdict + '  ' if verdict else ''}{events}"
            )
    return lines


def missed_targets(variants: list[Variant]) -> list[str]:
    bare = {v.framework: v.best().rps for v in variants if v.name == "bare" and v.runs}
    missed = []
    for v in variants:
        target = TARGETS.get((v.framework, v.name))
        if target is not None and v.runs and v.framework in bare and v.best().rps / bare[v.framework] < target:
            missed.append(f"{v.framework}/{v.name}")
    return missed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each run (default: 1)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per variant; the best counts (default: 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s runs, one round")
    parser.add_argument("--only", default="fastapi,flask", help="frameworks (default: %(default)s)")
    parser.add_argument(
        "--variants", help="comma-separated variants to run (default: all; bare always runs): " + ", ".join(LABELS)
    )
    parser.add_argument(
        "--workos-rate-limit",
        choices=("off", "default"),
        default="off",
        help="WorkOS's 6,000 / 60 s limit in the WorkOS variants (default: off, see above)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and wrk with taskset")
    parser.add_argument("--json", action="store_true", help="print every run as JSON after the table")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 2.0, 1, 1.0
    frameworks = [f.strip() for f in args.only.split(",") if f.strip()]
    if set(frameworks) - set(FRAMEWORKS):
        parser.error(f"--only: choose among {', '.join(FRAMEWORKS)}")
    wanted = set(LABELS) if args.variants is None else {"bare", *(v.strip() for v in args.variants.split(","))}
    if wanted - set(LABELS):
        parser.error(f"--variants: choose among {', '.join(LABELS)}")

    wrk = ensure_wrk()
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not pin and not args.no_pin:
        print("no taskset or fewer than 2 CPUs: server and wrk are not pinned", file=sys.stderr)
    variants = [Variant(f, v) for f in frameworks for v in FRAMEWORKS[f] if v in wanted]
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    relay_ok = any(v.name == "audit-relay" for v in variants) and relay_supported()
    for v in variants:
        if v.name == "audit-relay" and not relay_ok:
            v.available, v.note = False, 'Auditor(delivery="relay") does not exist yet'

    procs = Processes()
    emulator: EmulatorProcess | None = None
    with workdir_for("wrk") as scripts:
        script = scripts / "post.lua"
        script.write_text(WRK_SCRIPT)
        try:
            if any(v.name in ("audit-workos", "audit-relay") and v.available for v in variants):
                emulator = EmulatorProcess([ORG], cpus=LOAD_CPU if pin else None)
            options = Options(
                wrk=wrk,
                duration=args.duration,
                warmup=args.warmup,
                pin=pin,
                workos_rate_limit=args.workos_rate_limit == "default",
                emulator=emulator,
                relay_cli=relay_cli() if relay_ok else None,
                script=script,
            )
            for round_no in range(args.rounds):
                for v in variants:
                    if not v.available:
                        continue
                    run = run_one(v.framework, v.name, options, procs)
                    v.runs.append(run)
                    recorded = f", {run.recorded.recorded} events" if run.recorded is not None else ""
                    print(
                        f"round {round_no + 1}/{args.rounds} {v.framework}/{v.name}: {run.rps:,.0f} req/s{recorded}"
                        f" ({time.perf_counter() - started:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            procs.kill_all()
            if emulator is not None:
                emulator.close()

    problems = [p for v in variants for p in check(v)]
    if args.json:
        print(json.dumps([{**asdict(v), "best_rps": v.best().rps if v.runs else None} for v in variants]))
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load_at_start[0]:.2f} at start;"
        f" server on core {SERVER_CPU if pin else '-'}, wrk (1 thread, {CONNECTIONS} connections)"
        f" and the emulator on core {LOAD_CPU if pin else '-'}; {args.duration:g} s runs after {args.warmup:g} s"
        f" warm-up, best of {args.rounds}; WorkOS rate limit {args.workos_rate_limit}"
    )
    print("\n".join(table(variants)))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    load_at_end = os.getloadavg()
    print(f"done in {time.perf_counter() - started:.0f} s; load {load_at_end[0]:.2f} at end")
    return 1 if problems or missed_targets(variants) else 0


if __name__ == "__main__":
    raise SystemExit(main())
