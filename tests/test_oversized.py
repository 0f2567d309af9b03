"""An audited action is never lost because of its payload (finding 3 of the evasion issue; RELIABILITY row 19).

An app that passes request fields to `audit.metadata()` let any user hide an action by sending 51 fields, or two
that coerce to one name: the event was dead-lettered with nothing but `repr(ctx)`, and replaying that letter wedged
the queue. Now the event is fitted to WorkOS's limits and delivered, the store keeps the original, a dead letter
keeps the whole event, and replaying any dead letter delivers it or dead-letters it again with a reason.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from centure_audit_middleware import Actor, Auditor, Target, audit, audited
from centure_audit_middleware.events import MAX_ID_LENGTH, MAX_METADATA_KEYS, MAX_NAME_LENGTH, TRUNCATION_MARKER
from centure_audit_middleware.sinks import MemorySink, StoreSink
from centure_audit_middleware.store import SqliteStore

from .conftest import ORG


def make_app(auditor: Auditor) -> FastAPI:
    app = FastAPI()

    @app.post("/projects/{project_id}")
    @audited("project.update", targets=[Target.from_path("project", "project_id")], metadata={"source": "/settings"})
    async def update(project_id: str, request: Request) -> dict[str, Any]:
        fields = await request.json()
        user = request.headers.get("x-user", "user_mallory")
        audit.actor(Actor(user, name=request.headers.get("x-name")))
        if "x-no-org" not in request.headers:
            audit.organization(ORG)
        audit.metadata(fields)  # the pattern that made payload-driven evasion possible
        return {"ok": True}

    auditor.install(app)
    return app


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "store.db")


@pytest.fixture
def memory() -> MemorySink:
    return MemorySink(name="workos-like")


@pytest.fixture
def app_auditor(tmp_path: Path, memory: MemorySink, store: SqliteStore) -> Any:
    auditor = Auditor(sinks=[memory, StoreSink(store)], outbox=tmp_path / "outbox.db", geoip=False)
    yield auditor
    auditor.close()


def _payload(n: int) -> dict[str, Any]:
    return {f"field_{i:03d}": f"value {i}" for i in range(n)}


@pytest.mark.parametrize("n", [51, 200, 5000])
def test_many_fields_cannot_hide_the_action(
    app_auditor: Auditor, memory: MemorySink, store: SqliteStore, n: int
) -> None:
    with TestClient(make_app(app_auditor)) as client:
        assert client.post("/projects/p1", json=_payload(n)).status_code == 200
    assert app_auditor.flush(10)
    [event] = memory.events
    assert (event.action, event.actor.id, event.targets[0].id) == ("project.update", "user_mallory", "p1")
    assert len(event.metadata) == MAX_METADATA_KEYS
    assert event.metadata["source"] == "/settings"  # a declared key always fits
    assert event.metadata["metadata_overflow_keys"] == n + 1 - 48
    assert len(str(event.metadata["metadata_overflow"])) <= 500
    assert app_auditor.dispatcher.outbox.dead_letters() == []
    kept = store.get(ORG, event.id)
    assert kept is not None and kept.original_metadata is not None
    original = kept.original_metadata["event"]
    assert original.get("field_000") == "value 0"
    if n <= 200:  # ~25 characters of JSON a field: well within the 64 KiB kept per level
        assert len(original) == n + 1 and "…" not in original
    else:  # past the cap: what fits is kept, in order, and the rest is counted, never silently gone
        fitted_in = len(original) - 1
        assert 0 < fitted_in < n + 1 and original["…"] == f"{n + 1 - fitted_in} more keys not kept"


def test_colliding_keys_get_a_suffix(app_auditor: Auditor, memory: MemorySink) -> None:
    with TestClient(make_app(app_auditor)) as client:
        client.post("/projects/p1", json={"team.id": "a", "team_id": "b", "team id": "c"})
    assert app_auditor.flush(10)
    [event] = memory.events
    assert event.metadata == {"source": "/settings", "team_id": "b", "team_id_2": "a", "team_id_3": "c"}


def test_huge_names_and_ids_are_capped(app_auditor: Auditor, memory: MemorySink, store: SqliteStore) -> None:
    with TestClient(make_app(app_auditor)) as client:
        big = "n" * 1_000_000
        client.post("/projects/" + "p" * 5000, json={}, headers={"x-user": "u" * 100_000, "x-name": big})
    assert app_auditor.flush(10)
    [event] = memory.events
    assert len(event.actor.name or "") == MAX_NAME_LENGTH and (event.actor.name or "").endswith(TRUNCATION_MARKER)
    assert len(event.actor.id) == MAX_ID_LENGTH
    assert len(event.targets[0].id) == MAX_ID_LENGTH
    with sqlite3.connect(store.path) as conn:
        [(size,)] = conn.execute("SELECT max(length(body)) FROM audit_events").fetchall()
    assert size < 10_000


def test_lone_surrogates_from_a_json_body_are_replaced_not_fatal(
    app_auditor: Auditor, memory: MemorySink, store: SqliteStore
) -> None:
    # JSON's "\ud800" escape decodes to a lone surrogate, which no UTF-8 encoder (SQLite, the HTTP client) takes:
    # such a value once made every write of its group fail, for ever.
    body = '{"note": "a\\ud800b", "\\udc80key": 1}'
    with TestClient(make_app(app_auditor)) as client:
        response = client.post(
            "/projects/p1", content=body, headers={"x-name": "ok", "content-type": "application/json"}
        )
        assert response.status_code == 200
    assert app_auditor.flush(10), app_auditor.stats()
    [event] = memory.events
    assert event.metadata["note"] == "a\ufffdb"
    assert store.get(ORG, event.id) is not None
    assert app_auditor.stats()["dead_lettered"] == 0


def _cli(outbox: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "centure_audit_middleware.cli", "outbox", "--outbox", str(outbox), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_dead_letter_keeps_the_event_and_replay_never_wedges(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.db"
    memory = MemorySink(name="workos-like")
    auditor = Auditor(sinks=[memory], outbox=outbox, geoip=False)
    with TestClient(make_app(auditor)) as client:
        response = client.post(
            "/projects/p9", json={"reason": "cleanup", "password": "hunter2"}, headers={"x-no-org": "1", "x-user": "u1"}
        )
        assert response.status_code == 200
    assert auditor.flush(10)
    auditor.close()
    assert memory.events == []

    dead = _cli(outbox, "dead", "--json")
    assert dead.returncode == 0, dead.stderr
    [letter] = [json.loads(line) for line in dead.stdout.splitlines()]
    event = letter["event"]
    assert "no organization" in letter["reason"]
    assert event["action"] == "project.update"
    assert event["actor"] == {"id": "u1", "type": "user"}
    assert event["targets"] == [{"id": "p9", "type": "project"}]
    assert event["metadata"] == {"source": "/settings", "reason": "cleanup", "password": "[REDACTED]"}
    assert "hunter2" not in outbox.read_bytes().decode("latin-1")

    # An old-style letter, as main wrote them: no id, no actor. Replaying both must not wedge the queue.
    with sqlite3.connect(outbox) as conn:
        conn.execute(
            "INSERT INTO events (id, recorded_at, body) VALUES ('legacy', unixepoch(), ?)",
            (json.dumps({"action": "x", "error": "3 keys", "raw": "<RequestContext POST /x status=200>"}),),
        )
        conn.execute(
            "INSERT INTO deliveries (sink, event_id, state, next_attempt_at, dead_at)"
            " VALUES (?, 'legacy', 'dead', 0, 0)",
            ("workos-like",),
        )
    replay = _cli(outbox, "replay")
    assert replay.returncode == 0, replay.stderr
    assert "2 dead letter(s) queued again" in replay.stdout

    auditor = Auditor(sinks=[memory], outbox=outbox, geoip=False)
    auditor.record("project.read", actor=Actor("u2"), organization=ORG)
    assert auditor.flush(10), auditor.stats()  # never False forever
    auditor.close()
    assert [e.action for e in memory.events] == ["project.read"]
    status = _cli(outbox, "status", "--json")
    assert json.loads(status.stdout)["sinks"]["workos-like"]["pending"] == 0
    reasons = sorted(json.loads(line)["reason"] for line in _cli(outbox, "dead", "--json").stdout.splitlines())
    assert len(reasons) == 2
    assert all(r.startswith("not a deliverable event") for r in reasons), reasons
