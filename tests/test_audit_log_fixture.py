"""The `audit_log` fixture and `Auditor.for_tests()` (issue 12, item 2), used the way an app's own tests use them:
`TestClient(app)` with no `with` block and no flush, httpx's `ASGITransport`, a module-level app and a factory."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from centure_audit_middleware import Actor, Auditor, Target
from centure_audit_middleware.testing import AuditLog

from .apps import notes_api


def test_a_module_level_app_records_into_the_fixture(audit_log: AuditLog) -> None:
    client = TestClient(notes_api.app)  # no `with`: no lifespan, no flush
    assert (
        client.post(
            "/notes/n1", params={"text": "hello", "api_key": "sk_live_1"}, headers={"x-user": "ann"}
        ).status_code
        == 200
    )
    assert client.get("/notes/n1", headers={"x-user": "ann"}).status_code == 200  # not audited
    assert client.delete("/notes/n1", headers={"x-user": "ann"}).status_code == 200
    assert audit_log.actions == ["note.create", "note.delete"]
    event = audit_log.assert_recorded("note.create", actor="ann", targets=[("note", "n1")], metadata={"length": 5})
    assert event.metadata["api_key"] == "[REDACTED]"  # the same redaction as in production
    audit_log.assert_recorded(
        "note.delete", actor=Actor("ann"), targets=[Target("note", "n1")], organization="org_notes"
    )


def test_an_app_factory_per_test_leaves_no_thread_and_no_file(
    audit_log: AuditLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where Auditor() would put audit.db and audit-outbox.db
    ours = {t for t in threading.enumerate() if t.name.startswith("centure-audit")}
    for i in range(5):
        app = notes_api.create_app(Auditor())  # the app factory pattern, one Auditor per app
        TestClient(app).post(f"/notes/f{i}", headers={"x-user": "bob"})
    assert audit_log.actions == ["note.create"] * 5
    started = {t for t in threading.enumerate() if t.name.startswith("centure-audit")} - ours
    assert not started, started
    assert os.listdir(tmp_path) == []


@pytest.mark.anyio
async def test_httpx_asgi_transport(audit_log: AuditLog) -> None:
    transport = httpx.ASGITransport(app=notes_api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.post("/notes/a1", headers={"x-user": "cy"})
    audit_log.assert_recorded("note.create", actor="cy", targets=[("note", "a1")])


def test_a_failed_assertion_says_what_was_recorded(audit_log: AuditLog) -> None:
    TestClient(notes_api.app).post("/notes/n2", headers={"x-user": "ann"})
    TestClient(notes_api.app).post("/notes/n3")  # no user: no actor, not recorded
    with pytest.raises(AssertionError) as caught:
        audit_log.assert_recorded("note.create", actor="bob", targets=[("note", "n2")])
    message = str(caught.value)
    assert "no recorded event matches action='note.create', actor='bob', targets=[note:n2]" in message
    assert "recorded (1):\n  note.create  actor=ann  organization=org_notes  targets=[note:n2]" in message
    TestClient(notes_api.app).post("/notes/n4", headers={"x-user": "ann"})
    with pytest.raises(AssertionError, match=r"^2 recorded events match action='note.create', expected 1"):
        audit_log.assert_recorded("note.create", count=1)


def test_for_tests_without_the_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    auditor = Auditor.for_tests()
    assert auditor.audit_log is not None
    TestClient(notes_api.create_app(auditor)).post("/notes/z", headers={"x-user": "dee"})
    auditor.audit_log.assert_recorded("note.create", actor="dee")
    auditor.record("note.export", actor=Actor("dee"), organization="org_notes")  # outside a request: a job
    assert auditor.audit_log.actions == ["note.create", "note.export"]
    assert auditor.flush() and auditor.close()
    assert os.listdir(tmp_path) == []


def test_every_auditor_gets_its_own_pipeline_back_after_the_test() -> None:
    auditor = notes_api.auditor
    before = auditor.handoff
    with AuditLog().capturing() as log:
        assert auditor.audit_log is log and auditor.handoff is not before
    assert auditor.audit_log is None and auditor.handoff == before


def test_stats_of_a_test_auditor_write_no_outbox(
    audit_log: AuditLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    auditor = Auditor()  # an app factory's, made under the fixture
    client = TestClient(notes_api.create_app(auditor))
    client.post("/notes/s1", headers={"x-user": "ann"})
    client.post("/notes/s2")  # no actor
    stats = auditor.stats()
    assert (stats["recorded"], stats["skipped"], stats["dead_lettered"]) == (1, {"no_actor": 1}, 0)
    assert os.listdir(tmp_path) == []  # reading the counters opened no outbox either
