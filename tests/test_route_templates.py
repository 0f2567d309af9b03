"""Route templates in real FastAPI and Starlette apps: every `include_router` prefix and every Mount is in the template
an event records and a RouteMap is looked up with, on the oldest and the newest supported versions.

FastAPI 0.137 stopped copying the routes of an included router (`scope["route"]` is the router's own route, without
the prefixes), and Starlette before 1.7 records no route at all; `scripts/test-oldest-deps.sh` runs this file against
the oldest versions. One table, one `id=` per case; each case is checked twice: through the whole pipeline (a RouteMap
keyed by the full template, and the template the event records) and through the adapter's `route_template()` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Host, Mount, Route

from centure_audit_middleware import Auditor, RouteMap
from centure_audit_middleware.adapters.starlette import route_template
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.types import ASGIApp, Receive, Scope, Send

from .conftest import ALICE, ORG, delivered

ACTION = "thing.touch"


async def plain(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def other(request: Request) -> Response:
    return JSONResponse({"other": True})


async def raw_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("raw")(scope, receive, send)


def items_router(**kwargs: Any) -> APIRouter:
    router = APIRouter(**kwargs)

    @router.post("/items/{item_id}")
    async def touch_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    return router


def fastapi_prefix() -> ASGIApp:
    app = FastAPI()
    app.include_router(items_router(), prefix="/api/v1")
    return app


def fastapi_router_prefix() -> ASGIApp:
    app = FastAPI()
    app.include_router(items_router(prefix="/shop"))
    return app


def fastapi_nested() -> ASGIApp:
    outer = APIRouter()
    outer.include_router(items_router(prefix="/inner"), prefix="/v1")
    app = FastAPI()
    app.include_router(outer, prefix="/api")
    return app


def fastapi_twice() -> ASGIApp:
    # The same router under two prefixes: on FastAPI >= 0.137 both serve the very same route object.
    router = items_router()
    app = FastAPI()
    app.include_router(router, prefix="/v1")
    app.include_router(router, prefix="/v2")
    return app


def fastapi_parameter_prefix() -> ASGIApp:
    app = FastAPI()
    app.include_router(items_router(), prefix="/orgs/{org_id}")
    return app


def fastapi_mounted_subapp() -> ASGIApp:
    sub = FastAPI()
    sub.include_router(items_router(prefix="/inner"), prefix="/x")
    app = FastAPI()
    app.mount("/sub", sub)
    return app


def fastapi_plain_route() -> ASGIApp:
    app = FastAPI()
    app.add_route("/plain/{thing_id}", plain, methods=["POST"])
    return app


def fastapi_plain_route_in_router() -> ASGIApp:
    router = APIRouter()
    router.add_route("/plain/{thing_id}", plain, methods=["POST"])
    app = FastAPI()
    app.include_router(router, prefix="/api")
    return app


def fastapi_mounted_starlette() -> ASGIApp:
    app = FastAPI()
    app.mount("/legacy", Starlette(routes=[Route("/things/{thing_id}", plain, methods=["POST"])]))
    return app


def starlette_routes() -> ASGIApp:
    return Starlette(
        routes=[
            Route("/other/{thing_id}", other, methods=["POST"]),
            Route("/things/{thing_id}", plain, methods=["POST"]),
        ]
    )


def starlette_shared_endpoint() -> ASGIApp:
    # One endpoint at two paths: the template must be the path that matched, not the endpoint's first route.
    return Starlette(
        routes=[Route("/a/{thing_id}", plain, methods=["POST"]), Route("/b/{thing_id}", plain, methods=["POST"])]
    )


def starlette_mount() -> ASGIApp:
    return Starlette(routes=[Mount("/api/v1", routes=[Route("/things/{thing_id}", plain, methods=["POST"])])])


def starlette_nested_mounts() -> ASGIApp:
    inner = Starlette(routes=[Route("/things/{thing_id}", plain, methods=["POST"])])
    return Starlette(routes=[Mount("/api", routes=[Mount("/v1", app=inner)])])


def starlette_parameter_mount() -> ASGIApp:
    return Starlette(routes=[Mount("/orgs/{org_id}", routes=[Route("/things/{thing_id}", plain, methods=["POST"])])])


def starlette_mounted_raw_app() -> ASGIApp:
    return Starlette(routes=[Mount("/files", app=raw_asgi)])


def starlette_host() -> ASGIApp:
    return Starlette(
        routes=[Host("testserver", app=Starlette(routes=[Route("/h/{thing_id}", plain, methods=["POST"])]))]
    )


class Case(NamedTuple):
    app: Callable[[], ASGIApp]
    path: str
    template: str


CASES = [
    pytest.param(Case(fastapi_prefix, "/api/v1/items/7", "/api/v1/items/{item_id}"), id="fastapi-include-prefix"),
    pytest.param(Case(fastapi_router_prefix, "/shop/items/7", "/shop/items/{item_id}"), id="fastapi-router-prefix"),
    pytest.param(Case(fastapi_nested, "/api/v1/inner/items/7", "/api/v1/inner/items/{item_id}"), id="fastapi-nested"),
    pytest.param(Case(fastapi_twice, "/v2/items/7", "/v2/items/{item_id}"), id="fastapi-same-router-twice"),
    pytest.param(
        Case(fastapi_parameter_prefix, "/orgs/o1/items/7", "/orgs/{org_id}/items/{item_id}"), id="fastapi-param-prefix"
    ),
    pytest.param(
        Case(fastapi_mounted_subapp, "/sub/x/inner/items/7", "/sub/x/inner/items/{item_id}"), id="fastapi-mounted-app"
    ),
    pytest.param(Case(fastapi_plain_route, "/plain/7", "/plain/{thing_id}"), id="fastapi-plain-route"),
    pytest.param(
        Case(fastapi_plain_route_in_router, "/api/plain/7", "/api/plain/{thing_id}"), id="fastapi-plain-in-router"
    ),
    pytest.param(
        Case(fastapi_mounted_starlette, "/legacy/things/7", "/legacy/things/{thing_id}"), id="fastapi-mounted-starlette"
    ),
    pytest.param(Case(starlette_routes, "/things/7", "/things/{thing_id}"), id="starlette-route"),
    pytest.param(Case(starlette_shared_endpoint, "/b/7", "/b/{thing_id}"), id="starlette-shared-endpoint"),
    pytest.param(Case(starlette_mount, "/api/v1/things/7", "/api/v1/things/{thing_id}"), id="starlette-mount"),
    pytest.param(Case(starlette_nested_mounts, "/api/v1/things/7", "/api/v1/things/{thing_id}"), id="starlette-mounts"),
    pytest.param(
        Case(starlette_parameter_mount, "/orgs/o1/things/7", "/orgs/{org_id}/things/{thing_id}"),
        id="starlette-param-mount",
    ),
    pytest.param(Case(starlette_mounted_raw_app, "/files/a/b.txt", "/files/{path}"), id="starlette-mounted-raw-app"),
    pytest.param(Case(starlette_host, "/h/7", "/h/{thing_id}"), id="starlette-host"),
]


def make_auditor(tmp_path: Path, sink: MemorySink, routes: RouteMap) -> Auditor:
    return Auditor(
        sinks=[sink],
        outbox=tmp_path / "outbox.db",
        geoip=False,
        commit_interval=0.01,
        routes=routes,
        actor=lambda ctx: ALICE,
        organization=lambda ctx: ORG,
    )


@pytest.mark.parametrize("case", CASES)
def test_route_map_keyed_by_the_full_template_matches(case: Case, tmp_path: Path) -> None:
    sink = MemorySink()
    auditor = make_auditor(tmp_path, sink, RouteMap({f"POST {case.template}": ACTION}))
    app = case.app()
    auditor.install(app)
    try:
        with TestClient(app) as client:
            assert client.post(case.path).status_code == 200
        events = delivered(auditor, sink)
    finally:
        auditor.close(timeout=5)
    assert [e.action for e in events] == [ACTION]
    assert events[0].request is not None and events[0].request.route == case.template


@pytest.mark.parametrize("case", CASES)
def test_adapter_reads_the_full_template(case: Case) -> None:
    scopes: list[Scope] = []
    app = case.app()

    async def capture(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await app(scope, receive, send)

    with TestClient(capture) as client:
        assert client.post(case.path).status_code == 200
    # Read after the response, as the dispatcher does: the routers are done with the scope by then.
    [scope] = [s for s in scopes if s["type"] == "http"]
    assert route_template(scope) == case.template


def test_unmatched_request_has_no_template(tmp_path: Path) -> None:
    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "o.db", geoip=False, commit_interval=0.01)
    app = FastAPI()
    app.include_router(items_router(), prefix="/api/v1")
    auditor.install(app)
    seen: list[str | None] = []

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        from centure_audit_middleware import audit

        seen.append(audit.request.route_template())
        return PlainTextResponse("gone", status_code=404)

    try:
        with TestClient(app) as client:
            assert client.post("/api/v1/nothing/here").status_code == 404
    finally:
        auditor.close(timeout=5)
    assert seen == [None]


def test_the_server_root_path_is_not_part_of_the_template() -> None:
    # Behind a proxy that strips a prefix (uvicorn --root-path /proxy): routes are matched without it, and so is the
    # template, as a RouteMap written against the app's own routes expects.
    scopes: list[Scope] = []
    app = fastapi_prefix()

    async def capture(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await app(scope, receive, send)

    with TestClient(capture, root_path="/proxy") as client:
        assert client.post("/api/v1/items/7").status_code == 200
    [scope] = [s for s in scopes if s["type"] == "http"]
    assert scope["root_path"] == "/proxy"
    assert route_template(scope) == "/api/v1/items/{item_id}"
