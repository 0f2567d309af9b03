"""Which request methods of an audited endpoint are recorded (issue 12).

A Flask form view (`methods=("GET", "POST")`) shows its form on GET and acts on POST: opening the form must not
record `post.create`. By default a view that serves safe and state-changing methods records only the state-changing
ones, a view that serves only safe methods records those, and `methods=` says otherwise. The same holds for
Starlette and FastAPI routes, and a RouteMap entry records the method its key names.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from centure_audit_middleware import AuditEvent, Auditor, AuditSpec, RouteMap, Target, audit, audited
from centure_audit_middleware.annotations import HTTP_METHODS, ROUTE_METHODS_KEY, SAFE_METHODS
from centure_audit_middleware.context import RequestContext
from centure_audit_middleware.sinks import MemorySink

from .conftest import ALICE, ORG, delivered

FORM = frozenset({"GET", "HEAD", "OPTIONS", "POST"})  # what Flask's url_rule.methods holds for methods=("GET", "POST")
READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})


# -- the rule ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("methods", "method", "route_methods", "recorded"),
    [
        pytest.param(None, "POST", FORM, True, id="form-view-post"),
        pytest.param(None, "GET", FORM, False, id="form-view-get-shows-the-form"),
        pytest.param(None, "HEAD", FORM, False, id="form-view-head"),
        pytest.param(None, "OPTIONS", {"OPTIONS", "POST"}, False, id="post-view-automatic-options"),
        pytest.param(None, "GET", {"GET", "DELETE"}, False, id="get-and-delete"),
        pytest.param(None, "GET", READ_ONLY, True, id="read-only-view-get"),
        pytest.param(None, "HEAD", READ_ONLY, True, id="read-only-view-head"),
        pytest.param(None, "GET", {"GET"}, True, id="fastapi-get-only"),
        pytest.param(None, "GET", None, True, id="route-methods-unknown"),
        pytest.param(None, "GET", frozenset(), True, id="route-methods-empty"),
        pytest.param(None, "TRACE", {"TRACE", "PUT"}, False, id="trace-is-safe"),
        pytest.param(None, "PUT", {"PUT"}, True, id="put"),
        pytest.param(None, "PATCH", FORM | {"PATCH"}, True, id="patch"),
        pytest.param(None, "DELETE", None, True, id="delete-route-unknown"),
        pytest.param(None, "PROPFIND", READ_ONLY, True, id="unlisted-method-counts-as-state-changing"),
        pytest.param(frozenset({"GET", "POST"}), "GET", FORM, True, id="explicit-get-on-form-view"),
        pytest.param(frozenset({"GET"}), "POST", FORM, False, id="explicit-get-only-skips-post"),
        pytest.param(frozenset({"GET"}), "HEAD", READ_ONLY, False, id="explicit-is-exact-head-is-not-get"),
        pytest.param(frozenset({"POST"}), "POST", None, True, id="explicit-route-unknown"),
        pytest.param(frozenset({"DELETE"}), "GET", None, False, id="explicit-excludes-even-if-route-unknown"),
    ],
)
def test_records(
    methods: frozenset[str] | None, method: str, route_methods: Collection[str] | None, recorded: bool, auditor: Auditor
) -> None:
    spec = AuditSpec.build("thing.do", methods=methods)
    assert spec.records(method, route_methods) is recorded
    # The request path's version of the rule answers the same, from an ASGI scope and from a WSGI environ.
    endpoint = object()
    route = SimpleNamespace(methods=route_methods, endpoint=endpoint)
    asgi = RequestContext(auditor, scope={"type": "http", "method": method, "route": route, "endpoint": endpoint})
    wsgi_environ: dict[str, Any] = {"REQUEST_METHOD": method}
    if route_methods is not None:
        wsgi_environ[ROUTE_METHODS_KEY] = route_methods
    wsgi = RequestContext(auditor, environ=wsgi_environ)
    assert (spec.records_request(asgi), spec.records_request(wsgi)) == (recorded, recorded)


def test_records_request_without_any_route_records_by_default(auditor: Auditor) -> None:
    spec = AuditSpec.build("thing.do")
    assert spec.records_request(RequestContext(auditor, scope={"type": "http", "method": "GET"}))
    assert spec.records_request(RequestContext(auditor, environ={"REQUEST_METHOD": "GET"}))
    assert not AuditSpec.build("thing.do", methods=["POST"]).records_request(
        RequestContext(auditor, scope={"type": "http", "method": "GET"})
    )


def test_a_route_left_by_an_outer_router_is_not_read(auditor: Auditor) -> None:
    # Only the route that answered (its endpoint is the scope's) tells which methods this endpoint serves.
    outer = SimpleNamespace(methods=FORM, endpoint=object())
    scope = {"type": "http", "method": "GET", "route": outer, "endpoint": object()}
    assert AuditSpec.build("thing.do").records_request(RequestContext(auditor, scope=scope))


def test_method_sets() -> None:
    assert SAFE_METHODS < HTTP_METHODS
    assert frozenset({"POST", "PUT", "PATCH", "DELETE", "CONNECT"}) == HTTP_METHODS - SAFE_METHODS


# -- declaring methods -------------------------------------------------------------------------------------------------
def test_methods_are_normalised_and_kept_as_a_frozenset() -> None:
    spec = AuditSpec.build("thing.do", methods=["post", " Get ", "POST"])
    assert spec.methods == frozenset({"GET", "POST"})
    assert AuditSpec.build("thing.do").methods is None

    @audited("thing.do", methods=("put",))
    def view() -> None: ...

    assert view.__centure_audit__.methods == {"PUT"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("methods", "error", "match"),
    [
        pytest.param(["POTS"], ValueError, "unknown HTTP method 'POTS'", id="typo"),
        pytest.param(["GET", "FETCH"], ValueError, "unknown HTTP method 'FETCH'", id="one-unknown"),
        pytest.param([], ValueError, "never record", id="empty"),
        pytest.param("POST", TypeError, "list of method names", id="a-bare-string"),
        pytest.param([b"POST"], TypeError, "is a string", id="bytes"),
        pytest.param([None], TypeError, "is a string", id="none"),
    ],
)
def test_bad_methods_are_refused_at_decoration_time(methods: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        audited("thing.do", methods=methods)  # before any function is decorated


def test_route_map_entries_record_their_keys_method() -> None:
    routes = RouteMap({"get /reports/{id}": "report.view", "POST /reports/{id}": "report.update"})
    routes.add("delete", "/reports/<id>", "report.delete")
    view = routes.lookup("GET", "/reports/{id}")
    assert view is not None and view.methods == frozenset({"GET"})
    assert view.records("GET", FORM)  # the key says GET, though the route also serves POST
    assert (routes.lookup("POST", "/reports/<int:id>") or view).methods == frozenset({"POST"})
    assert (routes.lookup("DELETE", "/reports/{id}") or view).methods == frozenset({"DELETE"})


def test_route_map_spec_values() -> None:
    shared = AuditSpec.build("report.touch")
    routes = RouteMap({"GET /a": shared, "PUT /a": shared})
    assert [(routes.lookup(m, "/a") or shared).methods for m in ("GET", "PUT")] == [
        frozenset({m}) for m in ("GET", "PUT")
    ]
    assert shared.methods is None  # the caller's spec is left as it was
    both = AuditSpec.build("report.touch", methods=["GET", "POST"])
    assert RouteMap({"GET /b": both}).lookup("GET", "/b") is both
    with pytest.raises(ValueError, match="records only"):
        RouteMap({"DELETE /b": both})


@pytest.mark.parametrize("key", ["POTS /items", "FETCH /items"])
def test_route_map_refuses_unknown_methods(key: str) -> None:
    with pytest.raises(ValueError, match="unknown HTTP method"):
        RouteMap({key: "item.create"})


# -- Flask -------------------------------------------------------------------------------------------------------------
def _flask_app(auditor: Auditor) -> Flask:
    app = Flask(__name__)

    @app.before_request
    def identify() -> None:
        audit.actor(ALICE)
        audit.organization(ORG)

    @app.route("/posts/create", methods=("GET", "POST"))
    @audited("post.create")
    def create() -> str:
        return "form"

    @app.route("/posts/<post_id>/edit", methods=["GET", "POST"])
    @audited("post.update", targets=[Target.from_path("post", "post_id")])
    def edit(post_id: str) -> str:
        return "form"

    @app.get("/export")
    @audited("export.download")
    def export() -> str:
        return "rows"

    @app.post("/items")
    @audited("item.create")
    def create_item() -> str:
        return "created"

    @app.route("/search", methods=["GET", "POST"])
    @audited("search.run", methods=["GET", "POST"])
    def search() -> str:
        return "results"

    @app.route("/reports/<report_id>", methods=["GET", "POST"])
    def report(report_id: str) -> str:
        return "report"

    auditor.routes = RouteMap({"GET /reports/{report_id}": "report.view"})
    auditor.install(app)
    return app


def _recorded(auditor: Auditor, sink: MemorySink) -> list[tuple[str, str]]:
    return [(e.action, _method(e)) for e in delivered(auditor, sink)]


def _method(event: AuditEvent) -> str:
    assert event.request is not None and event.request.method is not None
    return event.request.method


def test_flask_form_view_records_the_post_not_the_form(auditor: Auditor, sink: MemorySink) -> None:
    client = _flask_app(auditor).test_client()
    assert client.get("/posts/create").text == "form"
    assert client.get("/posts/p1/edit").status_code == 200
    assert client.head("/posts/create").status_code == 200
    assert _recorded(auditor, sink) == []
    client.post("/posts/create")
    client.post("/posts/p1/edit")
    assert _recorded(auditor, sink) == [("post.create", "POST"), ("post.update", "POST")]


def test_flask_read_only_view_records_its_safe_methods(auditor: Auditor, sink: MemorySink) -> None:
    client = _flask_app(auditor).test_client()
    client.get("/export")
    client.head("/export")
    assert _recorded(auditor, sink) == [("export.download", "GET"), ("export.download", "HEAD")]


def test_flask_automatic_options_of_a_post_view_is_not_the_post(auditor: Auditor, sink: MemorySink) -> None:
    client = _flask_app(auditor).test_client()
    assert client.options("/items").status_code == 200  # answered by Flask (a CORS preflight), the view never runs
    client.post("/items")
    assert _recorded(auditor, sink) == [("item.create", "POST")]


def test_flask_explicit_methods_and_route_map(auditor: Auditor, sink: MemorySink) -> None:
    client = _flask_app(auditor).test_client()
    client.get("/search")
    client.post("/search")
    client.get("/reports/r1")
    client.post("/reports/r1")  # the map has no POST entry
    assert _recorded(auditor, sink) == [("search.run", "GET"), ("search.run", "POST"), ("report.view", "GET")]


# -- Starlette and FastAPI ---------------------------------------------------------------------------------------------
@audited("post.create")
async def starlette_form(request: Request) -> Response:
    audit.actor(ALICE)
    audit.organization(ORG)
    return PlainTextResponse("form" if request.method == "GET" else "created")


@audited("export.download")
async def starlette_export(request: Request) -> Response:
    audit.actor(ALICE)
    audit.organization(ORG)
    return PlainTextResponse("rows")


@audited("search.run", methods=["GET"])
async def starlette_search(request: Request) -> Response:
    audit.actor(ALICE)
    audit.organization(ORG)
    return PlainTextResponse("results")


class Reports(HTTPEndpoint):
    @audited("report.view")  # the handler serves its one method; the route's methods are None
    async def get(self, request: Request) -> Response:
        audit.actor(ALICE)
        audit.organization(ORG)
        return PlainTextResponse("report")


@pytest.fixture
def starlette_client(auditor: Auditor) -> Iterator[TestClient]:
    app = Starlette(
        routes=[
            Route("/posts/create", starlette_form, methods=["GET", "POST"]),
            Route("/export", starlette_export),  # a function endpoint serves GET (and HEAD) by default
            Route("/search", starlette_search, methods=["GET", "POST"]),
            Route("/reports/{id}", Reports),
        ]
    )
    auditor.install(app)
    with TestClient(app) as client:
        yield client


def test_starlette_form_route_records_the_post_not_the_form(
    starlette_client: TestClient, auditor: Auditor, sink: MemorySink
) -> None:
    assert starlette_client.get("/posts/create").text == "form"
    starlette_client.head("/posts/create")
    starlette_client.post("/posts/create")
    assert _recorded(auditor, sink) == [("post.create", "POST")]


def test_starlette_read_only_explicit_and_class_endpoints(
    starlette_client: TestClient, auditor: Auditor, sink: MemorySink
) -> None:
    starlette_client.get("/export")
    starlette_client.get("/search")
    starlette_client.post("/search")  # methods=["GET"]: not this one
    starlette_client.get("/reports/r1")
    assert _recorded(auditor, sink) == [("export.download", "GET"), ("search.run", "GET"), ("report.view", "GET")]


def test_fastapi_api_route_serving_get_and_post(auditor: Auditor, sink: MemorySink) -> None:
    app = FastAPI()

    @app.api_route("/posts/create", methods=["GET", "POST"])
    @audited("post.create")
    async def create() -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        return {"ok": "yes"}

    @app.get("/export")
    @audited("export.download")
    async def export() -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        return {"rows": "..."}

    auditor.install(app)
    with TestClient(app) as client:
        client.get("/posts/create")
        client.post("/posts/create")
        client.get("/export")
    assert _recorded(auditor, sink) == [("post.create", "POST"), ("export.download", "GET")]
