"""Where the committer's CPU per event goes, stage by stage: the profile behind `cpu_per_event.py`'s figures.

    .venv/bin/python benchmarks/committer_stages.py [--events 5000] [--rounds 3]

The request path is run as in `cpu_per_event.py` (raw ASGI calls of the same audited Starlette route), but the
hand-off keeps the requests' records in a list instead of waking the committer. Each stage the committer runs for
them is then timed alone, in this thread, on the same records (process CPU per event, best of `--rounds`):

- default (`Auditor()`: the local store, delivered inline): build the event (`EventBuilder.build`: context reads,
  route template, id, dataclasses, the clean-metadata check, validators), encode it (`to_json`, orjson), and the
  store's append (the store row with its search text, the SQLite insert into the event table, its indexes, the
  targets, the commit), in groups of 1,000 as the committer makes them;
- floor: the same event made the plainest way Python allows (a dict of the same fields from the same context, its
  id, encoded by orjson: no checks, no redaction, no enrichment, no objects), to show what is left to save;
- relay (`delivery="relay"`): capture (`EventBuilder.capture`: what the app knows of the event, redacted, as
  JSON) and the outbox insert of the captured rows, in groups of 1,000.

Stages timed alone miss what running beside requests adds (cache misses, GIL hand-overs), so their sum is a floor
of `cpu_per_event.py`'s background-thread column, not a replacement for it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_per_event as bench
import orjson

from centure_audit_middleware import Auditor
from centure_audit_middleware.delivery.outbox import Outbox
from centure_audit_middleware.events import new_event_id
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.store.base import event_row

GROUP = 1_000


def _records(auditor: Auditor, row: str, n: int) -> list[Any]:
    """`n` requests' records as the committer would receive them."""
    app = bench.make_app(row)
    auditor.install(app)
    records: list[Any] = []
    auditor.handoff = records.append
    asyncio.new_event_loop().run_until_complete(bench._calls(app, n))
    return records


def _per_event(stage: Callable[[], object], n: int) -> float:
    start = time.process_time()
    stage()
    return (time.process_time() - start) / n * 1e6


def default_stages(n: int, workdir: Path) -> dict[str, float]:
    os.chdir(workdir)
    auditor = Auditor(geoip=False)
    records = _records(auditor, "default", n)
    builder = auditor.dispatcher.builder
    store = auditor.sinks[0].store  # type: ignore[attr-defined]
    events: list[Any] = []
    bodies: list[str] = []

    def build() -> None:
        events.extend(builder.build(r) for r in records)

    def encode() -> None:
        bodies.extend(e.to_json() for e in events)

    def append() -> None:
        for i in range(0, n, GROUP):
            store.append(events[i : i + GROUP], bodies=bodies[i : i + GROUP])

    def rows() -> None:
        for event, body in zip(events, bodies, strict=True):
            event_row(event, body, with_csv=False)

    stages = {
        "build": _per_event(build, n),
        "encode": _per_event(encode, n),
        "store append": _per_event(append, n),
        "(of which rows)": _per_event(rows, n),
    }
    auditor.close(5)
    return stages


def floor_stages(n: int, workdir: Path) -> dict[str, float]:
    os.chdir(workdir)
    auditor = Auditor(geoip=False)
    records = _records(auditor, "default", n)

    def plain() -> None:
        for ctx in records:
            actor, when = ctx.actor, ctx.started_at
            orjson.dumps(
                {
                    "id": new_event_id(when),
                    "organization_id": ctx.organization_id,
                    "action": ctx.spec.action,
                    "occurred_at": dt.datetime.fromtimestamp(when, dt.UTC),
                    "actor": {"id": actor.id, "type": actor.type, "name": actor.name, "metadata": actor.metadata},
                    "targets": [{"id": ctx.params()["project_id"], "type": "project"}],
                    "context": {"location": ctx.client_ip, "user_agent": ctx.user_agent},
                    "request": [ctx.method, ctx.path, ctx.route_template(), ctx.status, ctx.peer],
                }
            ).decode()

    stages = {"plain dict + orjson": _per_event(plain, n)}
    auditor.close(5)
    return stages


def relay_stages(n: int, workdir: Path) -> dict[str, float]:
    auditor = Auditor(sinks=[MemorySink()], outbox=workdir / "o.db", geoip=False, delivery="relay")
    records = _records(auditor, "relay", n)
    builder = auditor.dispatcher.builder
    outbox = Outbox(workdir / "captured.db")
    rows: list[tuple[str, float, str]] = []

    def capture() -> None:
        now = time.time()
        rows.extend((event_id, now, body) for event_id, body in map(builder.capture, records))

    def insert() -> None:
        for i in range(0, n, GROUP):
            outbox.add(rows[i : i + GROUP], [], captured=True)

    stages = {"capture": _per_event(capture, n), "outbox insert": _per_event(insert, n)}
    outbox.close()
    auditor.close(5)
    return stages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000, help="records per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best of each stage counts (default: 3)")
    args = parser.parse_args(argv)
    best: dict[str, dict[str, float]] = {}
    home = os.getcwd()
    for _ in range(args.rounds):
        for name, run in (("default", default_stages), ("floor", floor_stages), ("relay", relay_stages)):
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    measured = run(args.events, Path(tmp))
                finally:
                    os.chdir(home)
            for stage, value in measured.items():
                kept = best.setdefault(name, {})
                kept[stage] = min(value, kept.get(stage, value))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.events:,} events x {args.rounds} rounds")
    print("process CPU per event, each stage timed alone in one thread (best round)")
    for name, stages in best.items():
        print(f"{name}:")
        for stage, value in stages.items():
            print(f"  {stage:<20} {value:6.1f} µs")
        total = sum(value for stage, value in stages.items() if not stage.startswith("("))
        print(f"  {'sum':<20} {total:6.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
