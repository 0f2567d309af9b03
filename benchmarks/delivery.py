"""Delivery benchmarks: throughput to the WorkOS emulator, backlog drain, memory under a burst, hand-off cost on the
request path, and loss/duplicates across SIGKILL restarts. One run, one table, ratios against baselines measured in
the same run (this box runs other work: the load average at start is printed, and every figure moves with it).

    .venv/bin/python benchmarks/delivery.py [--quick] [--json] [--only throughput,drain,burst,handoff,kill]

About 4 minutes (`--quick`: under a minute); the exit status is 1 when a figure misses its target. `BENCH_DEBUG=1`
also prints what each SIGKILL lost.

The emulator runs in a separate process so that its CPU does not share our GIL. It is this script re-invoked with
`--serve-emulator` rather than `centure-audit emulator`, because the benchmark must take the endpoint down and up and
ask it what it committed (and under which keys), which the CLI does not offer; the server is the same
`WorkOSEmulator`. The crash test and the memory burst also run in child processes (`--kill-worker`,
`--burst-worker`): a SIGKILL must hit a real process, and RSS must be measured from a clean start.

Throughput compares the sink as shipped (the SDK's sync client, default transport, in a pool) with prototypes defined
here: the SDK's `AsyncWorkOSClient` on a private event loop sending a claimed batch with `asyncio.gather`, and either
client with a lighter HTTP transport plugged in through the SDK's own `http_client=` extension point (stdlib
`http.client` for the sync client, aiohttp for the async one). Baselines: raw SDK calls in a tight loop with no
outbox (the ceiling for each transport), raw `http.client` posts (the cheapest Python client), and the pipeline with
a no-op sink (the outbox's own ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from centure_audit_middleware import Actor, AuditEvent, Auditor, Target
from centure_audit_middleware.delivery.dispatcher import Dispatcher
from centure_audit_middleware.delivery.policy import RetryPolicy
from centure_audit_middleware.sinks.base import PauseDelivery, RejectEvent, RetryLater, Sink, SinkError
from centure_audit_middleware.sinks.stdlib_http import StdlibBackend
from centure_audit_middleware.sinks.workos import WorkOSSink
from centure_audit_middleware.types import Message

if TYPE_CHECKING:
    from workos import AsyncWorkOSClient, HTTPResponse

    from centure_audit_middleware.delivery.dispatcher import _SinkState
    from centure_audit_middleware.delivery.outbox import Claim

ORG = "org_01BENCH"
API_KEY = "sk_test_emulator"
ACTOR = Actor("user_01BENCH", name="Bench User", metadata={"email": "bench@example.com"})
SCRIPT = Path(__file__).resolve()


def record_one(auditor: Auditor, seq: int, run: int = 0) -> None:
    """A realistic event: actor with metadata, a named target, two metadata keys (`run`/`seq` identify it)."""
    auditor.record(
        "document.update",
        actor=ACTOR,
        organization=ORG,
        targets=[Target("document", f"doc_{seq}", "Quarterly plan")],
        metadata={"run": run, "seq": seq},
    )


def rss_kb(status: str = "/proc/self/status", field_name: str = "VmRSS") -> int:
    with open(status) as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (one, five, fifteen)


# ====================================================================================================================
# The emulator in its own process, driven over stdin/stdout (one JSON line per command)
# ====================================================================================================================
def serve_emulator() -> int:
    from centure_audit_middleware.testing import WorkOSEmulator

    # max_requests_recorded=0: a long run must not keep every request in memory (events and keys are kept).
    emulator = WorkOSEmulator(organizations=[ORG], api_key=API_KEY, max_requests_recorded=0).start()
    print(json.dumps({"port": emulator.port}), flush=True)
    for line in sys.stdin:
        command, *args = line.split() or [""]
        reply: dict[str, Any] = {"ok": True}
        if command == "stats":
            counts = emulator.count_by_key()
            reply.update(
                events=sum(counts.values()),
                keys=len(counts),
                dup_keys=sum(n - 1 for n in counts.values()),
                cpu=time.process_time(),
            )
        elif command == "seqs":  # (run, seq) of every committed event, for the crash test's accounting
            reply["seqs"] = [
                [e.event.get("metadata", {}).get("run"), e.event["metadata"]["seq"]] for e in emulator.events
            ]
            reply["dup_keys"] = sum(n - 1 for n in emulator.count_by_key().values())
        elif command == "down":
            emulator.set_down(True, mode=args[0] if args else "refuse")  # type: ignore[arg-type]
        elif command == "up":
            emulator.set_down(False)
        elif command == "latency":
            emulator.set_latency(float(args[0]))
        elif command == "reset":
            emulator.reset()
        elif command == "quit":
            break
        print(json.dumps(reply), flush=True)
    emulator.stop()
    return 0


class EmulatorProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--serve-emulator"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._read()["port"])
        self.url = f"http://127.0.0.1:{self.port}/"

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, *words: object) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.command("quit")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ====================================================================================================================
# Transports and sink prototypes
# ====================================================================================================================
def make_aiohttp_backend() -> Any:
    """`workos.AsyncHTTPBackend` on aiohttp (installed with geoip2; C-accelerated HTTP parser). Call on the loop."""
    import aiohttp
    from workos import HTTPResponse, TransportConnectError, TransportError, TransportTimeout

    class AiohttpBackend:
        def __init__(self) -> None:
            self.session = aiohttp.ClientSession()

        async def request(
            self, method: str, url: str, *, headers: dict[str, str], content: bytes | None, timeout: float
        ) -> HTTPResponse:
            try:
                async with self.session.request(
                    method, url, headers=headers, data=content, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as response:
                    body = await response.read()
                    return HTTPResponse(
                        status_code=response.status,
                        headers=response.headers,
                        content=body,
                        request_method=method,
                        request_url=url,
                    )
            except TimeoutError as exc:
                raise TransportTimeout(str(exc)) from exc
            except aiohttp.ClientConnectorError as exc:
                raise TransportConnectError(str(exc)) from exc
            except aiohttp.ClientError as exc:
                raise TransportError(str(exc)) from exc

        async def close(self) -> None:
            await self.session.close()

    return AiohttpBackend()


def classify(exc: BaseException) -> SinkError:
    """The outcome classes of `WorkOSSink.send` (DESIGN §5), for an exception raised by the async client. A real
    async sink would share one function with `WorkOSSink` instead of this copy."""
    from workos._errors import APIError, RateLimitExceededError, WorkOSError

    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, RateLimitExceededError):
        return RetryLater(str(exc), retry_after=exc.retry_after)
    if isinstance(exc, APIError):
        status = exc.status_code or 0
        if status in (401, 403):
            return PauseDelivery(f"HTTP {status}")
        if 400 <= status < 500 and status not in (408, 409, 425, 429):
            return RejectEvent(f"HTTP {status}")
        return RetryLater(f"HTTP {status}")
    if isinstance(exc, WorkOSError):
        return RetryLater(f"{type(exc).__name__}: {exc}")
    return RetryLater(repr(exc))


class AsyncWorkOSSink(WorkOSSink):
    """Prototype: `AsyncWorkOSClient` on a private event loop in its own thread (never the app's loop).

    `send_many` sends a whole claimed batch with one `asyncio.gather`, at most `inflight` requests at a time;
    `send` (one event) works too, so the class still fits the current dispatcher. `concurrency` stays 1: the
    dispatcher needs no thread pool, the loop is the concurrency.
    """

    def __init__(self, *args: Any, inflight: int = 32, transport: str = "httpx2", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.concurrency = 1
        self.inflight = inflight
        self.async_transport = transport
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-async-sink", daemon=True)
        self._thread.start()
        self._async_client: AsyncWorkOSClient | None = None
        self._backend: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _get_async_client(self) -> AsyncWorkOSClient:
        if self._async_client is None:
            from workos import AsyncWorkOSClient

            self._backend = make_aiohttp_backend() if self.async_transport == "aiohttp" else None

            self._async_client = AsyncWorkOSClient(
                api_key=self.api_key,
                base_url=self.base_url,
                request_timeout=self.timeout,  # type: ignore[arg-type]
                max_retries=0,
                http_client=self._backend,
            )
            self._semaphore = asyncio.Semaphore(self.inflight)
        return self._async_client

    async def _send_one(self, event: AuditEvent) -> SinkError | None:
        client = await self._get_async_client()
        assert self._semaphore is not None
        async with self._semaphore:
            try:
                await client.audit_logs.create_event(
                    organization_id=event.organization_id, event=event.to_sdk(), idempotency_key=event.id
                )
            except Exception as exc:
                return classify(exc)
        return None

    async def _send_all(self, events: Sequence[AuditEvent]) -> list[BaseException | None]:
        return list(await asyncio.gather(*(self._send_one(e) for e in events)))

    def send(self, event: AuditEvent) -> None:
        outcome = self._run(self._send_one(event))
        if outcome is not None:
            raise outcome

    def send_many(self, events: Sequence[AuditEvent]) -> list[BaseException | None]:
        result: list[BaseException | None] = self._run(self._send_all(events))
        return result

    def close(self) -> None:
        async def shutdown() -> None:
            if self._async_client is not None:
                await self._async_client.close()
            if self._backend is not None:  # the SDK never closes a client it was given
                await self._backend.close()

        if self._thread.is_alive():
            self._run(shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()


class BatchDispatcher(Dispatcher):
    """Hands every claimed batch of the async prototype to `sink.send_many` (one `asyncio.gather`). The shipped
    dispatcher does so only for a sink with no thread pool and no rate limiter (with WorkOS's limit on, it sends one
    event at a time), so the prototype pins the behaviour it needs here. Rate limiting, pause probing and the
    idempotency-window check of `_deliver` are skipped: the benchmark runs with none of them in play."""

    def _deliver(
        self, state: _SinkState, claims: Sequence[Claim], *args: Any, **kwargs: Any
    ) -> list[BaseException | None]:
        if not isinstance(state.sink, AsyncWorkOSSink):
            return super()._deliver(state, claims, *args, **kwargs)
        return state.sink.send_many([AuditEvent.from_json(c.body) for c in claims])


class NullSink(Sink):
    """Accepts everything at once: what is left is the pipeline's own cost (build, outbox, claim, settle)."""

    name = "workos"

    def __init__(self, concurrency: int = 8) -> None:
        self.concurrency = concurrency

    def send(self, event: AuditEvent) -> None:
        return None


def make_auditor(sink: Sink, outbox: Path, *, batch: bool = False, **kwargs: Any) -> Auditor:
    # rate_limits={"workos": None}: WorkOS's 100 requests/s would otherwise be the only figure measured.
    auditor = Auditor(
        sinks=[sink], outbox=outbox, geoip=False, user_agents=False, rate_limits={"workos": None}, **kwargs
    )
    if batch:
        # Swapping in the prototype before anything is submitted (the original dispatcher never starts).
        auditor.dispatcher = BatchDispatcher(auditor.sinks, auditor.dispatcher.builder, auditor.dispatcher.config)
        auditor.handoff = auditor.dispatcher.submit
    return auditor


# ====================================================================================================================
# Results
# ====================================================================================================================
@dataclass
class Figure:
    section: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None
    note: str = ""


@dataclass
class Report:
    load_average_start: tuple[float, float, float]
    cpus: int
    quick: bool
    figures: list[Figure] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        print(f"  {figure.name}: {_fmt(figure.value)} {figure.unit} {figure.note}", file=sys.stderr, flush=True)
        return figure


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def print_table(report: Report, out: TextIO) -> None:
    one, five, fifteen = report.load_average_start
    print(
        f"\nDelivery benchmarks ({'quick' if report.quick else 'full'} run) on {report.cpus} CPUs; "
        f"load average at start {one:.2f} {five:.2f} {fifteen:.2f}",
        file=out,
    )
    if report.throughput:
        print("\nThroughput to the emulator (rate limit off)", file=out)
        header = f"  {'variant':52} {'events/s':>9} {'vs raw loop':>11} {'client µs/ev':>12} {'emulator µs/ev':>14}"
        print(header, file=out)
        for row in report.throughput:
            ratio = f"{row['ratio']:.2f}x" if row.get("ratio") is not None else ""
            print(
                f"  {row['name']:52} {row['rate']:9,.0f} {ratio:>11} {row['client_us']:12,.0f}"
                f" {row['emulator_us']:14,.0f}" + ("" if row["complete"] else "  INCOMPLETE"),
                file=out,
            )
    print(f"\n  {'figure':58} {'value':>12} {'unit':8} {'target':14} {'result':6}", file=out)
    section = None
    for f in report.figures:
        if f.section != section:
            section = f.section
            print(f"  [{section}]", file=out)
        result = "" if f.passed is None else ("pass" if f.passed else "FAIL")
        print(f"  {f.name:58} {_fmt(f.value):>12} {f.unit:8} {f.target:14} {result:6} {f.note}", file=out)


# ====================================================================================================================
# 1. Throughput
# ====================================================================================================================
def _emulator_cpu(emulator: EmulatorProcess) -> float:
    return float(emulator.command("stats")["cpu"])


def _sample_event() -> AuditEvent:
    return AuditEvent.from_dict(
        {
            "id": str(uuid.uuid4()),
            "organization_id": ORG,
            "action": "document.update",
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
            "actor": {"id": ACTOR.id, "type": "user", "name": ACTOR.name, "metadata": dict(ACTOR.metadata)},
            "targets": [{"id": "doc_1", "type": "document", "name": "Quarterly plan"}],
            "context": {"location": "unknown"},
            "metadata": {"run": 0, "seq": 1},
        }
    )


def raw_rate(
    emulator: EmulatorProcess, events: int, client: str, concurrency: int, transport: str = "httpx2"
) -> dict[str, Any]:
    """Raw SDK calls (or raw `http.client` posts) in a tight loop, no outbox: the ceiling of each transport."""
    from workos import AsyncWorkOSClient, WorkOSClient

    sdk_event = _sample_event().to_sdk()
    emulator.command("reset")
    emulator_cpu = _emulator_cpu(emulator)
    if client == "async":

        async def main() -> tuple[float, float]:
            http_client = make_aiohttp_backend() if transport == "aiohttp" else None
            sdk = AsyncWorkOSClient(
                api_key=API_KEY, base_url=emulator.url, max_retries=0, request_timeout=10, http_client=http_client
            )
            semaphore = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with semaphore:
                    await sdk.audit_logs.create_event(
                        organization_id=ORG, event=sdk_event, idempotency_key=str(uuid.uuid4())
                    )

            await asyncio.gather(*(one() for _ in range(20)))  # warm: connections, first-call imports
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one() for _ in range(events)))
            result = time.perf_counter() - started, time.process_time() - cpu
            await sdk.close()
            if http_client is not None:  # the SDK never closes a client it was given
                await http_client.close()
            return result

        elapsed, cpu = asyncio.run(main())
    else:
        work: Callable[[int], None]
        if client == "http.client":
            body = json.dumps({"organization_id": ORG, "event": sdk_event.to_dict()}).encode()

            def work(n: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10)
                for _ in range(n):
                    headers = {
                        "Authorization": f"Bearer {API_KEY}",
                        "Content-Type": "application/json",
                        "Idempotency-Key": str(uuid.uuid4()),
                    }
                    conn.request("POST", "/audit_logs/events", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        raise RuntimeError(f"emulator answered {response.status}")
                conn.close()

        else:
            sdk = WorkOSClient(
                api_key=API_KEY,
                base_url=emulator.url,
                max_retries=0,
                request_timeout=10,
                http_client=StdlibBackend() if transport == "stdlib" else None,
            )

            def work(n: int) -> None:
                for _ in range(n):
                    sdk.audit_logs.create_event(organization_id=ORG, event=sdk_event, idempotency_key=str(uuid.uuid4()))

        work(20)
        events = events // concurrency * concurrency
        threads = [threading.Thread(target=work, args=(events // concurrency,)) for _ in range(concurrency)]
        started, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    received = emulator.command("stats")
    return {
        "rate": events / elapsed,
        "client_us": cpu / events * 1e6,
        "emulator_us": (float(received["cpu"]) - emulator_cpu) / events * 1e6,
        "complete": received["keys"] == events + 20,
    }


def pipeline_rate(
    emulator: EmulatorProcess,
    workdir: Path,
    events: int,
    make_sink: Callable[[], Sink],
    *,
    batch: bool = False,
    latency: float = 0.0,
) -> dict[str, Any]:
    """Record `events` as fast as possible and time until `flush` says all are delivered. Recording takes a small
    part of that, so this is the sustained rate of the whole pipeline: build, commit, claim, send, settle."""
    emulator.command("reset")
    emulator.command("latency", latency)
    outbox = workdir / f"throughput-{uuid.uuid4().hex[:8]}.db"
    sink = make_sink()
    auditor = make_auditor(sink, outbox, batch=batch)
    try:
        for i in range(20):  # warm: SDK client, connections, threads, SQLite pages
            record_one(auditor, -1 - i)
        auditor.flush(30)
        emulator_cpu = _emulator_cpu(emulator)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(events):
            record_one(auditor, i)
        complete = auditor.flush(max(60.0, events / 50))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        dropped = auditor.stats()["dropped"]
    finally:
        auditor.close(10)
        _remove_db(outbox)
    emulator.command("latency", 0)
    received = emulator.command("stats")
    null = isinstance(sink, NullSink)
    delivered = null or (received["keys"] == events + 20 and received["dup_keys"] == 0)
    return {
        "rate": events / elapsed,
        "client_us": cpu / events * 1e6,
        "emulator_us": 0.0 if null else (float(received["cpu"]) - emulator_cpu) / events * 1e6,
        "complete": complete and delivered and not dropped,
    }


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink()


@dataclass
class Variant:
    name: str
    transport: str  # the raw loop this one is compared with
    run: Callable[[], dict[str, Any]]
    baseline: bool = False


def bench_throughput(report: Report, emulator: EmulatorProcess, workdir: Path, quick: bool) -> None:
    print("1. throughput", file=sys.stderr, flush=True)
    n = 600 if quick else 2000
    url = emulator.url

    def raw(client: str, concurrency: int, transport: str) -> Callable[[], dict[str, Any]]:
        return lambda: raw_rate(emulator, n, client, concurrency, transport)

    def piped(
        make_sink: Callable[[], Sink], batch: bool = False, events: int = n, latency: float = 0.0
    ) -> Callable[[], dict[str, Any]]:
        return lambda: pipeline_rate(emulator, workdir, events, make_sink, batch=batch, latency=latency)

    def shipped(concurrency: int) -> Callable[[], Sink]:
        return lambda: WorkOSSink(api_key=API_KEY, base_url=url, concurrency=concurrency)

    def stdlib(concurrency: int) -> Callable[[], Sink]:
        return lambda: WorkOSSink(api_key=API_KEY, base_url=url, concurrency=concurrency, transport="stdlib")

    def async_sink(inflight: int, transport: str) -> Callable[[], Sink]:
        return lambda: AsyncWorkOSSink(api_key=API_KEY, base_url=url, inflight=inflight, transport=transport)

    variants = [
        Variant("raw http.client posts, 1 thread (floor)", "", raw("http.client", 1, ""), True),
        Variant("raw SDK sync httpx2, 1 thread", "httpx2", raw("sync", 1, "httpx2"), True),
        Variant("raw SDK sync httpx2, 8 threads", "httpx2", raw("sync", 8, "httpx2"), True),
        Variant("raw SDK async httpx2, 8 in flight", "async-httpx2", raw("async", 8, "httpx2"), True),
        Variant("raw SDK sync http.client backend, 8 threads", "stdlib", raw("sync", 8, "stdlib"), True),
        Variant("raw SDK async aiohttp backend, 8 in flight", "aiohttp", raw("async", 8, "aiohttp"), True),
        Variant("pipeline, no-op sink x8 (outbox ceiling)", "", piped(lambda: NullSink(8), events=2 * n), True),
    ]
    for c in (1, 8) if quick else (1, 4, 8, 16):
        variants.append(Variant(f"WorkOSSink x{c} (shipped: sync, httpx2)", "httpx2", piped(shipped(c))))
    for inflight in (32,) if quick else (8, 32):
        variants.append(
            Variant(
                f"async httpx2, gather, {inflight} in flight",
                "async-httpx2",
                piped(async_sink(inflight, "httpx2"), True),
            )
        )
    for c in (8,) if quick else (4, 8, 16):
        variants.append(Variant(f"sync http.client backend x{c}", "stdlib", piped(stdlib(c))))
    for inflight in (8,) if quick else (8, 32):
        variants.append(
            Variant(
                f"async aiohttp, gather, {inflight} in flight", "aiohttp", piped(async_sink(inflight, "aiohttp"), True)
            )
        )

    # The emulator answers in microseconds; WorkOS is tens of milliseconds away. With 50 ms per request, events/s
    # is bounded by requests in flight / 0.05 s, which is where threads and an event loop really differ.
    slow = 300 if quick else 800
    variants += [
        Variant("WorkOSSink x8 (shipped), 50 ms endpoint", "", piped(shipped(8), events=slow, latency=0.05)),
        Variant("sync http.client backend x32, 50 ms endpoint", "", piped(stdlib(32), events=slow, latency=0.05)),
        Variant(
            "async aiohttp, gather, 64 in flight, 50 ms endpoint",
            "",
            piped(async_sink(64, "aiohttp"), True, events=slow, latency=0.05),
        ),
    ]
    if not quick:
        variants.insert(
            -2, Variant("WorkOSSink x32 (shipped), 50 ms endpoint", "", piped(shipped(32), events=slow, latency=0.05))
        )
    ceilings: dict[str, float] = {}
    for variant in variants:
        result = variant.run()
        result["name"] = variant.name
        result["baseline"] = variant.baseline
        if variant.baseline and variant.transport:
            ceilings[variant.transport] = max(ceilings.get(variant.transport, 0.0), result["rate"])
        elif variant.transport in ceilings:
            result["ratio"] = result["rate"] / ceilings[variant.transport]
        report.throughput.append(result)
        print(
            f"  {variant.name}: {result['rate']:,.0f}/s, client {result['client_us']:,.0f} µs/event"
            + ("" if result["complete"] else " INCOMPLETE"),
            file=sys.stderr,
            flush=True,
        )

    pipelines = [r for r in report.throughput if not r["baseline"] and "ms endpoint" not in r["name"]]
    shipped_rows = [r for r in pipelines if "(shipped" in r["name"]]
    best_shipped = max(shipped_rows, key=lambda r: r["rate"])
    best = max(pipelines, key=lambda r: r["rate"])
    ceiling = ceilings.get("httpx2", 0.0)
    report.add(
        "1 throughput",
        f"shipped sink, best: {best_shipped['name'].split(' (')[0]}",
        best_shipped["rate"],
        "events/s",
        "≥ 2,000",
        best_shipped["rate"] >= 2000,
        f"({best_shipped['rate'] / ceiling:.2f}x raw SDK loop)" if ceiling else "",
    )
    report.add(
        "1 throughput", f"best variant: {best['name']}", best["rate"], "events/s", "≥ 2,000", best["rate"] >= 2000
    )
    for transport, name in (
        ("httpx2", "SDK sync httpx2"),
        ("async-httpx2", "SDK async httpx2"),
        ("stdlib", "SDK + http.client"),
        ("aiohttp", "SDK async + aiohttp"),
    ):
        if transport in ceilings:
            report.add("1 throughput", f"ceiling: raw {name} loop, no outbox", ceilings[transport], "events/s")


# ====================================================================================================================
# 2. Backlog drain
# ====================================================================================================================
def wait_committed(auditor: Auditor, timeout: float) -> bool:
    """Until everything recorded so far is in the outbox. Not by polling `stats()`: it aggregates the whole outbox
    (~160 ms at 100,000 rows), which would slow down the committer being measured; the dispatcher's own wait is a
    condition variable."""
    return auditor.dispatcher._wait_committed(time.monotonic() + timeout)


def bench_drain(report: Report, emulator: EmulatorProcess, workdir: Path, quick: bool) -> None:
    print("2. backlog drain", file=sys.stderr, flush=True)
    n = 2000 if quick else 10_000
    emulator.command("reset")
    emulator.command("down")
    outbox = workdir / "drain.db"
    auditor = make_auditor(WorkOSSink(api_key=API_KEY, base_url=emulator.url), outbox)
    try:
        auditor.dispatcher.start()
        for i in range(n):
            record_one(auditor, i)
        committed = wait_committed(auditor, 120)
        time.sleep(1.0)  # an outage, not a blip: the senders have tried, failed and backed off
        emulator.command("up")
        started = time.perf_counter()
        drained = auditor.flush(300)
        elapsed = time.perf_counter() - started
        stats = auditor.stats()
    finally:
        auditor.close(10)
        _remove_db(outbox)
    received = emulator.command("stats")
    ok = committed and drained and received["keys"] == n and received["dup_keys"] == 0
    report.add(
        "2 drain",
        f"drain a {n:,}-event backlog once the endpoint is back",
        elapsed,
        "s",
        f"≤ {n / 2000:g} s",
        ok and elapsed <= n / 2000,
        f"({n / elapsed:,.0f} events/s; {stats['retried']:,} retries while down;"
        f" {received['keys']:,} delivered, {received['dup_keys']} dup)",
    )


# ====================================================================================================================
# 3. Burst with the endpoint down: RSS and drops (in a fresh process, so RSS starts clean)
# ====================================================================================================================
def burst_worker(outbox: str, url: str, count: int, mode: str) -> int:
    import gc

    auditor = make_auditor(WorkOSSink(api_key=API_KEY, base_url=url), Path(outbox))
    auditor.dispatcher.start()
    record_one(auditor, -1)
    wait_committed(auditor, 30)
    run_asgi = _asgi_runner(auditor) if mode == "asgi" else None
    if run_asgi is not None:
        run_asgi(10)  # warm the app's own first-call costs
        wait_committed(auditor, 30)
    gc.collect()
    before = rss_kb()
    # Reset the kernel's high-water mark (VmHWM) to the current RSS, so that the peak is this burst's.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    peak = before
    peak_queue = 0
    stop = threading.Event()
    queue = auditor.dispatcher._queue  # the hand-off deque: what the burst holds in memory before it is committed

    def sample() -> None:
        nonlocal peak, peak_queue
        while not stop.wait(0.005):
            peak = max(peak, rss_kb())
            peak_queue = max(peak_queue, len(queue))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    if run_asgi is not None:
        run_asgi(count)
    else:
        for i in range(count):
            record_one(auditor, i)
    recorded = time.perf_counter() - started
    committed = wait_committed(auditor, 300)
    committed_after = time.perf_counter() - started
    stop.set()
    sampler.join()
    gc.collect()
    after = rss_kb()
    peak = max(peak, rss_kb(field_name="VmHWM"))
    stats = auditor.stats()
    print(
        json.dumps(
            {
                "before_kb": before,
                "after_kb": after,
                "peak_kb": peak,
                "peak_queue": peak_queue,
                "recorded_s": recorded,
                "committed_s": committed_after,
                "committed": committed,
                "dropped": stats["dropped"],
                "outbox_depth": stats["outbox_depth"],
            }
        ),
        flush=True,
    )
    auditor.close(0.5)
    return 0


def _asgi_runner(auditor: Auditor) -> Callable[[int], None]:
    """An audited Starlette route called as raw ASGI (no server, no client): the request path at full speed."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from centure_audit_middleware import audit, audited

    @audited("document.update", targets=[Target.from_path("document", "doc_id")])
    async def endpoint(request: Request) -> Response:
        audit.actor(ACTOR)
        audit.organization(ORG)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/documents/{doc_id}", endpoint, methods=["POST"])])
    auditor.install(app)
    headers = [(b"host", b"example.com"), (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0")]

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    async def calls(count: int) -> None:
        for i in range(count):
            path = f"/documents/doc_{i}"
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": headers,
                "client": ("203.0.113.7", 50000),
                "server": ("127.0.0.1", 8000),
            }
            await app(scope, receive, send)

    return lambda count: asyncio.run(calls(count))


def bench_burst(report: Report, emulator: EmulatorProcess, workdir: Path, quick: bool) -> None:
    print("3. burst with the endpoint down", file=sys.stderr, flush=True)
    # The ASGI burst is a third of the size: its committer is the slow one (~70 s for 100,000 on this box), and the
    # per-event memory it shows is what matters.
    runs = [("record", 10_000)] if quick else [("record", 100_000), ("asgi", 30_000)]
    emulator.command("down")
    try:
        for mode, count in runs:
            outbox = workdir / f"burst-{mode}.db"
            proc = subprocess.run(
                [sys.executable, str(SCRIPT), "--burst-worker", str(outbox), emulator.url, str(count), mode],
                capture_output=True,
                text=True,
                timeout=600,
            )
            _remove_db(outbox)
            if proc.returncode != 0 or not proc.stdout.strip():
                report.add("3 burst", f"{mode}: worker failed", None, "", "", False, proc.stderr.strip()[-300:])
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            label = "auditor.record()" if mode == "record" else "audited ASGI route"
            growth = (r["after_kb"] - r["before_kb"]) / 1024
            peak = (r["peak_kb"] - r["before_kb"]) / 1024
            per_event = (r["peak_kb"] - r["before_kb"]) / max(1, r["peak_queue"])
            report.add(
                "3 burst",
                f"{count:,} via {label}: peak RSS growth",
                peak,
                "MB",
                "≤ 50 MB",
                peak <= 50,
                f"(peak hand-off queue {r['peak_queue']:,} events, ~{per_event:.2f} KB each;"
                f" recorded in {r['recorded_s']:.1f} s, all committed after {r['committed_s']:.1f} s)",
            )
            report.add(
                "3 burst", f"{count:,} via {label}: RSS growth once committed", growth, "MB", "≤ 50 MB", growth <= 50
            )
            dropped = sum(r["dropped"].values())
            report.add(
                "3 burst",
                f"{count:,} via {label}: dropped / outbox depth",
                dropped,
                "events",
                "0 dropped",
                dropped == 0 and r["committed"],
                f"(dropped {r['dropped'] or '{}'}; outbox depth {r['outbox_depth']:,})",
            )
    finally:
        emulator.command("up")


# ====================================================================================================================
# 4. Hand-off cost on the request path while the dispatcher delivers
# ====================================================================================================================
def _percentiles(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000.0  # ns -> µs

    return {"p50": at(0.50), "p99": at(0.99), "p99.9": at(0.999), "max": ordered[-1] / 1000.0}


def bench_handoff(report: Report, emulator: EmulatorProcess, workdir: Path, quick: bool) -> None:
    from collections import deque

    from centure_audit_middleware.context import PendingEvent

    print("4. hand-off cost while delivering", file=sys.stderr, flush=True)
    calls = 5000 if quick else 20_000
    emulator.command("reset")
    outbox = workdir / "handoff.db"
    auditor = make_auditor(WorkOSSink(api_key=API_KEY, base_url=emulator.url), outbox)
    submit = auditor.dispatcher.submit
    local: deque[PendingEvent] = deque()
    pending = [
        PendingEvent("document.update", actor=ACTOR, organization_id=ORG, targets=[Target("document", f"d{i}")])
        for i in range(calls)
    ]

    def baseline_record(i: int) -> None:
        # What record() does minus the Auditor and the dispatcher: build the same PendingEvent, append to a deque.
        local.append(
            PendingEvent(
                "document.update",
                actor=ACTOR,
                organization_id=ORG,
                targets=[Target("document", f"doc_{i}", "Quarterly plan")],
                metadata={"run": 0, "seq": i},
            )
        )

    # Each op is timed alone; their order rotates every iteration, because on this VM the first call after a sleep
    # is several times slower (cold caches) and must not land on the same op every time.
    ops: list[tuple[str, Callable[[int], None]]] = [
        ("baseline record", baseline_record),
        ("auditor.record()", lambda i: record_one(auditor, i)),
        ("baseline submit", lambda i: local.append(pending[i])),
        ("dispatcher.submit()", lambda i: submit(pending[i])),
    ]
    samples: dict[str, list[int]] = {name: [] for name, _ in ops}
    clock = time.perf_counter_ns
    try:
        # A backlog first, so that the senders (8 threads in the SDK) and the committer are busy for the whole run.
        for i in range(1500 if quick else 3000):
            record_one(auditor, -1 - i)
        time.sleep(0.5)
        sent_before = auditor.stats()["sent"]
        started = time.perf_counter()
        for i in range(calls):
            for k in range(4):
                name, op = ops[(i + k) % 4]
                t0 = clock()
                op(i)
                samples[name].append(clock() - t0)
            if i % 10 == 9:
                local.clear()
                time.sleep(0.004)  # ~2,000 events/s: a busy app, not a tight loop
        elapsed = time.perf_counter() - started
        delivered = auditor.stats()["sent"] - sent_before
    finally:
        auditor.close(1)
        _remove_db(outbox)
    for label, baseline, target in (
        ("auditor.record()", "baseline record", 3.0),
        ("dispatcher.submit()", "baseline submit", 3.0),
    ):
        p, b = _percentiles(samples[label]), _percentiles(samples[baseline])
        report.add(
            "4 hand-off",
            f"{label} p50",
            p["p50"],
            "µs",
            "",
            None,
            f"(same work without the dispatcher: {b['p50']:.2f} µs)",
        )
        report.add(
            "4 hand-off",
            f"{label} p99 minus same work w/o dispatcher",
            p["p99"] - b["p99"],
            "µs",
            f"≤ {target:g} µs",
            p["p99"] - b["p99"] <= target,
            f"(p99 {p['p99']:.1f} vs {b['p99']:.1f}; p99.9 {p['p99.9']:.0f} vs {b['p99.9']:.0f};"
            f" max {p['max']:,.0f} vs {b['max']:,.0f} µs)",
        )
    report.add(
        "4 hand-off",
        "delivered while timing (the dispatcher was live)",
        delivered / elapsed,
        "events/s",
        "> 0",
        delivered > 0,
        f"({delivered:,} events in {elapsed:.1f} s)",
    )


# ====================================================================================================================
# 5. SIGKILL / restart cycles on one outbox
# ====================================================================================================================
KILL_RATE_BURST = 3  # events per 10 ms: ~280 events/s, below the delivery rate, so kills land mid-delivery


def kill_worker(outbox: str, url: str, run: int, logdir: str, drain: bool) -> int:
    sink = WorkOSSink(api_key=API_KEY, base_url=url, timeout=2.0)
    auditor = make_auditor(sink, Path(outbox), retry=RetryPolicy(base=0.05, max_delay=0.5))
    # Rows a killed process had claimed stay leased until the lease expires (60 s by default: each restart would
    # wait that long for them). 5 s keeps the run short and changes nothing for loss or duplicates: a lease that
    # expired under a slow send is resent under the same Idempotency-Key.
    auditor.dispatcher.config.lease = 5.0
    if drain:
        flushed = auditor.flush(240)
        stats = auditor.stats()
        auditor.close(5)
        print(json.dumps({"flushed": flushed, "outbox_depth": stats["outbox_depth"], "dead": stats["outbox_dead"]}))
        return 0
    # What was committed, logged right after each group commit returns (a line-buffered write is in the kernel's
    # page cache at once, so it survives the SIGKILL). Rows are committed in recording order: the last row's seq
    # bounds them all.
    committed_log = open(Path(logdir) / f"committed-{run}.log", "a", buffering=1)  # noqa: SIM115
    outbox_object = auditor.dispatcher.outbox  # opening it here is the "reopens cleanly" check
    real_add = outbox_object.add

    def add(
        events: Sequence[tuple[str, float, str]],
        sinks: Sequence[str],
        dead: Sequence[tuple[str, float, str, str]] = (),
        *,
        captured: bool = False,
    ) -> None:
        real_add(events, sinks, dead, captured=captured)
        if events:
            committed_log.write(f"{json.loads(events[-1][2])['metadata']['seq']}\n")

    outbox_object.add = add  # type: ignore[method-assign]
    auditor.dispatcher.start()
    recorded_log = open(Path(logdir) / f"recorded-{run}.log", "a", buffering=1)  # noqa: SIM115
    print("ready", flush=True)
    seq = 0
    while True:
        for _ in range(KILL_RATE_BURST):
            record_one(auditor, seq, run)
            seq += 1
        recorded_log.write(f"{seq - 1} {time.time()}\n")
        time.sleep(0.01)


def _read_log(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    # The last line may be cut by the kill: keep complete lines only.
    return [line.split() for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def bench_kill(report: Report, emulator: EmulatorProcess, workdir: Path, quick: bool) -> None:
    print("5. SIGKILL / restart cycles", file=sys.stderr, flush=True)
    cycles = 3 if quick else 20
    emulator.command("reset")
    outbox = workdir / "kill.db"
    logdir = workdir / "kill-logs"
    logdir.mkdir()
    rng = random.Random()
    killed_at: dict[int, float] = {}
    ready_at: dict[int, float] = {}
    failed_starts = 0
    for run in range(cycles):
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--kill-worker", str(outbox), emulator.url, str(run), str(logdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            failed_starts += 1
        else:
            ready_at[run] = time.time()
            time.sleep(rng.uniform(0.2, 1.2))
        killed_at[run] = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    drain = subprocess.run(
        [sys.executable, str(SCRIPT), "--kill-worker", str(outbox), emulator.url, "-1", str(logdir), "--drain"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    drained = json.loads(drain.stdout.strip().splitlines()[-1]) if drain.returncode == 0 else {"flushed": False}
    integrity = _integrity(outbox)
    received = emulator.command("seqs")
    _remove_db(outbox)

    delivered = Counter((run, seq) for run, seq in received["seqs"])
    duplicates = sum(n - 1 for n in delivered.values()) + int(received["dup_keys"])
    recorded_total = committed_total = lost_committed = lost_window = 0
    window_ms: list[float] = []
    for run in range(cycles):
        recorded = _read_log(logdir / f"recorded-{run}.log")
        committed = _read_log(logdir / f"committed-{run}.log")
        if not recorded:
            continue
        last_recorded = int(recorded[-1][0])
        last_committed = max((int(line[0]) for line in committed), default=-1)
        recorded_total += last_recorded + 1
        committed_total += last_committed + 1
        lost_committed += sum((run, s) not in delivered for s in range(last_committed + 1))
        lost = [s for s in range(last_committed + 1, last_recorded + 1) if (run, s) not in delivered]
        lost_window += len(lost)
        if lost:
            # When the oldest lost event was recorded: the first log line at or after it.
            recorded_at = next(float(t) for s, t in recorded if int(s) >= lost[0])
            window_ms.append((killed_at[run] - recorded_at) * 1000)
            if os.environ.get("BENCH_DEBUG"):
                print(
                    f"    run {run}: up {killed_at[run] - ready_at.get(run, 0):.2f} s, lost {len(lost)},"
                    f" window {window_ms[-1]:.0f} ms",
                    file=sys.stderr,
                )
    report.add(
        "5 kill",
        f"committed events lost over {cycles} SIGKILL/restart cycles",
        lost_committed,
        "events",
        "0",
        lost_committed == 0 and bool(drained.get("flushed")),
        f"({committed_total:,} committed of {recorded_total:,} recorded; final drain"
        f" {'ok' if drained.get('flushed') else 'FAILED'})",
    )
    report.add("5 kill", "duplicates at the emulator", duplicates, "events", "0", duplicates == 0)
    report.add(
        "5 kill",
        "outbox reopened cleanly after every kill",
        cycles - failed_starts,
        f"of {cycles}",
        f"{cycles}",
        failed_starts == 0 and integrity == "ok",
        f"(integrity_check: {integrity})",
    )
    report.add(
        "5 kill",
        "uncommitted events lost (hand-off window), all kills",
        lost_window,
        "events",
        "",
        None,
        f"(lost at {len(window_ms)} of {cycles} kills; window median {statistics.median(window_ms or [0]):.0f} ms,"
        f" worst {max(window_ms, default=0):.0f} ms; commit interval 50 ms)",
    )


def _integrity(path: Path) -> str:
    import sqlite3

    try:
        conn = sqlite3.connect(path)
        try:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return repr(exc)


# ====================================================================================================================
SECTIONS: dict[str, Callable[[Report, EmulatorProcess, Path, bool], None]] = {
    "throughput": bench_throughput,
    "drain": bench_drain,
    "burst": bench_burst,
    "handoff": bench_handoff,
    "kill": bench_kill,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, fewer variants: a smoke run (< 60 s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    # Child-process roles (internal).
    parser.add_argument("--serve-emulator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kill-worker", nargs=4, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--burst-worker", nargs=4, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_emulator:
        return serve_emulator()
    if args.kill_worker:
        outbox, url, run, logdir = args.kill_worker
        return kill_worker(outbox, url, int(run), logdir, args.drain)
    if args.burst_worker:
        outbox, url, count, mode = args.burst_worker
        return burst_worker(outbox, url, int(count), mode)

    selected = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(selected) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    report = Report(load_average(), os.cpu_count() or 1, args.quick)
    workdir = Path(tempfile.mkdtemp(prefix="centure-audit-bench-"))
    emulator = EmulatorProcess()
    started = time.perf_counter()
    try:
        for name in selected:
            section_started = time.perf_counter()
            SECTIONS[name](report, emulator, workdir, args.quick)
            report.seconds[name] = round(time.perf_counter() - section_started, 1)
    finally:
        emulator.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"done in {time.perf_counter() - started:.0f} s {report.seconds}", file=sys.stderr)
    if args.json:
        json.dump(asdict(report), sys.stdout, indent=2, default=str)
        print()
    else:
        print_table(report, sys.stdout)
    return 0 if all(f.passed is not False for f in report.figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
