"""Durable-before-response actions: `@audited(..., durable=True)` and `audit.record(..., durable=True)` hold the
response until the event is committed; when it can't be, the `durable_failure` policy answers 503 (the default) or
lets the response through. Real FastAPI, Flask and Starlette apps; the commit interval is set far longer than any
test, so an event seen without a flush can only have been committed by the durable path."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask

from centure_audit_middleware import Actor, AuditEvent, Auditor, Target, audit, audited
from centure_audit_middleware.delivery.durable import UNAVAILABLE_BODY, DurabilityError
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.sinks.base import RetryLater, Sink
from centure_audit_middleware.types import StartResponse, WSGIEnviron
from centure_audit_middleware.wsgi import AuditWSGIMiddleware

from .conftest import ALICE, ORG, fastapi_app_as_alice

#: far longer than any test: nothing is committed by the interval
NEVER = 3600.0


class SlowSink(MemorySink):
    """The local store, taking its time to commit (an fsync on a busy disk)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.committing = threading.Event()  # set once a commit has started (and is taking its time)

    def send_encoded(self, events: Sequence[AuditEvent], bodies: Sequence[str]) -> list[BaseException | None]:
        self.committing.set()
        time.sleep(self.delay)
        return super().send_encoded(events, bodies)


class RemoteSink(MemorySink):
    """A sink delivered through the outbox (like WorkOS): its events must reach the outbox file first."""

    inline = False


class DownSink(RemoteSink):
    """WorkOS down: every send is refused for now."""

    def send(self, event: AuditEvent) -> None:
        raise RetryLater("down")


def make_auditor(tmp_path: Path, sinks: Sequence[Sink], **settings: object) -> Auditor:
    return Auditor(sinks=list(sinks), outbox=tmp_path / "outbox.db", geoip=False, commit_interval=NEVER, **settings)  # type: ignore[arg-type]


def fastapi_app(auditor: Auditor) -> FastAPI:
    app = fastapi_app_as_alice()

    @app.delete("/projects/{project_id}")
    @audited("project.delete", targets=[Target.from_path("project", "project_id")], durable=True)
    async def delete_project(project_id: str) -> dict[str, str]:
        return {"deleted": project_id}

    @app.post("/projects")
    @audited("project.create")
    async def create_project() -> dict[str, str]:
        return {"created": "p"}

    @app.post("/keys")
    def rotate_key() -> dict[str, str]:
        audit.record("api_key.rotate", targets=[Target("api_key", id="key_1")], durable=True)
        return {"rotated": "key_1"}

    @app.delete("/drafts/{draft_id}")
    @audited("draft.delete", durable=True)
    async def delete_draft(draft_id: str) -> dict[str, str]:
        audit.skip()  # a draft nobody saw: nothing to record, so nothing to wait for
        return {"deleted": draft_id}

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    auditor.install(app)
    return app


@pytest.fixture
def memory() -> MemorySink:
    return MemorySink()


@pytest.fixture
def durable_auditor(tmp_path: Path, memory: MemorySink) -> Iterator[Auditor]:
    auditor = make_auditor(tmp_path, [memory])
    yield auditor
    auditor.close(5)


def test_fastapi_a_durable_endpoint_answers_only_once_its_event_is_committed(
    durable_auditor: Auditor, memory: MemorySink
) -> None:
    client = TestClient(fastapi_app(durable_auditor))
    assert client.delete("/projects/p_1").status_code == 200
    assert client.post("/projects").status_code == 200
    # No flush: the durable event is already committed; the ordinary one waits for the (hour-long) interval. (A
    # durable commit takes whatever is queued along with it, so the ordinary request comes second here.)
    assert [e.action for e in memory.events] == ["project.delete"]
    [event] = memory.events
    assert event.targets == (Target("project", id="p_1"),) and event.actor.id == ALICE.id
    assert durable_auditor.flush(5)
    assert sorted(e.action for e in memory.events) == ["project.create", "project.delete"]  # each once


def test_audit_record_durable_in_a_handler_holds_the_response(durable_auditor: Auditor, memory: MemorySink) -> None:
    client = TestClient(fastapi_app(durable_auditor))
    assert client.post("/keys").json() == {"rotated": "key_1"}
    assert [e.action for e in memory.events] == ["api_key.rotate"]


def test_durable_events_reach_the_outbox_file_before_the_response(tmp_path: Path) -> None:
    """With a remote sink (WorkOS), committed means in the outbox on disk: what a SIGKILL right after the response
    leaves for the next start to deliver."""
    from centure_audit_middleware.delivery.outbox import Outbox

    remote = DownSink()  # nothing is delivered: the event stays where the durable commit put it
    auditor = make_auditor(tmp_path, [remote])
    try:
        client = TestClient(fastapi_app(auditor))
        assert client.delete("/projects/p_2").status_code == 200
        outbox = Outbox(tmp_path / "outbox.db")
        try:
            assert outbox.stats(remote.name).pending == 1
        finally:
            outbox.close()
    finally:
        auditor.close(0.5)  # (WorkOS is down: nothing more to wait for)


def test_when_the_commit_fails_the_default_policy_answers_503(tmp_path: Path) -> None:
    broken = tmp_path / "not-a-file"
    broken.mkdir()  # SQLite cannot open a directory: every commit fails
    auditor = Auditor(sinks=[RemoteSink()], outbox=broken, geoip=False, commit_interval=NEVER, durable_timeout=2)
    try:
        client = TestClient(fastapi_app(auditor))
        response = client.delete("/projects/p_3")
        assert response.status_code == 503
        assert "audit record" in response.text and response.headers["retry-after"] == "1"
        assert client.get("/ping").status_code == 200  # only durable actions are refused
        assert client.delete("/drafts/d_1").status_code == 200  # ...that record something
    finally:
        auditor.close(1)


def test_the_continue_policy_lets_the_response_through_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "not-a-file"
    broken.mkdir()
    auditor = Auditor(
        sinks=[RemoteSink()],
        outbox=broken,
        geoip=False,
        commit_interval=NEVER,
        durable_timeout=2,
        durable_failure="continue",
    )
    try:
        with caplog.at_level(logging.ERROR, logger="centure_audit_middleware"):
            response = TestClient(fastapi_app(auditor)).delete("/projects/p_4")
        assert response.status_code == 200 and response.json() == {"deleted": "p_4"}
        assert any("durable_failure='continue'" in r.getMessage() for r in caplog.records)
    finally:
        auditor.close(1)


def test_a_bad_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durable_failure"):
        Auditor(sinks=[MemorySink()], outbox=tmp_path / "o.db", durable_failure="ignore")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_waiting_for_the_commit_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """While a durable response waits for a slow commit (0.5 s), other requests on the same loop are answered."""
    slow = SlowSink(0.5)
    auditor = make_auditor(tmp_path, [slow])
    try:
        app = fastapi_app(auditor)
        finished: list[str] = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:

            async def call(method: str, path: str) -> None:
                response = await client.request(method, path)
                assert response.status_code == 200
                finished.append(path)

            durable = asyncio.create_task(call("DELETE", "/projects/p_5"))
            # The durable request is now waiting for its commit, which has started (and takes 0.5 s).
            assert await asyncio.to_thread(slow.committing.wait, 5)
            await asyncio.gather(*(call("GET", "/ping") for _ in range(5)))
            assert not durable.done()
            await durable
        assert finished[-1] == "/projects/p_5" and finished.count("/ping") == 5
        assert [e.action for e in slow.events] == ["project.delete"]
    finally:
        auditor.close(5)


def flask_app(auditor: Auditor) -> Flask:
    app = Flask(__name__)

    @app.before_request
    def identify() -> None:
        audit.actor(ALICE)
        audit.organization(ORG)

    @app.post("/projects/<project_id>/delete")
    @audited("project.delete", targets=[Target.from_path("project", "project_id")], durable=True)
    def delete_project(project_id: str) -> str:
        return f"deleted {project_id}"

    @app.post("/projects")
    @audited("project.create")
    def create_project() -> str:
        return "created"

    auditor.install(app)
    return app


def test_flask_a_durable_view_answers_only_once_its_event_is_committed(
    durable_auditor: Auditor, memory: MemorySink
) -> None:
    client = flask_app(durable_auditor).test_client()
    assert client.post("/projects/p_6/delete").get_data(as_text=True) == "deleted p_6"
    assert client.post("/projects").status_code == 200
    assert [e.action for e in memory.events] == ["project.delete"]
    assert durable_auditor.flush(5)
    assert sorted(e.action for e in memory.events) == ["project.create", "project.delete"]


def test_flask_when_the_commit_fails_the_response_is_503(tmp_path: Path) -> None:
    broken = tmp_path / "not-a-file"
    broken.mkdir()
    auditor = Auditor(sinks=[RemoteSink()], outbox=broken, geoip=False, commit_interval=NEVER, durable_timeout=2)
    try:
        response = flask_app(auditor).test_client().post("/projects/p_7/delete")
        assert response.status_code == 503 and b"audit record" in response.data
    finally:
        auditor.close(1)


def _raw_wsgi_durable(style: str) -> Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]:
    """A plain WSGI app whose record is durable, answering its body through `write()`, or from a generator that
    starts the response at its first chunk (PEP 3333 allows both)."""

    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        audit.record("project.delete", actor=ALICE, organization=ORG, durable=True)
        if style == "write":
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"deleted by write()")
            return []

        def lazy() -> Iterator[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"deleted lazily"
            yield b", really"

        return lazy()

    return app


@pytest.mark.parametrize("style", ["write", "lazy"])
def test_a_raw_wsgi_apps_body_never_follows_the_503(tmp_path: Path, style: str) -> None:
    from werkzeug.test import Client

    broken = tmp_path / "not-a-file"
    broken.mkdir()
    auditor = Auditor(sinks=[RemoteSink()], outbox=broken, geoip=False, commit_interval=NEVER, durable_timeout=1)
    try:
        response = Client(AuditWSGIMiddleware(_raw_wsgi_durable(style), auditor=auditor)).post("/projects/p_7")
        assert response.status_code == 503
        assert response.data == UNAVAILABLE_BODY  # nothing of the app's body, before or after it
        assert int(response.headers["Content-Length"]) == len(UNAVAILABLE_BODY)
    finally:
        auditor.close(1)


def test_record_durable_outside_a_request_returns_once_committed(durable_auditor: Auditor, memory: MemorySink) -> None:
    durable_auditor.record("report.export", actor=ALICE, organization=ORG, durable=True)
    assert [e.action for e in memory.events] == ["report.export"]
    done = threading.Event()

    def job() -> None:  # audit.record in a job thread, through the default auditor
        audit.record("user.invite", actor=Actor("job"), organization=ORG, durable=True)
        done.set()

    threading.Thread(target=job).start()
    assert done.wait(5)
    assert [e.action for e in memory.events] == ["report.export", "user.invite"]


def test_record_durable_outside_a_request_raises_when_it_cannot_commit(tmp_path: Path) -> None:
    broken = tmp_path / "not-a-file"
    broken.mkdir()
    auditor = Auditor(sinks=[RemoteSink()], outbox=broken, geoip=False, commit_interval=NEVER, durable_timeout=1)
    try:
        with pytest.raises(DurabilityError, match=r"report\.export"):
            auditor.record("report.export", actor=ALICE, organization=ORG, durable=True)
    finally:
        auditor.close(1)


def test_under_the_audit_log_fixture_durable_events_are_recorded_at_once(audit_log) -> None:  # type: ignore[no-untyped-def]
    auditor = Auditor.for_tests()
    client = TestClient(fastapi_app(auditor))
    assert client.delete("/projects/p_8").status_code == 200
    audit_log.assert_recorded("project.delete", actor=ALICE.id, targets=[Target("project", id="p_8")])
