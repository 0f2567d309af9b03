"""The audit middleware in real FastAPI apps: decorators, dependencies, sync endpoints, background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from centure_audit_middleware import Actor, Auditor, RouteMap, Target, audit, audited, current_request
from centure_audit_middleware.sinks import MemorySink

from .conftest import ALICE, ORG, delivered


def authenticate(request: Request) -> Actor:
    """A typical auth dependency: identifies the user and tells the audit layer."""
    user = request.headers.get("x-user", "user_alice")
    actor = Actor(user, name=user.removeprefix("user_").title())
    audit.actor(actor)
    audit.organization(request.headers.get("x-org", ORG))
    return actor


def make_app(auditor: Auditor) -> FastAPI:
    app = FastAPI(dependencies=[Depends(authenticate)])

    @app.post("/projects/{project_id}/api-keys")
    @audited("api_key.create", targets=[Target.from_path("project", "project_id")])
    async def create_key(project_id: str, name: str = "ci") -> dict[str, str]:
        audit.target(Target("api_key", id="key_1", name=name))
        audit.metadata(source=f"/projects/{project_id}/api-keys/new")
        return {"id": "key_1", "name": name}

    @app.put("/projects/{project_id}")
    @audited("project.update", targets=[Target.from_path("project", "project_id")])
    def rename_project(project_id: int, actor: Annotated[Actor, Depends(authenticate)]) -> dict[str, Any]:
        # A sync endpoint: FastAPI runs it in a thread pool with a copy of the context.
        audit.metadata(renamed_by=actor.id, thread_sees_context=current_request() is not None)
        return {"id": project_id}

    @app.post("/projects")
    @audited("project.create", targets=[Target.from_result("project", id="id", name="name")])
    async def create_project() -> dict[str, str]:
        return {"id": "proj_9", "name": "Apollo"}

    @app.delete("/projects/{project_id}")
    @audited("project.delete", targets=[Target.from_path("project", "project_id")])
    async def delete_project(project_id: str) -> None:
        raise HTTPException(status_code=403, detail="not yours")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/skip")
    @audited("thing.skip")
    async def skipped() -> dict[str, str]:
        audit.skip()
        return {}

    return app


@pytest.fixture
def client(auditor: Auditor) -> Iterator[TestClient]:
    app = make_app(auditor)
    auditor.install(app)
    with TestClient(app, client=("203.0.113.7", 5000)) as client:
        yield client


def test_decorated_route_records_workos_shaped_event(client: TestClient, auditor: Auditor, sink: MemorySink) -> None:
    response = client.post("/projects/proj_1/api-keys?name=deploy", headers={"user-agent": "pytest-ua/1.0"})
    assert response.status_code == 200
    [event] = delivered(auditor, sink)
    assert event.action == "api_key.create"
    assert event.organization_id == ORG
    assert event.actor.id == "user_alice"
    assert [(t.type, t.id, t.name) for t in event.targets] == [
        ("project", "proj_1", None),
        ("api_key", "key_1", "deploy"),
    ]
    assert event.metadata == {"source": "/projects/proj_1/api-keys/new"}
    assert event.context.location == "203.0.113.7"
    assert event.context.user_agent == "pytest-ua/1.0"
    assert event.occurred_at.tzinfo is not None
    assert event.request is not None
    assert event.request.route == "/projects/{project_id}/api-keys"
    assert event.request.status == 200
    assert len(event.id) == 36


def test_sync_endpoint_and_dependency_share_the_record(client: TestClient, auditor: Auditor, sink: MemorySink) -> None:
    response = client.put("/projects/42", headers={"x-user": "user_bob"})
    assert response.status_code == 200
    [event] = delivered(auditor, sink)
    assert event.action == "project.update"
    assert event.actor.id == "user_bob"
    assert event.targets[0].id == "42"
    assert event.metadata == {"renamed_by": "user_bob", "thread_sees_context": True}


def test_decorator_keeps_fastapi_signature(client: TestClient) -> None:
    # Path parameter validation still comes from the endpoint's own signature (project_id: int).
    assert client.put("/projects/not-a-number").status_code == 422
    schema = client.get("/openapi.json").json()
    params = schema["paths"]["/projects/{project_id}/api-keys"]["post"]["parameters"]
    assert {p["name"] for p in params} == {"project_id", "name"}


def test_targets_from_return_value(client: TestClient, auditor: Auditor, sink: MemorySink) -> None:
    client.post("/projects")
    [event] = delivered(auditor, sink)
    assert [(t.type, t.id, t.name) for t in event.targets] == [("project", "proj_9", "Apollo")]


def test_failed_request_not_recorded_by_default(client: TestClient, auditor: Auditor, sink: MemorySink) -> None:
    assert client.delete("/projects/p1").status_code == 403
    assert delivered(auditor, sink) == []


def test_failed_request_recorded_with_status_when_policy_says_so(tmp_path: Any) -> None:
    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "o.db", geoip=False, record_failures=True)
    app = make_app(auditor)
    auditor.install(app)
    with TestClient(app) as client:
        assert client.delete("/projects/p1").status_code == 403
    [event] = delivered(auditor, sink)
    auditor.close()
    assert event.action == "project.delete"
    assert event.metadata["http_status"] == 403


def test_unaudited_and_skipped_routes_record_nothing(client: TestClient, auditor: Auditor, sink: MemorySink) -> None:
    assert client.get("/health").status_code == 200
    assert client.post("/skip").status_code == 200
    assert delivered(auditor, sink) == []
    assert auditor.stats()["recorded"] == 0


def test_background_task_sees_context_and_records(auditor: Auditor, sink: MemorySink) -> None:
    app = FastAPI()
    seen: dict[str, Any] = {}

    def job() -> None:
        ctx = current_request()
        seen["actor"] = ctx.actor.id if ctx and ctx.actor else None
        audit.record("report.generate", targets=[Target("report", id="r1")])

    @app.post("/reports")
    @audited("report.request")
    async def request_report(tasks: BackgroundTasks) -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        tasks.add_task(job)
        return {}

    auditor.install(app)
    with TestClient(app) as client:
        client.post("/reports")
    events = delivered(auditor, sink)
    assert seen["actor"] == "user_alice"
    assert sorted(e.action for e in events) == ["report.generate", "report.request"]
    assert all(e.actor.id == "user_alice" and e.organization_id == ORG for e in events)


def test_exception_handler_sees_context(auditor: Auditor, sink: MemorySink) -> None:
    app = FastAPI()

    class Conflict(Exception):
        pass

    @app.exception_handler(Conflict)
    async def conflict_handler(request: Request, exc: Conflict) -> JSONResponse:
        audit.metadata(handled_by="conflict_handler")
        return JSONResponse({"error": "conflict"}, status_code=409)

    @app.exception_handler(Exception)
    async def crash_handler(request: Request, exc: Exception) -> JSONResponse:
        audit.metadata(crash="handled")
        return JSONResponse({"error": "crash"}, status_code=500)

    @app.post("/conflict")
    @audited("thing.conflict", record_failures=True)
    async def conflict() -> None:
        audit.actor(ALICE)
        audit.organization(ORG)
        raise Conflict

    @app.post("/crash")
    @audited("thing.crash", record_failures=True)
    async def crash() -> None:
        audit.actor(ALICE)
        audit.organization(ORG)
        raise RuntimeError("boom")

    auditor.install(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/conflict").status_code == 409
        assert client.post("/crash").status_code == 500
    events = {e.action: e for e in delivered(auditor, sink)}
    assert events["thing.conflict"].metadata == {"handled_by": "conflict_handler", "http_status": 409}
    assert events["thing.crash"].metadata == {"crash": "handled", "http_status": 500}


def test_unhandled_exception_records_500_and_propagates(auditor: Auditor, sink: MemorySink) -> None:
    app = FastAPI()

    @app.post("/boom")
    @audited("thing.boom", record_failures=True)
    async def boom() -> None:
        audit.actor(ALICE)
        audit.organization(ORG)
        raise ValueError("boom")

    auditor.install(app)
    with TestClient(app) as client, pytest.raises(ValueError, match="boom"):
        client.post("/boom")
    [event] = delivered(auditor, sink)
    assert event.request is not None and event.request.status == 500


def test_streaming_response_recorded_after_last_chunk(auditor: Auditor, sink: MemorySink) -> None:
    app = FastAPI()
    recorded_during_stream: list[int] = []

    async def chunks() -> Any:
        for i in range(3):
            await asyncio.sleep(0)
            recorded_during_stream.append(auditor.stats()["recorded"])
            yield f"chunk {i}\n".encode()

    @app.get("/export")
    @audited("export.download")
    async def export() -> StreamingResponse:
        audit.actor(ALICE)
        audit.organization(ORG)
        return StreamingResponse(chunks())

    auditor.install(app)
    with TestClient(app) as client:
        assert client.get("/export").text == "chunk 0\nchunk 1\nchunk 2\n"
    assert recorded_during_stream == [0, 0, 0]
    assert [e.action for e in delivered(auditor, sink)] == ["export.download"]


@pytest.mark.anyio
async def test_concurrent_requests_never_mix_actors(auditor: Auditor, sink: MemorySink) -> None:
    app = make_app(auditor)
    auditor.install(app)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/projects/p{i}/api-keys", params={"name": f"k{i}"}, headers={"x-user": f"user_{i}"})
                for i in range(200)
            )
        )
    assert all(r.status_code == 200 for r in responses)
    events = delivered(auditor, sink)
    assert len(events) == 200
    for event in events:
        number = event.actor.id.removeprefix("user_")
        assert event.targets[0].id == f"p{number}"
        assert event.targets[1].name == f"k{number}"


def test_route_map_and_resolvers(tmp_path: Any) -> None:
    sink = MemorySink()
    routes = RouteMap({"POST /legacy/{item_id}/archive": "item.archive"})
    routes.add("DELETE", "/legacy/{item_id:int}", "item.delete", targets=[Target.from_path("item", "item_id")])
    auditor = Auditor(
        sinks=[sink],
        outbox=tmp_path / "o.db",
        geoip=False,
        routes=routes,
        actor=lambda ctx: Actor(ctx.header("x-user") or "anonymous"),
        organization=lambda ctx: ctx.header("x-org"),
    )
    app = FastAPI()

    @app.post("/legacy/{item_id}/archive")
    async def archive(item_id: str) -> dict[str, str]:
        return {}

    @app.delete("/legacy/{item_id}")
    async def delete(item_id: int) -> dict[str, str]:
        return {}

    auditor.install(app)
    with TestClient(app) as client:
        client.post("/legacy/a1/archive", headers={"x-user": "user_carol", "x-org": "org_2"})
        client.delete("/legacy/7", headers={"x-user": "user_dan", "x-org": "org_3"})
    events = {e.action: e for e in delivered(auditor, sink)}
    auditor.close()
    assert events["item.archive"].actor.id == "user_carol"
    assert events["item.archive"].organization_id == "org_2"
    assert events["item.delete"].targets == (Target("item", id="7"),)
    assert events["item.delete"].organization_id == "org_3"


def test_lifespan_untouched_and_flushes_at_shutdown(auditor: Auditor, sink: MemorySink) -> None:
    from contextlib import asynccontextmanager

    phases: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        phases.append("startup")
        yield {"db": "connected"}
        phases.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.post("/x")
    @audited("x.create")
    async def create(request: Request) -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        return {"db": request.state.db}

    auditor.install(app)
    with TestClient(app) as client:
        assert client.post("/x").json() == {"db": "connected"}
    # The shutdown flush delivered the event without an explicit flush.
    assert [e.action for e in sink.events] == ["x.create"]
    assert phases == ["startup", "shutdown"]


def test_websocket_untouched(auditor: Auditor, sink: MemorySink) -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(f"in-audit-context={current_request() is not None}")
        await websocket.close()

    auditor.install(app)
    with TestClient(app) as client, client.websocket_connect("/ws") as socket:
        assert socket.receive_text() == "in-audit-context=False"
    assert delivered(auditor, sink) == []


def test_installing_twice_records_once(auditor: Auditor, sink: MemorySink) -> None:
    from centure_audit_middleware import AuditMiddleware

    app = make_app(auditor)
    auditor.install(app)
    auditor.install(app)
    app.add_middleware(AuditMiddleware, auditor=auditor)  # a second, manual layer
    with TestClient(app) as client:
        client.post("/projects/p1/api-keys")
    assert len(delivered(auditor, sink)) == 1
