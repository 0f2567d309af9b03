"""No actor is not a dead letter (issue 12, item 4): an anonymous GET or a login redirect is no one's action.

Such requests are not recorded, counted as `stats()["skipped"]["no_actor"]` with one warning per route; dead letters
stay for events that can't be delivered. `Auditor(anonymous_actor=...)` records them for apps that want it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from centure_audit_middleware import Actor, Auditor, RequestContext, Target, audit, audited
from centure_audit_middleware.sinks import MemorySink

from .conftest import ORG, delivered


def make_app(auditor: Auditor) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def authenticate(request: Request, call_next):  # type: ignore[no-untyped-def]
        audit.organization(ORG)
        if request.headers.get("x-user"):
            audit.actor(Actor(request.headers["x-user"]))
        return await call_next(request)

    @app.get("/docs/{doc_id}")
    @audited("doc.read", targets=[Target.from_path("doc", "doc_id")])
    async def read(doc_id: str) -> dict[str, str]:
        audit.record("doc.viewed", targets=[Target("doc", doc_id)])  # an ad-hoc event of the same request
        return {"id": doc_id}

    @app.post("/login")
    @audited("session.create")
    async def login() -> dict[str, str]:
        return {}

    auditor.install(app)
    return app


def test_anonymous_requests_are_skipped_counted_and_said_once_per_route(
    auditor: Auditor, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), TestClient(make_app(auditor)) as client:
        for i in range(3):
            assert client.get(f"/docs/d{i}").status_code == 200
        assert client.post("/login").status_code == 200
        assert client.get("/docs/mine", headers={"x-user": "user_1"}).status_code == 200
    events = delivered(auditor, sink)
    assert sorted((e.action, e.actor.id) for e in events) == [("doc.read", "user_1"), ("doc.viewed", "user_1")]
    assert auditor.dispatcher.outbox.dead_letters() == []
    assert auditor.stats()["skipped"] == {"no_actor": 3 * 2 + 1}
    warnings = [r.getMessage() for r in caplog.records if "no actor" in r.getMessage()]
    assert len(warnings) == 2, warnings  # one per route: GET /docs/{doc_id} (both events), POST /login
    assert any("GET /docs/{doc_id}" in w for w in warnings) and any("POST /login" in w for w in warnings)


@pytest.mark.parametrize(
    "anonymous",
    [Actor("anonymous", type="anonymous"), lambda ctx: Actor(f"peer:{ctx.peer}", type="anonymous")],
    ids=["actor", "callable"],
)
def test_anonymous_actor_records_them(tmp_path: Path, anonymous: object) -> None:
    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "o.db", geoip=False, anonymous_actor=anonymous)  # type: ignore[arg-type]
    try:
        with TestClient(make_app(auditor)) as client:
            assert client.post("/login").status_code == 200
            assert client.get("/docs/d1", headers={"x-user": "user_1"}).status_code == 200
        events = delivered(auditor, sink)
        actors = sorted((e.action, e.actor.id, e.actor.type) for e in events)
        anonymous_id = "anonymous" if isinstance(anonymous, Actor) else "peer:testclient"
        assert actors == [
            ("doc.read", "user_1", "user"),
            ("doc.viewed", "user_1", "user"),
            ("session.create", anonymous_id, "anonymous"),
        ]
        assert auditor.stats()["skipped"] == {}
    finally:
        auditor.close()


def test_a_failing_anonymous_actor_skips_rather_than_breaks(tmp_path: Path) -> None:
    def broken(ctx: RequestContext) -> Actor:
        raise RuntimeError("no")

    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "o.db", geoip=False, anonymous_actor=broken)
    try:
        with TestClient(make_app(auditor)) as client:
            assert client.post("/login").status_code == 200
        assert delivered(auditor, sink) == []
        assert auditor.stats()["skipped"] == {"no_actor": 1}
    finally:
        auditor.close()
