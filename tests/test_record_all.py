"""The opt-in catch-all (issue 12, item 10): `Auditor(record_all=RecordAll(...))` records every request under chosen
path prefixes, or by actors of chosen types, that no annotation claims; `@audited`, `RouteMap`, `audit.skip()` and
the exclusion list always win. FastAPI, Starlette and Flask, through their own test clients."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from flask import Flask, abort, g
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from centure_audit_middleware import Actor, Auditor, RecordAll, RouteMap, Target, audit, audited
from centure_audit_middleware.catchall import DEFAULT_ACTION, ENDPOINT_TARGET_TYPE
from centure_audit_middleware.context import RequestContext
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.testing import AuditLog

from .conftest import ORG, delivered

USER = Actor("user_1", name="Ann")
KEY = Actor("key_1", type="api_key", name="CI deploy key")
HEADERS = {"x-user": "user_1"}
KEY_HEADERS = {"x-api-key": "key_1"}


def _identify(user: str | None, api_key: str | None) -> None:
    """The app's auth layer: an API key or a user, for one organization."""
    audit.organization(ORG)
    if api_key == KEY.id:
        audit.actor(KEY)
    elif user == USER.id:
        audit.actor(USER)


# -- FastAPI ------------------------------------------------------------------------------------------------------
def fastapi_app(auditor: Auditor) -> FastAPI:
    app = FastAPI()

    # Auth as middleware, so that it runs for unmatched paths too (a dependency runs only once a route matched).
    @app.middleware("http")
    async def authenticate(request: Request, call_next):  # type: ignore[no-untyped-def]
        _identify(request.headers.get("x-user"), request.headers.get("x-api-key"))
        return await call_next(request)

    items = APIRouter()

    @items.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        if item_id == 404:
            raise HTTPException(404)
        return {"id": item_id}

    @items.put("/items/{item_id}")
    async def replace_item(item_id: int) -> dict[str, Any]:
        return {"id": item_id}

    @items.post("/items")
    @audited("item.create", targets=[Target("item", id="new")])
    async def create_item(fail: bool = False) -> dict[str, Any]:
        if fail:
            raise HTTPException(409)  # a refused create: the annotation doesn't record failures
        return {}

    @items.delete("/items/{item_id}")
    async def delete_item(item_id: int, dry_run: bool = False) -> dict[str, Any]:
        if dry_run:
            audit.skip()
        return {}

    @items.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True}

    @items.get("/invites/{token}")
    async def invite(token: str) -> dict[str, Any]:
        return {}

    app.include_router(items, prefix="/api/v1")

    @app.get("/dashboard")
    async def dashboard() -> dict[str, Any]:
        return {}

    @app.post("/projects/{project_id}/archive")
    async def archive(project_id: str) -> dict[str, Any]:
        return {}

    auditor.install(app)
    return app


def audited_app(record_all: RecordAll, **settings: Any) -> TestClient:
    return TestClient(fastapi_app(Auditor(record_all=record_all, **settings)))


def test_every_unclaimed_request_under_a_prefix_is_recorded(audit_log: AuditLog) -> None:
    client = audited_app(RecordAll(prefixes=["/api/"]))
    assert client.get("/api/v1/items/7?secret=s3cr3t", headers=HEADERS).status_code == 200
    assert client.put("/api/v1/items/8", headers=KEY_HEADERS).status_code == 200
    assert client.get("/dashboard", headers=HEADERS).status_code == 200  # not under /api/
    assert audit_log.actions == [DEFAULT_ACTION, DEFAULT_ACTION]
    read, replace = audit_log.events
    assert read.actor == USER and read.organization_id == ORG
    assert read.metadata == {
        "http_method": "GET",
        "http_status": 200,
        "http_route": "/api/v1/items/{item_id}",  # the full template: router prefix included
        "path_item_id": "7",  # as routed: FastAPI converts parameters for the handler only
    }
    assert [(t.type, t.id) for t in read.targets] == [(ENDPOINT_TARGET_TYPE, "GET /api/v1/items/{item_id}")]
    assert "s3cr3t" not in repr(read)  # the query string is never recorded
    assert replace.actor == KEY
    assert replace.metadata["http_method"] == "PUT"
    assert replace.targets[0].id == "PUT /api/v1/items/{item_id}"


def test_an_annotation_skip_or_exclusion_always_wins(audit_log: AuditLog) -> None:
    client = audited_app(RecordAll(prefixes=["/api"], exclude=["/api/v1/health", "DELETE /api/v1/items/{item_id}"]))
    client.post("/api/v1/items", headers=HEADERS)  # @audited: its own action, not the catch-all's
    client.post("/api/v1/items?fail=true", headers=HEADERS)  # @audited refuses failures: nothing at all
    client.get("/api/v1/items/404", headers=HEADERS)  # unannotated: a failure is API activity too
    client.get("/api/v1/health", headers=HEADERS)  # excluded by path
    client.delete("/api/v1/items/3", headers=HEADERS)  # excluded by method and template
    client.put("/api/v1/items/3", headers=HEADERS)  # the same template, another method: recorded
    assert [(e.action, e.metadata.get("http_route"), e.metadata.get("http_status")) for e in audit_log.events] == [
        ("item.create", None, None),
        (DEFAULT_ACTION, "/api/v1/items/{item_id}", 404),
        (DEFAULT_ACTION, "/api/v1/items/{item_id}", 200),
    ]
    audit_log.clear()
    client = audited_app(RecordAll(prefixes=["/api"]))
    client.delete("/api/v1/items/3?dry_run=true", headers=HEADERS)  # the handler calls audit.skip()
    client.delete("/api/v1/items/4", headers=HEADERS)
    assert [e.metadata["path_item_id"] for e in audit_log.events] == ["4"]


def test_a_route_map_entry_claims_its_method_only(audit_log: AuditLog) -> None:
    routes = RouteMap({"PUT /api/v1/items/{item_id}": "item.replace"})
    client = audited_app(RecordAll(prefixes=["/api/"]), routes=routes)
    client.put("/api/v1/items/1", headers=HEADERS)
    client.get("/api/v1/items/1", headers=HEADERS)
    assert audit_log.actions == ["item.replace", DEFAULT_ACTION]


def test_unmatched_paths_under_a_prefix_are_recorded_with_the_raw_path(audit_log: AuditLog) -> None:
    client = audited_app(RecordAll(prefixes=["/api/"]))
    assert client.get("/api/v1/wp-login.php?pwd=hunter2", headers=HEADERS).status_code == 404
    assert client.get("/nope", headers=HEADERS).status_code == 404  # not under a prefix
    (probe,) = audit_log.events
    assert probe.metadata == {"http_method": "GET", "http_status": 404, "http_path": "/api/v1/wp-login.php"}
    assert probe.targets[0].id == "GET /api/v1/wp-login.php"
    assert probe.request is not None and probe.request.route is None
    assert "hunter2" not in repr(probe)


def test_no_actor_is_skipped_unless_an_anonymous_actor_is_set(
    audit_log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    auditor = Auditor(record_all=RecordAll(prefixes=["/api/"]))
    client = TestClient(fastapi_app(auditor))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            client.get("/api/v1/items/1")  # anonymous
        client.get("/dashboard")  # anonymous, and not the catch-all's: not counted either
    assert audit_log.events == []
    assert auditor.stats()["skipped"] == {"no_actor": 3}
    warnings = [r.getMessage() for r in caplog.records if "no actor" in r.getMessage()]
    assert len(warnings) == 1 and "api.request on GET /api/v1/items/{item_id}" in warnings[0], warnings

    anonymous = Actor("anonymous", type="anonymous")
    client = audited_app(RecordAll(prefixes=["/api/"]), anonymous_actor=anonymous)
    client.get("/api/v1/items/1")
    client.get("/dashboard")
    audit_log.assert_recorded(DEFAULT_ACTION, actor=anonymous, count=1)


def test_actor_types_record_api_key_calls_wherever_they_go(audit_log: AuditLog) -> None:
    client = audited_app(RecordAll(actor_types=["api_key"]))
    client.post("/projects/p1/archive", headers=KEY_HEADERS)
    client.post("/projects/p2/archive", headers=HEADERS)  # a user: the catch-all is for API keys only
    client.get("/api/v1/items/1", headers=HEADERS)
    client.get("/api/v1/items/2")  # nobody: neither recorded nor counted as skipped
    event = audit_log.assert_recorded(DEFAULT_ACTION, actor=KEY, count=1)
    assert event.metadata["http_route"] == "/projects/{project_id}/archive"
    assert event.metadata["path_project_id"] == "p1"
    assert len(audit_log.events) == 1


def test_actor_types_see_the_actor_resolver(audit_log: AuditLog) -> None:
    def from_header(ctx: RequestContext) -> Actor | None:
        return KEY if ctx.header("x-api-key") == KEY.id else None

    auditor = Auditor(record_all=RecordAll(actor_types=["api_key"]), actor=from_header)
    app = FastAPI()

    @app.get("/reports/{report_id}")
    async def report(report_id: str) -> dict[str, Any]:
        audit.organization(ORG)
        return {}

    auditor.install(app)
    TestClient(app).get("/reports/r1", headers=KEY_HEADERS)
    TestClient(app).get("/reports/r2")
    audit_log.assert_recorded(DEFAULT_ACTION, actor=KEY, metadata={"path_report_id": "r1"}, count=1)
    assert auditor.stats()["skipped"] == {}


def test_action_from_a_callable(audit_log: AuditLog, caplog: pytest.LogCaptureFixture) -> None:
    def action(ctx: RequestContext) -> str | None:
        if ctx.path.endswith("/health"):
            return None  # not recorded, not counted
        if ctx.path.endswith("/7"):
            raise RuntimeError("a bug in the app's callable")
        return f"api.{ctx.method.lower()}"

    client = audited_app(RecordAll(prefixes=["/api/"], action=action))
    client.get("/api/v1/items/1", headers=HEADERS)
    client.put("/api/v1/items/1", headers=HEADERS)
    client.get("/api/v1/health", headers=HEADERS)
    with caplog.at_level(logging.WARNING):
        client.get("/api/v1/items/7", headers=HEADERS)  # still recorded, with the default action
    assert audit_log.actions == ["api.get", "api.put", DEFAULT_ACTION]
    assert any("RecordAll action callable failed" in r.getMessage() for r in caplog.records)


def test_options_failures_and_methods(audit_log: AuditLog) -> None:
    client = audited_app(RecordAll(prefixes=["/api/"], record_failures=False))
    client.options("/api/v1/items/1", headers=HEADERS)  # a CORS preflight is no one's action
    client.get("/api/v1/items/404", headers=HEADERS)  # record_failures=False
    client.get("/api/v1/items/1", headers=HEADERS)
    assert [e.metadata["http_status"] for e in audit_log.events] == [200]
    audit_log.clear()
    client = audited_app(RecordAll(prefixes=["/api/"], methods=["PUT", "DELETE"]))
    client.get("/api/v1/items/1", headers=HEADERS)
    client.put("/api/v1/items/1", headers=HEADERS)
    assert [e.metadata["http_method"] for e in audit_log.events] == ["PUT"]


def test_path_parameters_named_like_secrets_are_redacted(audit_log: AuditLog) -> None:
    audited_app(RecordAll(prefixes=["/api/"])).get("/api/v1/invites/tok_123", headers=HEADERS)
    (event,) = audit_log.events
    assert event.metadata["path_token"] == "[REDACTED]"
    assert event.metadata["http_route"] == "/api/v1/invites/{token}"


def test_through_the_real_pipeline(tmp_path: Path) -> None:
    """Not the fixture's synchronous build: the committer thread builds the event after the request, from the
    request's scope."""
    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "o.db", geoip=False, record_all=RecordAll(prefixes=["/api/"]))
    try:
        with TestClient(fastapi_app(auditor)) as client:
            client.get("/api/v1/items/5", headers=HEADERS)
            client.post("/api/v1/items", headers=HEADERS)
        events = delivered(auditor, sink)
        assert sorted(e.action for e in events) == [DEFAULT_ACTION, "item.create"]
        (event,) = [e for e in events if e.action == DEFAULT_ACTION]
        assert event.metadata["http_route"] == "/api/v1/items/{item_id}" and event.metadata["path_item_id"] == "5"
        assert event.request is not None and event.request.route == "/api/v1/items/{item_id}"
    finally:
        auditor.close()


# -- Starlette ----------------------------------------------------------------------------------------------------
def test_starlette_routes_and_mounts(audit_log: AuditLog) -> None:
    async def show(request: StarletteRequest) -> Response:
        _identify(request.headers.get("x-user"), request.headers.get("x-api-key"))
        return JSONResponse({})

    @audited("doc.update", targets=[Target.from_path("doc", "doc_id")])
    async def update(request: StarletteRequest) -> Response:
        _identify(request.headers.get("x-user"), None)
        return JSONResponse({})

    app = Starlette(
        routes=[
            Mount(
                "/api/{tenant}",
                routes=[Route("/docs/{doc_id:int}", show), Route("/docs/{doc_id:int}/edit", update, methods=["POST"])],
            ),
            Route("/about", show),
        ]
    )
    Auditor(record_all=RecordAll(prefixes=["/api/"])).install(app)
    client = TestClient(app)
    client.get("/api/acme/docs/3", headers=HEADERS)
    client.post("/api/acme/docs/3/edit", headers=HEADERS)
    client.get("/about", headers=HEADERS)
    assert audit_log.actions == [DEFAULT_ACTION, "doc.update"]
    assert audit_log.events[0].metadata == {
        "http_method": "GET",
        "http_status": 200,
        "http_route": "/api/{tenant}/docs/{doc_id:int}",
        "path_tenant": "acme",
        "path_doc_id": 3,
    }


# -- Flask --------------------------------------------------------------------------------------------------------
@pytest.fixture
def flask_client() -> Callable[[RecordAll], Any]:
    def make(record_all: RecordAll) -> Any:
        app = Flask(__name__)

        @app.before_request
        def authenticate() -> Any:
            _identify(flask_request.headers.get("x-user"), flask_request.headers.get("x-api-key"))
            if flask_request.headers.get("x-rate-limited"):
                g.limited = True
                return {"error": "slow down"}, 429  # answered before the view: the URL matched all the same
            return None

        @app.route("/api/posts/<int:post_id>", methods=("GET", "POST"))
        @audited("post.update", targets=[Target.from_path("post", "post_id")])
        def edit(post_id: int) -> Any:
            return {"id": post_id}  # GET shows the form: the annotation records only POST

        @app.get("/api/posts")
        def posts() -> Any:
            return []

        @app.delete("/api/posts/<int:post_id>")
        def delete(post_id: int) -> Any:
            if post_id == 0:
                abort(404)
            return {}

        @app.get("/")
        def index() -> str:
            return "home"

        Auditor(record_all=record_all).install(app)
        return app.test_client()

    return make


def test_flask(audit_log: AuditLog, flask_client: Callable[[RecordAll], Any]) -> None:
    client = flask_client(RecordAll(prefixes=["/api"], exclude=["GET /api/posts"]))
    assert client.get("/api/posts/1", headers=HEADERS).status_code == 200  # the annotation's: form GET unrecorded
    assert client.post("/api/posts/1", headers=HEADERS).status_code == 200
    assert client.get("/api/posts", headers=HEADERS).status_code == 200  # excluded (GET only)
    assert client.delete("/api/posts/2", headers=HEADERS).status_code == 200
    assert client.delete("/api/posts/0", headers=HEADERS).status_code == 404
    assert client.get("/api/nothing-here?x=1", headers=KEY_HEADERS).status_code == 404
    assert client.get("/", headers=HEADERS).status_code == 200
    # A before_request hook answered for the annotated endpoint: still the annotation's (which skips a 429).
    assert client.post("/api/posts/1", headers={**HEADERS, "x-rate-limited": "1"}).status_code == 429
    # ... and for an unannotated one: the catch-all's, with its route.
    assert client.delete("/api/posts/5", headers={**HEADERS, "x-rate-limited": "1"}).status_code == 429
    summary = [
        (e.action, e.actor.id, e.metadata.get("http_route", e.metadata.get("http_path")), e.metadata.get("http_status"))
        for e in audit_log.events
    ]
    assert summary == [
        ("post.update", "user_1", None, None),
        (DEFAULT_ACTION, "user_1", "/api/posts/<int:post_id>", 200),
        (DEFAULT_ACTION, "user_1", "/api/posts/<int:post_id>", 404),
        (DEFAULT_ACTION, "key_1", "/api/nothing-here", 404),
        (DEFAULT_ACTION, "user_1", "/api/posts/<int:post_id>", 429),
    ]
    assert audit_log.events[1].metadata["path_post_id"] == 2
    assert audit_log.events[1].targets[0].id == "DELETE /api/posts/<int:post_id>"


# -- configuration ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({}, ValueError, id="nothing-to-record"),
        pytest.param({"prefixes": "/api/"}, TypeError, id="a-string-not-a-list"),
        pytest.param({"prefixes": ["api/"]}, ValueError, id="prefix-without-slash"),
        pytest.param({"prefixes": [""]}, TypeError, id="empty-prefix"),
        pytest.param({"prefixes": ["/api"], "exclude": ["FETCH /api/x"]}, ValueError, id="unknown-method"),
        pytest.param({"prefixes": ["/api"], "methods": []}, ValueError, id="no-methods"),
        pytest.param({"prefixes": ["/api"], "action": ""}, ValueError, id="empty-action"),
        pytest.param({"prefixes": ["/api"], "targets": [Target.from_result("x")]}, ValueError, id="from-result"),
        pytest.param({"prefixes": ["/api"], "targets": ["item"]}, TypeError, id="bad-target"),
    ],
)
def test_configuration_mistakes_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        RecordAll(**kwargs)


def test_record_all_takes_a_record_all() -> None:
    with pytest.raises(TypeError, match="RecordAll"):
        Auditor.for_tests(record_all=["/api/"])


@pytest.mark.parametrize(
    ("prefix", "path", "under"),
    [
        pytest.param("/api/", "/api/x", True, id="below"),
        pytest.param("/api/", "/api", True, id="itself-without-slash"),
        pytest.param("/api", "/api/", True, id="itself-with-slash"),
        pytest.param("/api", "/apiary", False, id="segment-boundary"),
        pytest.param("/", "/anything", True, id="root"),
        pytest.param("/api/v1", "/api/v2/x", False, id="sibling"),
    ],
)
def test_prefixes_match_at_segment_boundaries(prefix: str, path: str, under: bool, audit_log: AuditLog) -> None:
    app = Starlette(routes=[Route("/{rest:path}", _ok)])
    Auditor(record_all=RecordAll(prefixes=[prefix])).install(app)
    TestClient(app).get(path, headers=HEADERS)
    assert len(audit_log.events) == (1 if under else 0)


async def _ok(request: StarletteRequest) -> Response:
    _identify(request.headers.get("x-user"), None)
    return Response("ok")


def test_relay_mode_captures_the_same_event() -> None:
    """In relay mode the app captures the event (`EventBuilder.capture`) and the relay completes it later, from the
    captured JSON alone: the catch-all's metadata and target must be in what is captured."""
    import orjson

    auditor = Auditor.for_tests(record_all=RecordAll(prefixes=["/api/"]))
    handed: list[Any] = []
    auditor.handoff = handed.append
    TestClient(fastapi_app(auditor)).get("/api/v1/items/9", headers=KEY_HEADERS)
    (ctx,) = handed
    builder = auditor.dispatcher.builder
    _, captured = builder.capture(ctx)
    event = builder.complete(orjson.loads(captured))
    assert event.action == DEFAULT_ACTION and event.actor == KEY
    assert (
        event.metadata
        == builder.build(ctx).metadata
        == {
            "http_method": "GET",
            "http_status": 200,
            "http_route": "/api/v1/items/{item_id}",
            "path_item_id": "9",
        }
    )
    assert [(t.type, t.id) for t in event.targets] == [(ENDPOINT_TARGET_TYPE, "GET /api/v1/items/{item_id}")]
