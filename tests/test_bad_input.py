"""Hostile and broken input: nothing escapes into the app, and every event is delivered safely or dead-lettered
with a logged reason (never silently lost)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from flask import Flask

from centure_audit_middleware import Actor, Auditor, NoRequestError, audit, audited
from centure_audit_middleware.delivery.builder import MAX_USER_AGENT_LENGTH
from centure_audit_middleware.events import TRUNCATION_MARKER
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.types import Message, Scope

from .conftest import ALICE, ORG, delivered


def make_app(auditor: Auditor) -> FastAPI:
    app = FastAPI()

    @app.post("/things")
    @audited("thing.create")
    async def create(request: Request) -> dict[str, Any]:
        audit.actor(ALICE)
        audit.organization(ORG)
        meta = request.headers.get("x-meta")
        if meta == "bad-keys":
            audit.metadata({"user.email": "a@b.c", "has space": 1, "x" * 80: True})
        elif meta == "bad-type":
            audit.metadata(obj=object())
        elif meta == "too-many":
            audit.metadata({f"k{i}": i for i in range(60)})
        elif meta == "secret":
            audit.metadata(api_key="sk_live_123", nested={"password": "hunter2", "ok": 1})
        return {"ok": True}

    auditor.install(app)
    return app


async def call_raw(app: Any, headers: list[tuple[bytes, bytes]], client: tuple[str, int] = ("10.1.2.3", 1)) -> int:
    """Drive the app with raw ASGI headers (bytes no HTTP client would send)."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/things",
        "raw_path": b"/things",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": ("test", 80),
    }
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return int(messages[0]["status"])


@pytest.mark.anyio
async def test_non_utf8_and_oversized_user_agent(auditor: Auditor, sink: MemorySink) -> None:
    app = make_app(auditor)
    assert await call_raw(app, [(b"user-agent", b"Mozilla/5.0 \xff\xfe\x80 broken")]) == 200
    assert await call_raw(app, [(b"user-agent", b"A" * 200_000)]) == 200
    broken, huge = delivered(auditor, sink)
    assert broken.context.user_agent == "Mozilla/5.0 \xff\xfe\x80 broken"  # Latin-1, as HTTP/1.1 defines it
    assert huge.context.user_agent is not None
    assert len(huge.context.user_agent) == MAX_USER_AGENT_LENGTH
    assert huge.context.user_agent.endswith(TRUNCATION_MARKER)


@pytest.mark.anyio
async def test_malformed_headers(auditor: Auditor, sink: MemorySink) -> None:
    app = make_app(auditor)
    headers = [
        (b"x-forwarded-for", b"\x00\xff, ,,,not-an-ip"),
        (b"forwarded", b'for="unterminated'),
        (b"", b"empty name"),
        (b"x-request-id", b"\xc3\x28" * 5000),
    ]
    assert await call_raw(app, headers) == 200
    [event] = delivered(auditor, sink)
    assert event.context.location == "10.1.2.3"  # untrusted peer: forwarding headers ignored


@pytest.mark.anyio
async def test_forged_forwarded_for_from_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "o.db", geoip=False, trusted_proxies=["10.0.0.0/8"])
    app = make_app(auditor)
    await call_raw(app, [(b"x-forwarded-for", b"1.1.1.1")], client=("203.0.113.9", 1))
    await call_raw(app, [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7")], client=("10.0.0.2", 1))
    await call_raw(app, [(b"x-forwarded-for", b"garbage")], client=("10.0.0.2", 1))
    events = delivered(auditor, sink)
    auditor.close()
    seen = sorted((e.request.peer if e.request else None, e.context.location) for e in events)
    assert seen == [
        ("10.0.0.2", "10.0.0.2"),  # garbage from the trusted proxy: the proxy itself, never the garbage
        ("10.0.0.2", "198.51.100.7"),  # the first untrusted hop from the right, not the spoofed 6.6.6.6
        ("203.0.113.9", "203.0.113.9"),  # an untrusted peer's header is ignored
    ]


def test_metadata_with_bad_keys_is_coerced(auditor: Auditor, sink: MemorySink) -> None:
    with TestClient(make_app(auditor)) as client:
        assert client.post("/things", headers={"x-meta": "bad-keys"}).status_code == 200
    [event] = delivered(auditor, sink)
    assert event.metadata == {"user_email": "a@b.c", "has_space": 1, "x" * 40: True}


def test_odd_metadata_values_are_coerced_not_refused(auditor: Auditor, sink: MemorySink) -> None:
    with TestClient(make_app(auditor)) as client:
        assert client.post("/things", headers={"x-meta": "bad-type"}).status_code == 200
    [event] = delivered(auditor, sink)
    assert str(event.metadata["obj"]).startswith("<object object at ")
    assert auditor.dispatcher.outbox.dead_letters() == []


def test_too_many_metadata_keys_are_folded_and_the_original_kept(auditor: Auditor, sink: MemorySink) -> None:
    with TestClient(make_app(auditor)) as client:
        assert client.post("/things", headers={"x-meta": "too-many"}).status_code == 200
    [event] = delivered(auditor, sink)
    assert len(event.metadata) == 50
    assert event.metadata["metadata_overflow_keys"] == 12
    assert event.original_metadata == {"event": {f"k{i}": i for i in range(60)}}
    assert "original_metadata" not in event.to_workos()
    assert auditor.dispatcher.outbox.dead_letters() == []


def test_secrets_are_redacted_before_any_sink(auditor: Auditor, sink: MemorySink) -> None:
    with TestClient(make_app(auditor)) as client:
        client.post("/things", headers={"x-meta": "secret"})
    [event] = delivered(auditor, sink)
    assert event.metadata == {"api_key": "[REDACTED]", "nested": '{"ok":1,"password":"[REDACTED]"}'}
    assert "sk_live_123" not in event.to_json()


def test_failing_resolver_never_breaks_the_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(ctx: Any) -> Actor:
        raise RuntimeError("session store down")

    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "o.db", geoip=False, actor=broken)
    app = FastAPI()

    @app.post("/x")
    @audited("x.do")
    async def x() -> dict[str, str]:
        audit.organization(ORG)
        return {}

    auditor.install(app)
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        assert client.post("/x").status_code == 200
    assert delivered(auditor, sink) == []
    assert auditor.dispatcher.outbox.dead_letters() == []  # no one's action: skipped and counted, not dead
    assert auditor.stats()["skipped"] == {"no_actor": 1}
    auditor.close()
    assert "session store down" in caplog.text
    assert "x.do on POST /x not recorded: no actor" in caplog.text


def test_flask_non_latin1_environ_and_huge_headers(auditor: Auditor, sink: MemorySink) -> None:
    app = Flask(__name__)

    @app.post("/f")
    @audited("f.do")
    def f() -> str:
        audit.actor(ALICE)
        audit.organization(ORG)
        return "ok"

    auditor.install(app)
    response = app.test_client().post(
        "/f",
        headers={"User-Agent": "\u00ff" * 300_000, "X-Forwarded-For": "::::"},
        environ_base={"REMOTE_ADDR": "not-an-ip"},
        buffered=True,
    )
    assert response.status_code == 200
    [event] = delivered(auditor, sink)
    assert event.context.location == "unknown"
    assert event.context.user_agent is not None and len(event.context.user_agent) == MAX_USER_AGENT_LENGTH


def test_facade_outside_request_raises_clear_errors(auditor: Auditor, sink: MemorySink) -> None:
    for call in (
        lambda: audit.actor(ALICE),
        lambda: audit.organization(ORG),
        lambda: audit.metadata(a=1),
        audit.skip,
        lambda: audit.request,
    ):
        with pytest.raises(NoRequestError, match="no audited request"):
            call()
    with pytest.raises(NoRequestError, match="needs both actor= and organization="):
        audit.record("job.run", actor=ALICE)
    audit.record("job.run", actor=ALICE, organization=ORG)
    [event] = delivered(auditor, sink)
    assert (event.action, event.context.location) == ("job.run", "unknown")


def test_facade_rejects_wrong_types_inside_requests(auditor: Auditor) -> None:
    app = FastAPI()
    errors: list[str] = []

    @app.post("/t")
    async def t() -> dict[str, str]:
        calls: list[Any] = [
            lambda: audit.actor("user_1"),  # type: ignore[arg-type]
            lambda: audit.organization(""),
            lambda: audit.target("x"),  # type: ignore[arg-type]
        ]
        for call in calls:
            try:
                call()
            except TypeError as exc:
                errors.append(str(exc))
        return {}

    auditor.install(app)
    with TestClient(app) as client:
        client.post("/t")
    assert len(errors) == 3
    assert "takes an Actor" in errors[0]
