"""Event store benchmark: insert rate, filtered first-page latency, export throughput and memory.

    .venv/bin/python benchmarks/store.py                      # 1,000,000 events into SQLite (a few minutes)
    .venv/bin/python benchmarks/store.py --events 200000 --json
    CENTURE_AUDIT_TEST_POSTGRES_DSN=postgresql://... .venv/bin/python benchmarks/store.py   # PostgreSQL too

Data: 20 organizations of skewed sizes (the largest holds about a third of the events), 40 actors each, the 24
Centure actions, one or two targets per event, metadata like the app's, spread over 90 days. Targets: first page
(50 rows) p50 < 20 ms on SQLite for each filter; CSV export >= 100,000 rows/s on SQLite with flat memory.

Timings include everything the store does (serialising each event, indexing, the full-text index); generating
the events is not timed. PostgreSQL runs in a throwaway schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from centure_audit_middleware.events import (
    Actor,
    AuditEvent,
    EventContext,
    GeoInfo,
    Target,
    UserAgentInfo,
    new_event_id,
)
from centure_audit_middleware.store import EventQuery, EventStore
from centure_audit_middleware.store.export import write_csv, write_jsonl

POSTGRES_ENV = "CENTURE_AUDIT_TEST_POSTGRES_DSN"

ACTIONS = {
    "api_key.create": ("api_key", "project"),
    "project.create": ("project",),
    "project.update_name": ("project",),
    "project_membership.create": ("project", "user"),
    "project_membership.update": (),
    "organization.create": ("organization",),
    "organization.update_name": ("organization",),
    "mcp_proxy.create": ("mcp_proxy",),
    "mcp_proxy.update": ("mcp_proxy", "project"),
    "mcp_proxy.update_status": ("mcp_proxy", "project"),
    "mcp_proxy.revoke": ("mcp_proxy", "project"),
    "mcp_proxy.delete": ("mcp_proxy", "project"),
    "mcp_proxy.view_details": ("mcp_proxy",),
    "external_app.login_view": ("external_app", "mcp_proxy"),
    "external_app.login_approve": ("external_app", "mcp_proxy"),
    "sso.view_settings": ("organization",),
    "sso.create_management_portal_url": (),
    "sso.delete_connection": (),
    "directory_sync.delete": ("directory_sync",),
    "directory_sync.create_management_portal_url": ("organization",),
    "audit_logs.create_management_portal_url": ("organization",),
    "log_streams.create_management_portal_url": ("organization",),
    "user.view_settings": ("user",),
    "analytics.view": ("project",),
}
ACTION_NAMES = list(ACTIONS)
PREFIXES = ["mcp_proxy.*", "project.*", "sso.*", "external_app.*", "directory_sync.*"]
FIRST = ["Alice", "Bob", "Chloé", "Dmitri", "Eve", "Farah", "Gunnar", "Hiro", "Ines", "Jamal", "Kofi", "Lena"]
LAST = ["Martin", "Nguyen", "Okafor", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka", "Ueda", "Varga"]
UAS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
]
ORGS = 20
ACTORS_PER_ORG = 40
DAYS = 90


class Dataset:
    """Deterministic synthetic events; also remembers what the queries will ask for."""

    def __init__(self, total: int, seed: int = 7) -> None:
        self.total = total
        self.rng = random.Random(seed)
        weights = [1 / (i + 1) for i in range(ORGS)]  # Zipf-like: org 0 is the biggest
        scale = sum(weights)
        self.org_weights = [w / scale for w in weights]
        self.orgs = [f"org_{uuid.UUID(int=self.rng.getrandbits(128)).hex[:26].upper()}" for _ in range(ORGS)]
        self.actors: dict[str, list[Actor]] = {}
        for org in self.orgs:
            actors = []
            for i in range(ACTORS_PER_ORG):
                first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
                email = f"{first.lower()}.{last.lower()}{i}@{org[4:10].lower()}.example.com"
                actors.append(
                    Actor(
                        id=f"user_{uuid.UUID(int=self.rng.getrandbits(128)).hex[:24]}",
                        name=f"{first} {last} {i}",
                        metadata={"email": email, "first_name": first, "last_name": last},
                    )
                )
            self.actors[org] = actors
        self.end = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
        self.start = self.end - dt.timedelta(days=DAYS)

    def batches(self, size: int) -> Iterator[list[AuditEvent]]:
        """Events in recording order, as an app produces them: time moves forward (in whole seconds, so that
        bursts share timestamps and the id tie-breaker matters), organizations interleaved."""
        rng = self.rng
        step = (self.end - self.start).total_seconds() / self.total
        clock = self.start.timestamp()
        produced = 0
        while produced < self.total:
            n = min(size, self.total - produced)
            batch = []
            for _ in range(n):
                clock += rng.expovariate(1 / step)
                when = float(int(clock))
                org = rng.choices(self.orgs, self.org_weights)[0]
                action = rng.choice(ACTION_NAMES)
                targets = tuple(
                    Target(
                        kind, id=f"{kind}_{rng.randrange(500)}", name=f"{kind.replace('_', ' ')} {rng.randrange(500)}"
                    )
                    for kind in ACTIONS[action]
                )
                project = targets[-1].id if targets else "none"
                batch.append(
                    AuditEvent(
                        id=new_event_id(when),
                        organization_id=org,
                        action=action,
                        occurred_at=dt.datetime.fromtimestamp(when, dt.UTC),
                        actor=rng.choice(self.actors[org]),
                        targets=targets,
                        context=EventContext(
                            location=f"203.0.{rng.randrange(256)}.{rng.randrange(256)}", user_agent=rng.choice(UAS)
                        ),
                        metadata={"source": f"/projects/{project}/settings"},
                        version=1,
                        geo=GeoInfo(country_code="DE", city="Berlin"),
                        user_agent=UserAgentInfo(browser_family="Chrome", os_family="Linux", device_class="desktop"),
                    )
                )
            produced += n
            yield batch


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def time_queries(store: EventStore, make: Callable[[random.Random], EventQuery], runs: int) -> dict[str, float]:
    rng = random.Random(11)
    samples = []
    rows = 0
    for _ in range(runs):
        q = make(rng)
        start = time.perf_counter()
        page = store.query(q)
        samples.append((time.perf_counter() - start) * 1000)
        rows += len(page.events)
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 99),
        "avg_rows": rows / runs,
    }


class _CountingSink:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, s: str, /) -> int:
        self.bytes += len(s)
        return len(s)


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_export(store: EventStore, org: str, fmt: str) -> dict[str, Any]:
    q = EventQuery(org)
    writer = write_csv if fmt == "csv" else write_jsonl
    gc.collect()
    # RssAnon: the process's own memory (heap, SQLite's page caches). Total RSS would also count the pages of the
    # database file that SQLite reads through its memory map, which are the kernel's page cache, not ours.
    rss_before = _rss_kib("RssAnon")
    sink = _CountingSink()
    start = time.perf_counter()
    rows = writer(store, q, sink)
    elapsed = time.perf_counter() - start
    rss_after = _rss_kib("RssAnon")
    # Python-level allocations, in a second pass (tracemalloc slows everything down, so it is not timed).
    tracemalloc.start()
    writer(store, q, _CountingSink())
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed if elapsed else 0.0,
        "mb": sink.bytes / 1e6,
        "rss_anon_before_mib": rss_before / 1024 if rss_before else None,
        "rss_anon_after_mib": rss_after / 1024 if rss_after else None,
        "tracemalloc_peak_mib": traced_peak / 2**20,
    }


def run_backend(name: str, store: EventStore, data: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": name, "events": data.total}

    def log(message: str) -> None:
        if not args.json:
            print(f"[{name}] {message}", file=sys.stderr, flush=True)

    insert_seconds = 0.0
    insert_cpu = 0.0
    done = 0
    wall = time.perf_counter()
    reuse = args.db is not None and store.count(EventQuery(data.orgs[0], limit=1)) > 0
    for batch in () if reuse else data.batches(args.batch):
        start, cpu = time.perf_counter(), time.process_time()
        store.append(batch)
        insert_seconds += time.perf_counter() - start
        insert_cpu += time.process_time() - cpu
        done += len(batch)
        if done % (args.batch * 50) == 0:
            log(f"inserted {done:,} ({done / insert_seconds:,.0f}/s)")
    if reuse:
        log(f"reusing the events in {args.db}")
    out["insert"] = {
        "seconds": insert_seconds,
        "events_per_s": data.total / insert_seconds if insert_seconds else None,
        # CPU time of this process only (PostgreSQL's own work is in the server): on a shared machine, the wall
        # clock also counts other processes' turns.
        "cpu_us_per_event": insert_cpu / data.total * 1e6 if insert_seconds else None,
        "wall_seconds_with_generation": time.perf_counter() - wall,
        "batch": args.batch,
    }
    analyze = getattr(store, "analyze", None)
    if analyze is not None:
        analyze()
    log("queries")
    orgs = data.orgs

    def any_org(rng: random.Random) -> str:
        return rng.choices(orgs, data.org_weights)[0]

    def by_prefix(rng: random.Random) -> EventQuery:
        return EventQuery(any_org(rng), action=rng.choice(PREFIXES))

    def by_actor(rng: random.Random) -> EventQuery:
        org = any_org(rng)
        actor = rng.choice(data.actors[org])
        return EventQuery(org, actor=actor.name if rng.random() < 0.5 else actor.id)

    def by_text(rng: random.Random) -> EventQuery:
        org = any_org(rng)
        actor = rng.choice(data.actors[org])
        email = str(actor.metadata["email"])
        term = rng.choice([email.split("@")[0], email, "mcp proxy 42", "berlin", actor.name or "", "203.0.7."])
        return EventQuery(org, text=term)

    def by_dates(rng: random.Random) -> EventQuery:
        since = data.start + dt.timedelta(hours=rng.randrange(DAYS * 24 - 24))
        return EventQuery(any_org(rng), since=since, until=since + dt.timedelta(days=1))

    def by_target(rng: random.Random) -> EventQuery:
        return EventQuery(any_org(rng), target_type="mcp_proxy", target_id=f"mcp_proxy_{rng.randrange(500)}")

    def newest(rng: random.Random) -> EventQuery:
        return EventQuery(any_org(rng))

    queries = {
        "org (newest page)": newest,
        "org + action prefix": by_prefix,
        "org + actor": by_actor,
        "org + text": by_text,
        "org + date range": by_dates,
        "org + target": by_target,
    }
    out["queries"] = {label: time_queries(store, make, args.queries) for label, make in queries.items()}
    log("export")
    biggest = orgs[0]
    out["export_csv"] = measure_export(store, biggest, "csv")
    out["export_jsonl"] = measure_export(store, biggest, "jsonl")
    return out


def print_table(results: list[dict[str, Any]]) -> None:
    for r in results:
        size = f", {r['file_mib']:,.0f} MiB on disk" if "file_mib" in r else ""
        print(f"\n== {r['backend']}: {r['events']:,} events{size} ==")
        ins = r["insert"]
        if ins["events_per_s"]:
            print(
                f"insert: {ins['events_per_s']:,.0f} events/s (batches of {ins['batch']}, {ins['seconds']:.1f} s;"
                f" {ins['cpu_us_per_event']:.0f} µs CPU/event in this process)"
            )
        print(f"{'first page (limit 50)':<24}{'p50 ms':>10}{'p99 ms':>10}{'rows':>8}")
        for label, q in r["queries"].items():
            print(f"{label:<24}{q['p50_ms']:>10.2f}{q['p99_ms']:>10.2f}{q['avg_rows']:>8.1f}")
        for key in ("export_csv", "export_jsonl"):
            e = r[key]
            rss = (
                f"RssAnon {e['rss_anon_before_mib']:.0f} -> {e['rss_anon_after_mib']:.0f} MiB"
                if e["rss_anon_before_mib"]
                else "RssAnon n/a"
            )
            print(
                f"{key.replace('_', ' ')}: {e['rows']:,} rows in {e['seconds']:.2f} s = {e['rows_per_s']:,.0f} rows/s,"
                f" {e['mb']:.0f} MB; {rss}; Python peak {e['tracemalloc_peak_mib']:.1f} MiB"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per append")
    parser.add_argument("--queries", type=int, default=200, help="runs per query kind")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--dir", help="where to put the SQLite file (default: a temporary directory)")
    parser.add_argument("--db", help="SQLite file to fill once and keep; later runs reuse its events (same --events)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    results = []
    if args.backend in ("sqlite", "all"):
        from centure_audit_middleware.store.sqlite import SqliteStore

        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            path = Path(args.db) if args.db else Path(tmp) / "bench.db"
            store = SqliteStore(path)
            try:
                result = run_backend("sqlite", store, Dataset(args.events), args)
                files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
                result["file_mib"] = sum(p.stat().st_size for p in files) / 2**20
                results.append(result)
            finally:
                store.close()
    dsn = os.environ.get(POSTGRES_ENV)
    if args.backend in ("postgres", "all") and dsn:
        import psycopg
        from psycopg import sql

        from centure_audit_middleware.store.postgres import PostgresStore

        schema = f"centure_bench_{uuid.uuid4().hex[:8]}"
        pg = PostgresStore(dsn, schema=schema)
        try:
            result = run_backend("postgres", pg, Dataset(args.events), args)
            results.append(result)
        finally:
            pg.close()
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    elif args.backend == "postgres":
        print(f"set {POSTGRES_ENV} to benchmark PostgreSQL", file=sys.stderr)
        return 2

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
