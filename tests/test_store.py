"""The event store, on SQLite and PostgreSQL alike: storage, every filter, pagination, isolation, export, retention."""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import io
import json
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from centure_audit_middleware.events import Actor, AuditEvent, Target, new_event_id
from centure_audit_middleware.sinks.base import RejectEvent, RetryLater
from centure_audit_middleware.sinks.store import StoreSink
from centure_audit_middleware.store import (
    EXPORT_COLUMNS,
    EventPage,
    EventQuery,
    EventStore,
    StoreError,
    StoreUnavailable,
    open_store,
)
from centure_audit_middleware.store import sqlite as sqlite_backend
from centure_audit_middleware.store.base import SqlEventStore
from centure_audit_middleware.store.export import (
    CSV_HEADER,
    csv_row,
    csv_safe,
    format_csv_row,
    iter_csv,
    iter_jsonl,
    write_csv,
    write_jsonl,
)
from centure_audit_middleware.store.query import SortKey, decode_cursor, encode_cursor, escape_like
from centure_audit_middleware.store.retention import apply_retention
from centure_audit_middleware.store.sqlite import SqliteStore

from .store_fixtures import (
    ALICE,
    BOB,
    KEY,
    ORG_A,
    ORG_B,
    T0,
    backend,
    make_event,
    open_same,
    pg_schema,
    store,
    store_url,
)

__all__ = ["backend", "open_same", "pg_schema", "store", "store_url"]  # fixtures, imported for pytest

PROJECT = Target("project", "proj_1", name="Production")
KEY_TARGET = Target("api_key", "key_1", name="CI deploy key")
PROXY = Target("mcp_proxy", "mcp_1", name="GitHub MCP")


def ids(events: list[AuditEvent]) -> list[str]:
    return [e.id for e in events]


def newest_first(events: list[AuditEvent]) -> list[str]:
    return [e.id for e in sorted(events, key=lambda e: (e.occurred_at, e.id), reverse=True)]


def all_pages(store: EventStore, q: EventQuery) -> list[list[AuditEvent]]:
    pages = []
    while True:
        page = store.query(q)
        pages.append(page.events)
        if page.next_cursor is None:
            return pages
        q = q.replace(cursor=page.next_cursor)


def search(store: EventStore, **filters: Any) -> list[str]:
    org = filters.pop("org", ORG_A)
    return ids(store.query(EventQuery(org, limit=1000, **filters)).events)


# --- storage ---


def test_append_then_get_returns_the_full_event(store: EventStore) -> None:
    event = make_event(
        targets=[PROJECT, KEY_TARGET],
        metadata={"source": "/projects/proj_1", "count": 3, "ratio": 0.5, "ok": True, "note": "naïve ☃ 🙂"},
        enriched=True,
    )
    assert store.append([event]) == 1
    assert store.get(ORG_A, event.id) == event
    [page_event] = store.query(EventQuery(ORG_A)).events
    assert page_event == event
    assert page_event.geo is not None and page_event.geo.city == "Berlin"  # the enrichment is kept


def test_append_is_idempotent_by_event_id(store: EventStore) -> None:
    first = make_event(action="api_key.create")
    assert store.append([first]) == 1
    assert store.append([first]) == 0
    # A redelivery never replaces what is stored, even if the copy differs.
    altered = make_event(action="api_key.delete", event_id=first.id, targets=[PROJECT])
    assert store.append([altered, make_event(seconds=1)]) == 1
    assert store.count(EventQuery(ORG_A)) == 2
    assert store.get(ORG_A, first.id) == first
    assert search(store, target_type="project") == []  # the rejected copy's target was not indexed either
    # Duplicates inside one batch count once.
    twin = make_event(seconds=2)
    assert store.append([twin, twin]) == 1
    assert store.append([]) == 0


def test_get_is_scoped_to_the_organization(store: EventStore) -> None:
    event = make_event(ORG_A)
    store.append([event])
    assert store.get(ORG_B, event.id) is None
    assert store.get(ORG_A, "no-such-id") is None
    assert store.get(ORG_A, "bad\x00id") is None
    assert store.get("", event.id) is None


def test_append_refuses_events_it_cannot_index(store: EventStore) -> None:
    good = make_event()
    bad = make_event(org="")
    with pytest.raises(ValueError, match="organization_id"):
        store.append([good, bad])
    assert store.count(EventQuery(ORG_A)) == 0  # all or nothing
    with pytest.raises(ValueError, match="targets"):
        store.append([make_event(targets=[Target("project", "")])])


def test_nul_characters_in_event_data(store: EventStore, backend: str) -> None:
    event = make_event(metadata={"note": "a\x00b"}, actor=Actor("user_x", name="N\x00ul"))
    assert store.append([event]) == 1
    stored = store.get(ORG_A, event.id)
    assert stored is not None
    # PostgreSQL text cannot hold NUL: the one documented lossy change.
    expected = "a\x00b" if backend == "sqlite" else "a\ufffdb"
    assert stored.metadata["note"] == expected


# --- filters ---


@pytest.fixture
def sample(store: EventStore) -> dict[str, AuditEvent]:
    events = {
        "create_key": make_event(action="api_key.create", seconds=1, targets=[KEY_TARGET, PROJECT]),
        "proxy_status": make_event(
            action="mcp_proxy.update_status", seconds=2, actor=BOB, targets=[PROXY, PROJECT], metadata={"to": "Paused"}
        ),
        "proxy_create": make_event(action="mcp_proxy.create", seconds=3, actor=BOB, targets=[PROXY]),
        "proxyish": make_event(action="mcp_proxyx.create", seconds=4, actor=KEY, location="198.51.100.23"),
        "project": make_event(
            action="project.create", seconds=5, targets=[Target("project", "proj_2", name="Staging")]
        ),
        "other_org": make_event(ORG_B, action="mcp_proxy.create", seconds=6, actor=BOB, targets=[PROXY]),
    }
    store.append(list(events.values()))
    return events


def test_no_filter_lists_the_organization_newest_first(store: EventStore, sample: dict[str, AuditEvent]) -> None:
    expected = newest_first([e for e in sample.values() if e.organization_id == ORG_A])
    assert search(store) == expected
    assert search(store, org=ORG_B) == [sample["other_org"].id]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({"actor": "user_bob"}, ["proxy_create", "proxy_status"], id="actor-id"),
        pytest.param({"actor": "Bob Builder"}, ["proxy_create", "proxy_status"], id="actor-name"),
        pytest.param({"actor": "bob builder"}, [], id="actor-exact-case"),
        pytest.param({"actor": "Bob"}, [], id="actor-not-prefix"),
        pytest.param({"action": "mcp_proxy.create"}, ["proxy_create"], id="action-exact"),
        pytest.param({"action": "mcp_proxy.*"}, ["proxy_create", "proxy_status"], id="action-prefix"),
        pytest.param({"action": "mcp_proxy*"}, ["proxyish", "proxy_create", "proxy_status"], id="action-bare-prefix"),
        pytest.param({"action": "*"}, ["project", "proxyish", "proxy_create", "proxy_status", "create_key"], id="star"),
        pytest.param({"action": "mcp.*"}, [], id="action-prefix-none"),
        pytest.param({"action": "mcp_proxy"}, [], id="action-exact-not-prefix"),
        pytest.param({"target_type": "project"}, ["project", "proxy_status", "create_key"], id="target-type"),
        pytest.param({"target_id": "proj_1"}, ["proxy_status", "create_key"], id="target-id"),
        pytest.param({"target_type": "project", "target_id": "mcp_1"}, [], id="target-type-and-id-differ"),
        pytest.param({"target_type": "mcp_proxy", "target_id": "mcp_1"}, ["proxy_create", "proxy_status"], id="target"),
        pytest.param({"text": "BOB@builder"}, ["proxy_create", "proxy_status"], id="text-actor-email"),
        pytest.param({"text": "staging"}, ["project"], id="text-target-name"),
        pytest.param({"text": "paused"}, ["proxy_status"], id="text-metadata"),
        pytest.param({"text": "198.51.100"}, ["proxyish"], id="text-location"),
        pytest.param({"text": "mcp_1"}, ["proxy_create", "proxy_status"], id="text-target-id"),
        pytest.param({"text": "ci"}, ["create_key"], id="text-short"),
        pytest.param({"text": "  github mcp  "}, ["proxy_create", "proxy_status"], id="text-stripped"),
        pytest.param({"text": "nothing like this"}, [], id="text-none"),
        pytest.param({"actor": "user_bob", "action": "mcp_proxy.*", "target_id": "proj_1"}, ["proxy_status"], id="and"),
        pytest.param(
            {"actor": "", "text": "   "},
            ["project", "proxyish", "proxy_create", "proxy_status", "create_key"],
            id="empty",
        ),
    ],
)
def test_filters(
    store: EventStore, sample: dict[str, AuditEvent], filters: dict[str, Any], expected: list[str]
) -> None:
    assert search(store, **filters) == [sample[name].id for name in expected]
    assert store.count(EventQuery(ORG_A, **filters)) == len(expected)
    assert ids(list(store.iter_events(EventQuery(ORG_A, **filters)))) == [sample[name].id for name in expected]


def test_time_range_is_inclusive_exclusive(store: EventStore) -> None:
    events = [make_event(seconds=s) for s in range(5)]
    store.append(events)
    since, until = T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=3)
    assert search(store, since=since, until=until) == [events[2].id, events[1].id]
    assert search(store, since=since) == [events[4].id, events[3].id, events[2].id, events[1].id]
    assert search(store, until=until) == [events[2].id, events[1].id, events[0].id]
    assert search(store, since=since, until=since) == []
    # Any time zone: the instant is what counts.
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert search(store, since=since.astimezone(tokyo), until=until.astimezone(tokyo)) == [events[2].id, events[1].id]


def test_text_search_is_literal(store: EventStore) -> None:
    specials = {
        "percent": make_event(metadata={"note": "100% done"}, seconds=1),
        "underscore": make_event(metadata={"note": "snake_case"}, seconds=2),
        "backslash": make_event(metadata={"note": "C:\\temp\\x"}, seconds=3),
        "quote": make_event(metadata={"note": "say \"hi\" or 'bye'"}, seconds=4),
        "plain": make_event(metadata={"note": "100 dollars snakeXcase C:tempx"}, seconds=5),
        "unicode": make_event(metadata={"note": "Chloé ÉLAN 東京"}, seconds=6),
    }
    store.append(list(specials.values()))
    assert search(store, text="%") == [specials["percent"].id]
    assert search(store, text="0% d") == [specials["percent"].id]
    assert search(store, text="_") == [specials["underscore"].id]
    assert search(store, text="e_c") == [specials["underscore"].id]
    assert search(store, text="\\") == [specials["backslash"].id]
    assert search(store, text="\\temp") == [specials["backslash"].id]
    assert search(store, text='"hi"') == [specials["quote"].id]
    assert search(store, text="'bye'") == [specials["quote"].id]
    assert search(store, text="chloé élan") == [specials["unicode"].id]
    assert search(store, text="東京") == [specials["unicode"].id]
    assert search(store, text="AND") == []  # FTS query syntax has no meaning either
    assert search(store, text="*") == []


def test_text_search_without_fts5_and_for_common_terms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = [make_event(seconds=i, metadata={"note": f"common {i}"}) for i in range(6)]
    monkeypatch.setattr(sqlite_backend, "_fts5_available", lambda: False)
    with SqliteStore(tmp_path / "plain.db") as plain:
        assert not plain.has_fts
        plain.append(events)
        assert search(plain, text="COMMON") == newest_first(events)
    monkeypatch.undo()
    with SqliteStore(tmp_path / "fts.db") as fts:
        assert fts.has_fts
        # Common in the organization: walked; rare: through its part of the index; the same answers either way.
        rare = make_event(seconds=-1, metadata={"note": "needle in a haystack"})
        fts.append([*events, rare, make_event(ORG_B, metadata={"note": "common haystack"})])
        dialect = fts._dialect()

        def walks(q: EventQuery) -> bool:
            assert q.text is not None
            return not dialect.text_condition(q, q.text).candidates

        assert walks(EventQuery(ORG_A, text="common", limit=1))
        assert not walks(EventQuery(ORG_A, text="haystack", limit=1))
        assert ids(fts.query(EventQuery(ORG_A, text="common", limit=1)).events) == newest_first(events)[:1]
        assert search(fts, text="common") == newest_first(events)
        assert search(fts, text="common 4") == [events[4].id]
        assert search(fts, text="haystack") == [rare.id]
        assert search(fts, org=ORG_B, text="haystack") == search(fts, org=ORG_B, text="common")
        assert search(fts, org="org_without_events", text="haystack") == []
        monkeypatch.setattr(sqlite_backend, "TRIGRAM_COUNT_CAP", 1)
        fts._stats_cache.clear()
        assert walks(EventQuery(ORG_A, text="haystack"))  # every trigram "too common" now
        assert search(fts, text="haystack") == [rare.id]


def test_many_actions_under_one_prefix(store: EventStore) -> None:
    # More actions than the query splits into branches: the prefix becomes a range instead; same answers.
    events = [make_event(action=f"bulk.action_{i:03d}", seconds=i) for i in range(80)]
    store.append(events)
    q = EventQuery(ORG_A, action="bulk.*", actor="Alice Example", limit=7)
    assert [e.id for page in all_pages(store, q) for e in page] == newest_first(events)
    assert store.count(q) == 80


# --- pagination ---


def test_keyset_pagination_with_ties_is_stable(store: EventStore) -> None:
    # 230 events on 7 distinct timestamps: the id breaks the ties, so pages neither repeat nor skip.
    events = [
        make_event(
            seconds=i % 7, actor=ALICE if i % 2 else BOB, action="mcp_proxy.update" if i % 3 else "project.create"
        )
        for i in range(230)
    ]
    store.append(events)
    q = EventQuery(ORG_A, limit=50)
    pages = all_pages(store, q)
    assert [len(p) for p in pages] == [50, 50, 50, 50, 30]
    assert [e.id for page in pages for e in page] == newest_first(events)
    # The same through OR-ed branches (actor id or name) and an expanded prefix.
    filtered = [e for e in events if e.actor is BOB and e.action.startswith("mcp_proxy.")]
    q = EventQuery(ORG_A, actor="user_bob", action="mcp_proxy.*", limit=9)
    pages = all_pages(store, q)
    assert len(pages) > 3
    assert [e.id for page in pages for e in page] == newest_first(filtered)


def test_pagination_is_unaffected_by_new_events(store: EventStore) -> None:
    events = [make_event(seconds=i) for i in range(10)]
    store.append(events)
    first = store.query(EventQuery(ORG_A, limit=4))
    newer, between = make_event(seconds=100), make_event(seconds=5.5)
    store.append([newer, between])  # one before page 1 (never shown now), one inside page 2's range
    second = store.query(EventQuery(ORG_A, limit=4, cursor=first.next_cursor))
    assert ids(first.events) == newest_first(events)[:4]
    assert ids(second.events) == [between.id, *newest_first(events)[4:7]]


def test_last_page_has_no_cursor(store: EventStore) -> None:
    store.append([make_event(seconds=i) for i in range(3)])
    page = store.query(EventQuery(ORG_A, limit=3))
    assert isinstance(page, EventPage)
    assert len(page.events) == 3 and page.next_cursor is None
    assert store.query(EventQuery(ORG_B)).events == []


def test_streaming_starts_at_the_cursor_and_ignores_the_limit(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from centure_audit_middleware.store import base

    monkeypatch.setattr(base, "STREAM_CHUNK", 4)  # several chunks
    events = [make_event(seconds=i % 3) for i in range(11)]
    store.append(events)
    first = store.query(EventQuery(ORG_A, limit=2))
    rest = list(store.iter_events(EventQuery(ORG_A, limit=2, cursor=first.next_cursor)))
    assert ids(first.events) + ids(rest) == newest_first(events)
    assert [json.loads(line)["id"] for line in store.iter_json(EventQuery(ORG_A))] == newest_first(events)


# --- isolation and hostile input ---

HOSTILE = [
    "' OR 1=1 --",
    "'; DROP TABLE audit_events; --",
    '" OR ""="',
    "%",
    "_",
    "\\",
    "%_\\%",
    "org_%",
    "*",
    ") OR (1=1",
    "NEAR(a b)",
    "x" * 1000,
    "Ünïcödé ☃ 🙂 東京",
    "\u202e\u200b",
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_filter_values_never_cross_organizations(store: EventStore, value: str) -> None:
    store.append([make_event(ORG_A, actor=ALICE, targets=[PROJECT]), make_event(ORG_A, seconds=1, action="a.b")])
    for field in ("actor", "action", "target_type", "target_id", "text"):
        if field == "action" and "*" in value[:-1]:
            continue
        filters: dict[str, Any] = {field: value}
        q = EventQuery(ORG_B, **filters)
        assert store.query(q).events == []
        assert store.count(q) == 0
        assert list(store.iter_events(q)) == []
    # As the organization id itself: another (empty) organization, never a pattern.
    assert store.query(EventQuery(value)).events == []
    assert store.count(EventQuery(value)) == 0
    assert store.get(value, "x") is None
    assert store.count(EventQuery(ORG_A)) == 2  # nothing was dropped


def test_an_organization_id_is_not_a_pattern(store: EventStore) -> None:
    store.append([make_event("org_abc"), make_event("org_xbc")])
    assert store.count(EventQuery("org_abc")) == 1
    assert store.count(EventQuery("org_%")) == 0
    assert store.count(EventQuery("org__bc")) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"organization_id": ""}, "organization_id is required", id="no-org"),
        pytest.param({"organization_id": "  "}, "organization_id is required", id="blank-org"),
        pytest.param({"limit": 0}, "limit must be", id="limit-0"),
        pytest.param({"limit": 1001}, "limit must be", id="limit-1001"),
        pytest.param({"limit": True}, "limit must be", id="limit-bool"),
        pytest.param({"since": T0, "until": T0 - dt.timedelta(seconds=1)}, "is after until", id="since-after-until"),
        pytest.param({"since": dt.datetime(2025, 1, 1)}, "timezone-aware", id="naive-since"),
        pytest.param({"until": dt.datetime(2025, 1, 1)}, "timezone-aware", id="naive-until"),
        pytest.param({"since": "2025-01-01"}, "must be a datetime", id="string-since"),
        pytest.param({"action": "*.create"}, "only allowed at the end", id="star-first"),
        pytest.param({"action": "mcp_*.create"}, "only allowed at the end", id="star-middle"),
        pytest.param({"action": "a**"}, "only allowed at the end", id="double-star"),
        pytest.param({"actor": "x" * 1001}, "limit is 1000", id="long-actor"),
        pytest.param({"text": "y" * 5000}, "limit is 1000", id="long-text"),
        pytest.param({"organization_id": "o" * 1001}, "limit is 1000", id="long-org"),
        pytest.param({"actor": "a\x00b"}, "NUL", id="nul-actor"),
        pytest.param({"text": "\x00"}, "NUL", id="nul-text"),
        pytest.param({"target_id": "\udc80"}, "lone surrogate", id="surrogate"),
        pytest.param({"actor": 42}, "must be a string", id="not-a-string"),
    ],
)
def test_bad_filters_are_clear_value_errors(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"organization_id": ORG_A, **kwargs}
    with pytest.raises(ValueError, match=message):
        EventQuery(**kwargs)


def test_tampered_cursors_are_invalid(store: EventStore) -> None:
    store.append([make_event(seconds=i) for i in range(3)])
    cursor = store.query(EventQuery(ORG_A, limit=1)).next_cursor
    assert cursor is not None
    flipped = cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:]
    candidates = [
        flipped,
        cursor[:-2],
        cursor + "A",
        cursor + "!",
        "garbage",
        "!!!!",
        "' OR 1=1 --",
        "eyJhIjoxfQ",  # base64 of {"a":1}
        encode_cursor(decode_cursor(cursor, ORG_A), ORG_B),  # valid for another organization only
        "A" * 4000,
    ]
    for bad in candidates:
        with pytest.raises(ValueError, match=r"^invalid cursor$"):
            store.query(EventQuery(ORG_A, cursor=bad))
    assert len(store.query(EventQuery(ORG_A, cursor=cursor)).events) == 2


def test_escape_like() -> None:
    assert escape_like("100%_a\\b") == "100\\%\\_a\\\\b"


# --- counting, organizations, retention ---


def test_count_ignores_cursor_and_limit(store: EventStore) -> None:
    store.append([make_event(seconds=i) for i in range(7)])
    first = store.query(EventQuery(ORG_A, limit=2))
    assert store.count(EventQuery(ORG_A, limit=2, cursor=first.next_cursor)) == 7


def test_organizations(store: EventStore) -> None:
    assert store.organizations() == []
    store.append([make_event(ORG_B), make_event(ORG_A)])
    store.set_retention_days("org_policy_only", 365)
    assert store.organizations() == [ORG_A, ORG_B, "org_policy_only"]


def test_retention_policy(store: EventStore) -> None:
    assert store.get_retention_days(ORG_A) == 30
    store.set_retention_days(ORG_A, 365)
    assert store.get_retention_days(ORG_A) == 365
    store.set_retention_days(ORG_A, 30)
    assert store.get_retention_days(ORG_A) == 30
    for bad in (0, 90, 366, -30, "30", 30.0, True):
        with pytest.raises(ValueError, match="retention must be 30 or 365 days"):
            store.set_retention_days(ORG_A, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="organization_id"):
        store.set_retention_days("", 30)


def test_apply_retention_prunes_each_organization_by_its_policy(store: EventStore) -> None:
    now = T0 + dt.timedelta(days=400)

    def aged(org: str, days: float, **kwargs: Any) -> AuditEvent:
        return make_event(org, when=now - dt.timedelta(days=days), **kwargs)

    a_keep, a_old = aged(ORG_A, 29, targets=[PROJECT]), aged(ORG_A, 31, targets=[PROJECT], metadata={"n": "findme"})
    b_keep, b_old = aged(ORG_B, 364), aged(ORG_B, 366)
    c_old = aged("org_c", 1000)
    store.append([a_keep, a_old, b_keep, b_old, c_old])
    store.set_retention_days(ORG_B, 365)

    assert apply_retention(store, now, dry_run=True) == {ORG_A: 1, ORG_B: 1, "org_c": 1}
    assert store.count(EventQuery(ORG_A)) == 2
    assert apply_retention(store, now) == {ORG_A: 1, ORG_B: 1, "org_c": 1}
    assert search(store, org=ORG_A) == [a_keep.id]
    assert search(store, org=ORG_B) == [b_keep.id]
    assert search(store, org="org_c") == []
    # The side tables went with the events.
    assert search(store, org=ORG_A, target_type="project") == [a_keep.id]
    assert search(store, org=ORG_A, text="findme") == []
    assert apply_retention(store, now) == {ORG_A: 0, ORG_B: 0, "org_c": 0}
    assert apply_retention(store, now, organizations=[ORG_A]) == {ORG_A: 0}


def test_prune_in_batches(store: EventStore, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setattr(importlib.import_module(f"centure_audit_middleware.store.{backend}"), "PRUNE_BATCH", 3)
    store.append([make_event(seconds=i) for i in range(10)] + [make_event(ORG_B, seconds=1)])
    assert store.prune(ORG_A, T0 + dt.timedelta(seconds=8)) == 8
    assert store.count(EventQuery(ORG_A)) == 2
    assert store.count(EventQuery(ORG_B)) == 1
    with pytest.raises(ValueError, match="timezone-aware"):
        store.prune(ORG_A, dt.datetime(2025, 1, 1))


# --- export ---


def test_csv_export(store: EventStore) -> None:
    hostile = Actor("user_evil", name='=HYPERLINK("http://evil","x")', metadata={"email": "+1@evil"})
    events = [
        make_event(seconds=1, targets=[PROJECT, KEY_TARGET], metadata={"source": "/p", "n": 2}),
        make_event(seconds=2, actor=hostile, location="@home", user_agent="-x", metadata={"note": 'line1\nline2, "q"'}),
        make_event(seconds=3, actor=KEY, user_agent=None, metadata={}),
    ]
    store.append([*events, make_event(ORG_B)])
    out = io.StringIO(newline="")
    assert write_csv(store, EventQuery(ORG_A), out) == 3
    text = out.getvalue()
    assert text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert [r["id"] for r in rows] == newest_first(events)
    key_row, evil_row, first_row = rows
    assert first_row["occurred_at"] == "2025-03-01T12:00:01.000Z"
    assert first_row["actor_id"] == "user_alice" and first_row["actor_name"] == "Alice Example"
    assert first_row["actor_type"] == "user"
    assert json.loads(first_row["targets"]) == [t.to_dict() for t in (PROJECT, KEY_TARGET)]
    assert json.loads(first_row["metadata"]) == {"source": "/p", "n": 2}
    assert first_row["location"] == "203.0.113.7"
    assert first_row["user_agent"].startswith("Mozilla/5.0")
    # Formula-like cells are neutralised; JSON cells are not touched.
    assert evil_row["actor_name"] == '\'=HYPERLINK("http://evil","x")'
    assert evil_row["location"] == "'@home" and evil_row["user_agent"] == "'-x"
    assert json.loads(evil_row["metadata"]) == {"note": 'line1\nline2, "q"'}
    assert key_row["actor_name"] == "" and key_row["user_agent"] == ""
    assert key_row["actor_type"] == "api_key" and key_row["metadata"] == "{}" and key_row["targets"] == "[]"
    # The chunked generator gives the same text.
    assert "".join(iter_csv(store, EventQuery(ORG_A), chunk_rows=2)) == text


def test_csv_rows_are_stored_ready_made(store: EventStore) -> None:
    event = make_event(
        when=dt.datetime(2025, 3, 1, 13, 0, 0, 987654, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        targets=[PROJECT, Target("user", "u1", metadata={"role": "admin", "n": 1.5})],
        metadata={"a": "é ☃", "b": 1, "c": True, "d": 2.25},
    )
    store.append([event])
    [line] = list(store.iter_csv_rows(EventQuery(ORG_A)))
    assert line == csv_row(event)
    [cells] = list(csv.reader(io.StringIO(line, newline="")))
    assert cells[:3] == [event.id, "project.create", "2025-03-01T12:00:00.987Z"]
    assert json.loads(cells[9]) == {"a": "é ☃", "b": 1, "c": True, "d": 2.25}


def test_csv_formatting_matches_the_csv_module() -> None:
    rows = [
        ("plain", None, "", "a,b", 'say "hi"', "multi\nline", "cr\rx", "ünï ☃", "'quoted'", " spaced "),
        ("=1+1", "-2", "+3", "@SUM(A1)", "\tx", "\rx", "safe=", "a-b", "", None),
    ]
    for row in rows:
        expected = io.StringIO()
        csv.writer(expected, lineterminator="\r\n").writerow(row)
        assert format_csv_row(row) == expected.getvalue()
    assert [csv_safe(c) for c in rows[1]] == [
        "'=1+1",
        "'-2",
        "'+3",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "safe=",
        "a-b",
        "",
        None,
    ]


def test_jsonl_export_round_trips(store: EventStore) -> None:
    events = [make_event(seconds=i, enriched=True, targets=[PROJECT], metadata={"i": i, "s": "ü"}) for i in range(5)]
    store.append(events)
    out = io.StringIO()
    assert write_jsonl(store, EventQuery(ORG_A), out) == 5
    lines = out.getvalue().splitlines()
    assert [AuditEvent.from_json(line) for line in lines] == sorted(events, key=lambda e: e.occurred_at, reverse=True)
    assert "".join(iter_jsonl(store, EventQuery(ORG_A), chunk_rows=2)) == out.getvalue()


def test_export_streams_in_constant_memory(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(store, SqlEventStore)
    n = 20_000
    batch = [make_event(seconds=i / 10, metadata={"i": i, "pad": "x" * 200}, user_agent=None) for i in range(n)]
    for start in range(0, n, 5000):
        store.append(batch[start : start + 5000])
    del batch
    calls: list[str] = []
    fetchall = store._fetchall

    def counting(sql: str, params: Any) -> list[tuple[Any, ...]]:
        calls.append(sql)
        return fetchall(sql, params)

    monkeypatch.setattr(store, "_fetchall", counting)
    chunks = iter_csv(store, EventQuery(ORG_A), chunk_rows=100)
    assert calls == []  # nothing read before the first chunk is asked for
    assert next(chunks) == CSV_HEADER
    assert next(chunks).count("\r\n") == 100
    assert len(calls) == 1  # one keyset chunk, not the whole organization
    chunks.close()

    class Counter:
        size = 0

        def write(self, s: str) -> int:
            self.size += len(s)
            return len(s)

    def peak_while_exporting(q: EventQuery) -> tuple[int, int]:
        sink = Counter()
        tracemalloc.start()
        try:
            rows = write_csv(store, q, sink)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return rows, peak

    # Flat: exporting five times the rows takes no more memory (a keyset chunk at a time, never the export).
    small_rows, small_peak = peak_while_exporting(EventQuery(ORG_A, until=T0 + dt.timedelta(seconds=n / 50)))
    all_rows, all_peak = peak_while_exporting(EventQuery(ORG_A))
    assert (small_rows, all_rows) == (n // 5, n)
    assert all_peak < small_peak * 1.5, (small_peak, all_peak)


# --- schema and concurrency ---


def test_migrations_are_idempotent(open_same: Callable[[], EventStore], backend: str) -> None:
    first = open_same()
    first.append([make_event()])
    second = open_same()  # the schema is there: nothing to apply, nothing lost
    assert second.count(EventQuery(ORG_A)) == 1
    assert isinstance(second, SqlEventStore)
    versions = [("store", 1), ("store", 2)] if backend == "sqlite" else [("store", 1)]
    assert second._fetchall("SELECT component, version FROM centure_audit_schema ORDER BY version", ()) == versions


def test_concurrent_first_opens(open_same: Callable[[], EventStore], backend: str) -> None:
    results: list[EventStore | BaseException] = []

    def run() -> None:
        try:
            results.append(open_same())
        except BaseException as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, EventStore) for r in results), results
    opened = [r for r in results if isinstance(r, SqlEventStore)]
    migrations = sqlite_backend.SCHEMA_VERSION if backend == "sqlite" else 1
    assert opened[0]._fetchall("SELECT count(*) FROM centure_audit_schema", ()) == [(migrations,)]


def test_concurrent_writers_and_readers(store: EventStore) -> None:
    errors: list[BaseException] = []
    written: list[str] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        try:
            for j in range(20):
                batch = [make_event(seconds=k * 100 + j, metadata={"w": k}) for _ in range(5)]
                store.append(batch)
                with lock:
                    written.extend(e.id for e in batch)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(30):
                page = store.query(EventQuery(ORG_A, text="alice", limit=20))
                assert len(page.events) <= 20
                store.count(EventQuery(ORG_A, action="project.*"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count(EventQuery(ORG_A)) == len(written) == 400


def test_closed_store_refuses_work(open_same: Callable[[], EventStore]) -> None:
    store = open_same()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.query(EventQuery(ORG_A))


# --- opening ---


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store(None) as default:
        assert isinstance(default, SqliteStore) and default.path == "audit.db"
    assert (tmp_path / "audit.db").exists()
    with open_store("sqlite:///sub/dir/x.db") as relative:
        assert isinstance(relative, SqliteStore)
    assert (tmp_path / "sub" / "dir" / "x.db").exists()
    with open_store(f"sqlite:///{tmp_path}/abs.db") as absolute:
        assert isinstance(absolute, SqliteStore) and absolute.path == f"{tmp_path}/abs.db"
    with open_store(tmp_path / "p.db") as by_path:
        assert isinstance(by_path, SqliteStore)
    with open_store(":memory:") as memory:
        memory.append([make_event()])
        assert memory.count(EventQuery(ORG_A)) == 1
        assert len(list(memory.iter_events(EventQuery(ORG_A)))) == 1
    with pytest.raises(ValueError, match="unsupported event store URL"):
        open_store("mysql://localhost/x")
    with pytest.raises(StoreError, match="no event store"):
        open_store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        store._write("INSERT INTO centure_audit_schema VALUES ('store', 99, 'later')", ())
    with pytest.raises(StoreError, match="newer than this library"):
        SqliteStore(tmp_path / "a.db")


def test_locked_database_is_unavailable_not_an_error(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "locked.db"
    with SqliteStore(path, busy_timeout=0.05) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="locked"):
                store.append([make_event()])
            assert store.query(EventQuery(ORG_A)).events == []  # readers go on (WAL)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()


# --- StoreSink ---


def test_store_sink_delivers_in_batches_idempotently(store: EventStore) -> None:
    sink = StoreSink(store)
    assert sink.name == "store"
    events = [make_event(seconds=i) for i in range(5)]
    assert sink.send_many(events) == [None] * 5
    assert sink.send_many(events[:2]) == [None, None]  # a redelivery after a crash
    sink.send(make_event(seconds=9))
    assert store.count(EventQuery(ORG_A)) == 6
    sink.close()
    assert store.count(EventQuery(ORG_A)) == 6  # a store it was given stays open


def test_store_sink_rejects_only_the_bad_event(store: EventStore) -> None:
    sink = StoreSink(store)
    good, bad = make_event(), make_event(org="")
    outcomes = sink.send_many([good, bad])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], RejectEvent) and "organization_id" in outcomes[1].reason
    assert store.get(ORG_A, good.id) is not None
    with pytest.raises(RejectEvent):
        sink.send(bad)
    assert sink.send_many([]) == []


def test_store_sink_retries_when_the_store_is_unavailable(tmp_path: Path) -> None:
    class Down(SqliteStore):
        def append(self, events: Any, *, bodies: Any = None) -> int:
            raise StoreUnavailable("database is locked")

    with Down(tmp_path / "x.db") as down:
        outcomes = StoreSink(down).send_many([make_event(), make_event()])
    assert all(isinstance(o, RetryLater) for o in outcomes)


def test_store_sink_opens_and_closes_its_own_store(tmp_path: Path) -> None:
    sink = StoreSink(str(tmp_path / "own.db"))
    sink.send(make_event())
    sink.close()
    with open_store(tmp_path / "own.db", create=False) as store:
        assert store.count(EventQuery(ORG_A)) == 1


def test_cursor_round_trip_and_opacity() -> None:
    key = SortKey(1_740_830_400_123_456, new_event_id())
    cursor = encode_cursor(key, ORG_A)
    assert decode_cursor(cursor, ORG_A) == key
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor and "+" not in cursor  # URL-safe
    with pytest.raises(ValueError, match="invalid cursor"):
        decode_cursor(cursor, ORG_B)
