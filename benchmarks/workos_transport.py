"""Process CPU per `WorkOSSink.send()` for each HTTP transport of the WorkOS sink.

    .venv/bin/python benchmarks/workos_transport.py [--quick] [--calls N] [--rounds R] [--json]

DESIGN §5: everything the app's process does for an event shares its GIL with the requests, and delivery through
the SDK's own HTTP layer (httpx2) costs about half a millisecond of CPU per call. Target: the default transport
(`transport="stdlib"`, sinks/stdlib_http.py) at most 150 µs of process CPU per call.

Method: the project's WorkOS emulator runs in another process (benchmarks/apps/bench_emulator.py), so only the
client's side of each call is counted. Per round and per row, a fresh sink sends a warm-up, then N distinct events
one after the other in this thread; the figure is `time.process_time()` (all threads of this process, user and
system) over the N calls, divided by N, best of R rounds (slower rounds measure the neighbours, not the code; the
median is shown too). Rows run in a rotated order each round. The events are built beforehand; `send()` does what
the dispatcher's sender does per event: `event.to_sdk()` (the SDK's `AuditLogEvent`), `create_event` through the
SDK, the outcome classification. At the end the emulator must have committed every event sent.

Rows:
- `stdlib` (default transport): the SDK on keep-alive `http.client` connections, proxy-aware.
- `sdk`: `WorkOSSink(transport="sdk")`, the SDK's default httpx2 client.
- `sdk-no-io` (baseline): the same `send()` with an SDK backend that answers a canned 200 without any I/O: what
  the SDK's request building and response mapping cost, common to both transports.
- `raw-socket` (baseline): no SDK; the event's JSON built with `to_workos()` + `json.dumps`, the request written and
  the response read by hand on one keep-alive socket: the floor of the I/O (syscalls, loopback TCP) plus encoding.

Proxy variables are ignored for 127.0.0.1 here (added to `NO_PROXY`): the figure is the direct path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apps.bench_emulator import EmulatorProcess

from centure_audit_middleware import Actor, AuditEvent, Target
from centure_audit_middleware.events import EventContext, new_event_id
from centure_audit_middleware.sinks.workos import WorkOSSink

TARGET_US = 150.0
ORG = "org_01BENCH"
ACTOR = Actor("user_01BENCH", name="Ada Lovelace", metadata={"email": "ada@example.com"})
ROWS = ("stdlib", "sdk", "sdk-no-io", "raw-socket")


def make_events(n: int) -> list[AuditEvent]:
    """Realistic events: an actor with metadata, a named target, two metadata keys, a location and user agent."""
    now = dt.datetime.now(dt.UTC)
    return [
        AuditEvent(
            new_event_id(),
            ORG,
            "document.update",
            now,
            ACTOR,
            (Target("document", f"doc_{i}", "Quarterly plan"),),
            EventContext("81.2.69.142", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"),
            {"seq": i, "source": "bench"},
        )
        for i in range(n)
    ]


class CannedBackend:
    """A `workos.HTTPBackend` that answers 200 `{"success":true}` at once: no I/O."""

    def request(self, method: str, url: str, *, headers: dict[str, str], content: bytes | None, timeout: float) -> Any:
        from workos import HTTPResponse

        return HTTPResponse(200, {"content-type": "application/json"}, b'{"success":true}', method, url)

    def close(self) -> None:
        pass


def make_sender(row: str, emulator: EmulatorProcess) -> tuple[Callable[[AuditEvent], None], Callable[[], None]]:
    """(send one event, close) for a row."""
    if row in ("stdlib", "sdk"):
        sink = WorkOSSink(api_key=emulator.api_key, base_url=emulator.url, transport=row)  # type: ignore[arg-type]
        return sink.send, sink.close
    if row == "sdk-no-io":
        sink = WorkOSSink(api_key=emulator.api_key, base_url=emulator.url, transport="sdk")
        from workos import WorkOSClient

        sink.close()
        sink._client = WorkOSClient(
            api_key=emulator.api_key, base_url=emulator.url, max_retries=0, http_client=CannedBackend()
        )
        return sink.send, lambda: None
    if row == "raw-socket":
        return raw_sender(emulator)
    raise ValueError(row)


def raw_sender(emulator: EmulatorProcess) -> tuple[Callable[[AuditEvent], None], Callable[[], None]]:
    url = urlsplit(emulator.url)
    sock = socket.create_connection((url.hostname, url.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    head = (
        f"POST /audit_logs/events HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {emulator.api_key}\r\n"
        "Content-Type: application/json\r\n"
    )

    def send(event: AuditEvent) -> None:
        body = json.dumps({"organization_id": ORG, "event": event.to_workos()}, separators=(",", ":")).encode()
        sock.sendall(
            f"{head}Idempotency-Key: {event.id}\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
        )
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        reader.read(length)

    def close() -> None:
        reader.close()
        sock.close()

    return send, close


def measure(row: str, emulator: EmulatorProcess, calls: int, warm_up: int) -> tuple[float, float]:
    """(CPU µs per call, wall µs per call) over `calls` sends after `warm_up` sends."""
    send, close = make_sender(row, emulator)
    try:
        for event in make_events(warm_up):
            send(event)
        events = make_events(calls)
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        for event in events:
            send(event)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        close()
    return cpu / calls * 1e6, wall / calls * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 calls, 3 rounds (a few seconds)")
    parser.add_argument("--calls", type=int, help="calls per row and round (default 5,000; --quick 1,000)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; --quick 3)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: {','.join(ROWS)})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    calls = args.calls or (1000 if args.quick else 5000)
    rounds = args.rounds or (3 if args.quick else 5)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := set(rows) - set(ROWS):
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)
    emulator = EmulatorProcess([ORG])
    results: dict[str, list[tuple[float, float]]] = {row: [] for row in rows}
    expected = 0
    try:
        for round_ in range(rounds):
            for row in rows[round_ % len(rows) :] + rows[: round_ % len(rows)]:
                results[row].append(measure(row, emulator, calls, warm_up=min(200, calls)))
                if row != "sdk-no-io":
                    expected += calls + min(200, calls)
            print(f"round {round_ + 1}/{rounds} done", file=sys.stderr)
        committed = emulator.count()
    finally:
        emulator.close()

    summary = {
        row: {
            "cpu_us_best": min(cpu for cpu, _ in samples),
            "cpu_us_median": statistics.median(cpu for cpu, _ in samples),
            "wall_us_median": statistics.median(wall for _, wall in samples),
        }
        for row, samples in results.items()
    }
    passed = committed == expected and ("stdlib" not in summary or summary["stdlib"]["cpu_us_best"] <= TARGET_US)
    if args.json:
        json.dump(
            {
                "calls": calls,
                "rounds": rounds,
                "load": load,
                "committed": committed,
                "expected": expected,
                "target_us": TARGET_US,
                "rows": summary,
                "passed": passed,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(
            f"\nWorkOSSink.send(): process CPU per call, {calls:,} calls x {rounds} rounds, emulator in another process"
        )
        print(f"{'row':<12} {'CPU µs best':>12} {'CPU µs median':>14} {'wall µs median':>15}")
        for row, figures in summary.items():
            note = f"  target ≤ {TARGET_US:g}" if row == "stdlib" else ""
            print(
                f"{row:<12} {figures['cpu_us_best']:>12.1f} {figures['cpu_us_median']:>14.1f}"
                f" {figures['wall_us_median']:>15.1f}{note}"
            )
        if "stdlib" in summary and "sdk" in summary:
            ratio = summary["sdk"]["cpu_us_best"] / summary["stdlib"]["cpu_us_best"]
            print(f"sdk / stdlib CPU: {ratio:.1f}x")
        print(f"committed by the emulator: {committed:,} of {expected:,} sent")
        print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
