"""What `durable=True` adds to a request's latency: p50 / p99 of a durable endpoint minus the same endpoint without it.

    python benchmarks/durable_latency.py [--requests 400] [--postgres DSN]

A minimal Starlette app called through raw ASGI (no server, no network), one request at a time, alternating durable
and plain requests. Configurations: the outbox on SQLite (the default local file, fsync per group commit) with a
remote sink (what WorkOS delivery does: the event must reach the outbox), the default local store (inline: the
event must reach the store), and the outbox on PostgreSQL (`--postgres`, or CENTURE_AUDIT_TEST_POSTGRES_DSN).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from centure_audit_middleware import Actor, Auditor, audit, audited
from centure_audit_middleware.sinks import MemorySink, StoreSink

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_per_event import SCOPE, _receive, _send


class RemoteSink(MemorySink):
    inline = False  # delivered from the outbox, like WorkOS


def make_app(auditor: Auditor) -> Any:
    @audited("project.delete", durable=True)
    async def durable(request: Any) -> PlainTextResponse:
        audit.actor(Actor("user_1"))
        audit.organization("org_1")
        return PlainTextResponse("ok")

    @audited("project.delete")
    async def plain(request: Any) -> PlainTextResponse:
        audit.actor(Actor("user_1"))
        audit.organization("org_1")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/durable", durable, methods=["POST"]), Route("/plain", plain, methods=["POST"])])
    return auditor.install(app)


async def call(app: Any, path: str) -> float:
    """One raw ASGI request (the scope of `cpu_per_event.py`, on `path`); its wall time."""
    scope = dict(SCOPE, path=path, raw_path=path.encode())
    started = time.perf_counter()
    await app(scope, _receive, _send)
    return time.perf_counter() - started


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(auditor: Auditor, requests: int) -> tuple[list[float], list[float]]:
    app = make_app(auditor)
    durable: list[float] = []
    plain: list[float] = []
    for _ in range(20):  # warm-up: the outbox opened, the enrichers loaded
        await call(app, "/durable")
    for _ in range(requests):
        durable.append(await call(app, "/durable"))
        plain.append(await call(app, "/plain"))
    return durable, plain


def run(name: str, auditor: Auditor, requests: int) -> None:
    try:
        durable, plain = asyncio.run(measure(auditor, requests))
        auditor.flush(30)
    finally:
        auditor.close(10)
    ms = 1000.0
    print(
        f"{name:<34} durable p50 {percentile(durable, 0.5) * ms:7.2f} ms  p99 {percentile(durable, 0.99) * ms:7.2f} ms"
        f"   plain p50 {percentile(plain, 0.5) * ms:6.3f} ms  p99 {percentile(plain, 0.99) * ms:6.3f} ms"
        f"   added p50 {(percentile(durable, 0.5) - percentile(plain, 0.5)) * ms:7.2f} ms"
        f"  (mean {statistics.fmean(durable) * ms:.2f} ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--postgres", default=os.environ.get("CENTURE_AUDIT_TEST_POSTGRES_DSN"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        run(
            "SQLite outbox, remote sink",
            Auditor(sinks=[RemoteSink()], outbox=directory / "a.db", geoip=False),
            args.requests,
        )
        run(
            "default: local store (inline)",
            Auditor(sinks=[StoreSink(directory / "store.db")], outbox=directory / "b.db", geoip=False),
            args.requests,
        )
        if args.postgres:
            run(
                "PostgreSQL outbox, remote sink",
                Auditor(sinks=[RemoteSink()], outbox=args.postgres, geoip=False),
                args.requests,
            )
        else:
            print("PostgreSQL outbox: skipped (no --postgres DSN)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
