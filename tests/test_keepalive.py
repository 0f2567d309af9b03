"""A request's audit context belongs to that request (finding 1 of the evasion issue; RELIABILITY row 18).

uvicorn runs the next request of a keep-alive connection inside a copy of the previous request's contextvars once a
body went past its 64 KiB flow-control mark. A middleware that took any context it found for "an outer audit
middleware handles this" passed such requests through: nothing recorded, or the previous user's record annotated.
These tests drive real servers over real keep-alive connections.
"""

from __future__ import annotations

import contextvars
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from centure_audit_middleware import Actor, AuditMiddleware, Auditor, NoRequestError, Target, audit, audited
from centure_audit_middleware.context import RequestContext, _current
from centure_audit_middleware.sinks import MemorySink

from .conftest import ORG, delivered
from .reliability_support import REPO_ROOT, Proc, ProcessGroup, free_port

pytestmark = pytest.mark.slow

BODY_SIZES = [60_000, 70_000, 200_000, 5_000_000]
SERVERS = {
    "uvicorn-h11": ["-m", "uvicorn", "--http", "h11"],
    "uvicorn-httptools": ["-m", "uvicorn", "--http", "httptools"],
    "hypercorn": ["-m", "hypercorn"],
}


def _server_argv(kind: str, port: int) -> list[str]:
    if kind == "hypercorn":
        return [sys.executable, *SERVERS[kind], "tests.apps.keepalive_app:app", "--bind", f"127.0.0.1:{port}"]
    argv = [sys.executable, *SERVERS[kind], "tests.apps.keepalive_app:app", "--port", str(port)]
    return [*argv, "--log-level", "warning", "--no-access-log"]


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    kind: str = request.param
    if kind == "uvicorn-httptools":
        pytest.importorskip("httptools")
    if kind == "hypercorn":
        pytest.importorskip("hypercorn")
    tmp = tmp_path_factory.mktemp(kind)
    group = ProcessGroup(tmp)
    try:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "KEEPALIVE_OUTBOX": str(tmp / "outbox.db")}
        proc = group.spawn(kind, _server_argv(kind, port), env, port=port)
        proc.wait_ready()
        yield proc
    finally:
        group.close()


def _events(server: Proc, run: str) -> list[tuple[str, str, str]]:
    """(action, actor, target) of what the app recorded for targets of this run, in order."""
    response = httpx.get(server.url + "/_events", timeout=30)
    assert response.status_code == 200, response.text
    return [(e["action"], e["actor"], e["target"]) for e in response.json() if e["target"].startswith(run)]


def _run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.mark.parametrize("size", BODY_SIZES, ids=lambda n: f"{n // 1000}KB")
def test_junk_body_on_an_unaudited_route_hides_no_later_action(server: Proc, size: int) -> None:
    run = _run_id()
    with httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=1)) as client:
        assert client.delete(f"/api-keys/{run}-k0", headers={"x-user": "alice"}).status_code == 200
        assert client.post("/junk", content=b"x" * size, headers={"x-user": "mallory"}).status_code == 422
        for i in (1, 2, 3):
            assert client.delete(f"/api-keys/{run}-k{i}", headers={"x-user": "mallory"}).status_code == 200
    assert _events(server, run) == [
        ("api_key.delete", "alice", f"{run}-k0"),
        *[("api_key.delete", "mallory", f"{run}-k{i}") for i in (1, 2, 3)],
    ]


@pytest.mark.parametrize("size", BODY_SIZES, ids=lambda n: f"{n // 1000}KB")
@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_interleaved_users_on_one_connection_keep_their_own_actor(server: Proc, size: int, streamed: bool) -> None:
    # A reverse proxy reuses one upstream connection for whoever comes next: Alice uploads, then Bob acts, and so on.
    run = _run_id()

    def body() -> Any:
        if not streamed:
            return b"y" * size
        return (b"y" * min(65_536, size - offset) for offset in range(0, size, 65_536))

    with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=1)) as client:
        for round_ in range(2):
            response = client.post(f"/uploads/{run}-a{round_}", content=body(), headers={"x-user": "alice"})
            assert response.json() == {"size": size}
            assert client.delete(f"/api-keys/{run}-b{round_}", headers={"x-user": "bob"}).status_code == 200
            assert client.delete(f"/api-keys/{run}-n{round_}").status_code == 200  # no actor: not recorded
    events = _events(server, run)
    assert events == [
        ("file.upload", "alice", f"{run}-a0"),
        ("api_key.delete", "bob", f"{run}-b0"),
        ("file.upload", "alice", f"{run}-a1"),
        ("api_key.delete", "bob", f"{run}-b1"),
    ]


# -- the same rule without a server: a request that inherits another request's context ----------------------------


def _app(auditor: Auditor) -> Starlette:
    @audited("item.delete")
    async def delete(request: Request) -> JSONResponse:
        audit.actor(Actor(request.headers["x-user"]))
        audit.organization(ORG)
        return JSONResponse({})

    app = Starlette(routes=[Route("/items/{id}", delete, methods=["DELETE"])])
    auditor.install(app)
    return app


@pytest.mark.anyio
@pytest.mark.parametrize("finished", [True, False], ids=["finished", "in-flight"])
async def test_an_inherited_context_is_never_taken_over(auditor: Auditor, sink: MemorySink, finished: bool) -> None:
    app = _app(auditor)
    previous = RequestContext(auditor, scope={"type": "http", "method": "POST", "path": "/upload"})
    previous.actor = Actor("alice")
    previous.finished = finished

    async def call() -> None:
        _current.set(previous)  # what uvicorn's copied context holds
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.delete("/items/1", headers={"x-user": "bob"})).status_code == 200

    await contextvars.copy_context().run(_as_task, call)
    events = delivered(auditor, sink)
    assert [(e.action, e.actor.id) for e in events] == [("item.delete", "bob")]
    assert previous.actor == Actor("alice")  # the other request's record was not touched


async def _as_task(call: Any) -> None:
    await call()


@pytest.mark.anyio
async def test_installing_twice_still_records_once(auditor: Auditor, sink: MemorySink) -> None:
    app = _app(auditor)
    twice = AuditMiddleware(AuditMiddleware(app, auditor=auditor), auditor=auditor)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=twice), base_url="http://test") as client:
        assert (await client.delete("/items/1", headers={"x-user": "bob"})).status_code == 200
    assert [e.actor.id for e in delivered(auditor, sink)] == ["bob"]


def test_annotating_a_finished_request_is_an_error_not_a_silent_loss(auditor: Auditor) -> None:
    ctx = RequestContext(auditor, scope={"type": "http"})
    ctx.finished = True
    token = _current.set(ctx)
    try:
        assert not audit.active
        calls: list[Callable[[], None]] = [
            lambda: audit.actor(Actor("x")),
            lambda: audit.organization(ORG),
            lambda: audit.target(Target("item", "1")),
            lambda: audit.metadata(a=1),
            audit.skip,
        ]
        for call in calls:
            with pytest.raises(NoRequestError, match="already recorded"):
                call()
    finally:
        _current.reset(token)


def test_wsgi_middleware_takes_over_no_inherited_context(auditor: Auditor, sink: MemorySink) -> None:
    from flask import Flask

    app = Flask(__name__)

    @app.delete("/items/<id>")
    @audited("item.delete")
    def delete(id: str) -> str:
        from flask import request

        audit.actor(Actor(request.headers["x-user"]))
        audit.organization(ORG)
        return ""

    auditor.install(app)
    previous = RequestContext(auditor, environ={"REQUEST_METHOD": "POST"})
    previous.actor = Actor("alice")
    previous.finished = True

    def call() -> None:
        _current.set(previous)  # a thread reused with another request's context still set
        with app.test_client() as client:
            response = client.delete("/items/1", headers={"x-user": "bob"}, buffered=True)
        assert response.status_code == 200

    contextvars.copy_context().run(call)
    assert [(e.action, e.actor.id) for e in delivered(auditor, sink)] == [("item.delete", "bob")]
