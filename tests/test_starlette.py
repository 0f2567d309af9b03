"""The pure ASGI middleware with Starlette: routes, class endpoints, mounts, and the raw ASGI contract."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from centure_audit_middleware import AuditMiddleware, Auditor, Target, audit, audited
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.types import Message, Receive, Scope, Send

from .conftest import ALICE, ORG, delivered


@audited("member.invite", targets=[Target.from_path("project", "project_id")])
async def invite(request: Request) -> Response:
    audit.actor(ALICE)
    audit.organization(ORG)
    audit.target(Target("user", id=request.query_params.get("user", "user_x")))
    return JSONResponse({"invited": True}, status_code=201)


class Memberships(HTTPEndpoint):
    @audited("member.remove", targets=[Target.from_path("project", "project_id")])
    async def delete(self, request: Request) -> Response:
        audit.actor(ALICE)
        audit.organization(ORG)
        return Response(status_code=204)

    async def get(self, request: Request) -> Response:
        return PlainTextResponse("members")


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/projects/{project_id}/members", invite, methods=["POST"]),
            Route("/projects/{project_id}/members/{user_id}", Memberships),
            Mount("/api/v1", routes=[Route("/projects/{project_id}/invite", invite, methods=["POST"])]),
        ]
    )


def test_function_endpoint(auditor: Auditor, sink: MemorySink) -> None:
    app = make_app()
    auditor.install(app)
    with TestClient(app) as client:
        assert client.post("/projects/p7/members?user=user_9").status_code == 201
    [event] = delivered(auditor, sink)
    assert event.action == "member.invite"
    assert [(t.type, t.id) for t in event.targets] == [("project", "p7"), ("user", "user_9")]
    assert event.request is not None and event.request.status == 201


def test_class_endpoint_by_method(auditor: Auditor, sink: MemorySink) -> None:
    app = make_app()
    auditor.install(app)
    with TestClient(app) as client:
        assert client.get("/projects/p1/members/u1").status_code == 200
        assert client.delete("/projects/p1/members/u1").status_code == 204
    [event] = delivered(auditor, sink)
    assert event.action == "member.remove"
    assert event.request is not None and event.request.route == "/projects/{project_id}/members/{user_id}"


def test_mounted_route_template_includes_mount(auditor: Auditor, sink: MemorySink) -> None:
    app = make_app()
    auditor.install(app)
    with TestClient(app) as client:
        client.post("/api/v1/projects/p2/invite")
    [event] = delivered(auditor, sink)
    assert event.request is not None and event.request.route == "/api/v1/projects/{project_id}/invite"


@pytest.mark.anyio
async def test_raw_asgi_never_reads_receive_and_passes_messages_unchanged(auditor: Auditor, sink: MemorySink) -> None:
    @audited("raw.call")
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        audit.actor(ALICE)
        audit.organization(ORG)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["endpoint"] = endpoint  # what a router does
        await endpoint(scope, receive, send)

    async def receive() -> Message:
        raise AssertionError("the middleware must never read the request body")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = AuditMiddleware(app, auditor=auditor)
    scope = {"type": "http", "method": "POST", "path": "/raw", "headers": [], "client": ("192.0.2.1", 1)}
    await middleware(scope, receive, send)
    assert sent == [
        {"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]},
        {"type": "http.response.body", "body": b"part", "more_body": True},
        {"type": "http.response.body", "body": b""},
    ]
    [event] = delivered(auditor, sink)
    assert event.context.location == "192.0.2.1"


@pytest.mark.anyio
@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
async def test_non_http_scopes_pass_straight_through(auditor: Auditor, scope_type: str) -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        from centure_audit_middleware import current_request

        seen.append((scope, receive, send, current_request()))

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    scope: dict[str, Any] = {"type": scope_type}
    await AuditMiddleware(app, auditor=auditor)(scope, receive, send)
    assert seen == [(scope, receive, send, None)]


def test_install_after_start_is_refused(auditor: Auditor) -> None:
    app = make_app()
    with TestClient(app) as client:
        client.get("/projects/p1/members/u1")
        with pytest.raises(RuntimeError, match="before the app starts"):
            auditor.install(app)
