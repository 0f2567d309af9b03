"""The WSGI middleware in real Flask apps: decorators, hooks, streaming, errors, and raw WSGI apps."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, g, jsonify, request, stream_with_context

from centure_audit_middleware import Actor, Auditor, AuditWSGIMiddleware, RouteMap, Target, audit, audited
from centure_audit_middleware.adapters.flask import CentureAudit
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.types import StartResponse, WSGIEnviron

from .conftest import ALICE, ORG, delivered


def make_app() -> Flask:
    app = Flask(__name__)

    @app.before_request
    def authenticate() -> None:
        user = request.headers.get("X-User", "user_alice")
        g.user = user
        audit.actor(Actor(user, name=user.title()))
        audit.organization(request.headers.get("X-Org", ORG))

    @app.post("/projects/<project_id>/mcp-proxies/<int:proxy_id>/status")
    @audited(
        "mcp_proxy.update_status",
        targets=[Target.from_path("project", "project_id"), Target.from_path("mcp_proxy", "proxy_id")],
    )
    def update_status(project_id: str, proxy_id: int) -> Any:
        audit.metadata(source=f"/projects/{project_id}/mcp-proxies", status="disabled")
        return jsonify(ok=True)

    @app.post("/projects")
    @audited("project.create", targets=[Target.from_result("project", id="id", name=lambda body: body["name"].upper())])
    def create_project() -> Any:
        return jsonify(id="proj_5", name="apollo"), 201  # a (response, status) tuple: its JSON body is used

    @app.get("/stream")
    @audited("export.download")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for i in range(3):
                yield f"row {i}\n"

        return Response(stream_with_context(chunks()))

    @app.post("/fail")
    @audited("thing.fail")
    def fail() -> Any:
        return jsonify(error="no"), 400

    @app.post("/crash")
    @audited("thing.crash", record_failures=True)
    def crash() -> Any:
        raise RuntimeError("boom")

    @app.errorhandler(409)
    def conflict(error: Any) -> Any:
        audit.metadata(handled="yes")
        return jsonify(error="conflict"), 409

    @app.post("/conflict")
    @audited("thing.conflict", record_failures=True)
    def raise_conflict() -> Any:
        from flask import abort

        abort(409)

    return app


@pytest.fixture
def app(auditor: Auditor) -> Flask:
    app = make_app()
    auditor.install(app)
    return app


def test_decorated_view(app: Flask, auditor: Auditor, sink: MemorySink) -> None:
    client = app.test_client()
    response = client.post(
        "/projects/p1/mcp-proxies/12/status", headers={"X-User": "user_bob"}, environ_base={"REMOTE_ADDR": "192.0.2.5"}
    )
    assert response.status_code == 200
    [event] = delivered(auditor, sink)
    assert event.action == "mcp_proxy.update_status"
    assert event.actor.id == "user_bob"
    assert [(t.type, t.id) for t in event.targets] == [("project", "p1"), ("mcp_proxy", "12")]
    assert event.metadata == {"source": "/projects/p1/mcp-proxies", "status": "disabled"}
    assert event.context.location == "192.0.2.5"
    assert (
        event.request is not None and event.request.route == "/projects/<project_id>/mcp-proxies/<int:proxy_id>/status"
    )


def test_targets_from_return_value(app: Flask, auditor: Auditor, sink: MemorySink) -> None:
    app.test_client().post("/projects")
    [event] = delivered(auditor, sink)
    assert event.targets == (Target("project", id="proj_5", name="APOLLO"),)


def test_streamed_body_recorded_once_produced_to_the_end(app: Flask, auditor: Auditor, sink: MemorySink) -> None:
    # The test client (unbuffered, as by default) reads the first chunk to get the status line; the rest waits.
    response = app.test_client().get("/stream")
    assert auditor.stats()["recorded"] == 0  # the body is still being produced
    assert response.get_data() == b"row 0\nrow 1\nrow 2\n"
    assert auditor.stats()["recorded"] == 1  # produced to the end; the response is never closed
    response.close()
    assert [e.action for e in delivered(auditor, sink)] == ["export.download"]


def test_failure_policy(app: Flask, auditor: Auditor, sink: MemorySink) -> None:
    client = app.test_client()
    assert client.post("/fail").status_code == 400
    assert client.post("/conflict").status_code == 409
    assert client.post("/crash").status_code == 500
    events = {e.action: e for e in delivered(auditor, sink)}
    assert set(events) == {"thing.conflict", "thing.crash"}
    assert events["thing.conflict"].metadata == {"handled": "yes", "http_status": 409}
    assert events["thing.crash"].metadata == {"http_status": 500}


def test_init_app_pattern_and_route_map(tmp_path: Any) -> None:
    sink = MemorySink()
    auditor = Auditor(
        sinks=[sink], outbox=tmp_path / "o.db", geoip=False, routes=RouteMap({"DELETE /items/{item_id}": "item.delete"})
    )
    extension = CentureAudit(auditor)
    app = make_app()

    @app.delete("/items/<item_id>")
    def delete_item(item_id: str) -> Any:
        return jsonify(deleted=item_id)

    extension.init_app(app)
    extension.init_app(app)  # twice: no double effect
    app.test_client().delete("/items/i1")
    [event] = delivered(auditor, sink)
    auditor.close()
    assert event.action == "item.delete"


def test_threads_never_mix_actors(app: Flask, auditor: Auditor, sink: MemorySink) -> None:
    def worker(i: int) -> None:
        client = app.test_client()
        client.post(f"/projects/p{i}/mcp-proxies/{i}/status", headers={"X-User": f"user_{i}"})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = delivered(auditor, sink)
    assert len(events) == 50
    for event in events:
        assert event.targets[0].id == "p" + event.actor.id.removeprefix("user_")


class _WriteApp:
    """A PEP 3333 app that uses the legacy write() callable."""

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        audit.actor(ALICE)
        audit.organization(ORG)
        write = start_response("201 Created", [("Content-Type", "text/plain")])
        write(b"written")
        return []


def _call(app: Any, environ: WSGIEnviron) -> tuple[str, bytes]:
    status: list[str] = []
    written: list[bytes] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(s)
        return written.append

    result = app(environ, start_response)
    try:
        written.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    return status[0], b"".join(written)


def test_raw_wsgi_write_style_app(auditor: Auditor, sink: MemorySink) -> None:
    routes = RouteMap({"POST /legacy": "legacy.write"})
    auditor.routes = routes
    inner = _WriteApp()

    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        from centure_audit_middleware import current_request

        ctx = current_request()
        assert ctx is not None
        ctx.route = "/legacy"  # what a framework adapter does
        return inner(environ, start_response)

    wrapped = AuditWSGIMiddleware(app, auditor=auditor)
    status, body = _call(wrapped, {"REQUEST_METHOD": "POST", "PATH_INFO": "/legacy", "REMOTE_ADDR": "198.51.100.4"})
    assert (status, body) == ("201 Created", b"written")
    [event] = delivered(auditor, sink)
    assert event.action == "legacy.write"
    assert event.request is not None and event.request.status == 201


def test_raw_wsgi_exception_propagates_and_records_500(auditor: Auditor, sink: MemorySink) -> None:
    auditor.routes = RouteMap({"POST /boom": AuditSpecFailing})

    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        from centure_audit_middleware import current_request

        ctx = current_request()
        assert ctx is not None
        ctx.route = "/boom"
        audit.actor(ALICE)
        audit.organization(ORG)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        _call(AuditWSGIMiddleware(app, auditor=auditor), {"REQUEST_METHOD": "POST", "PATH_INFO": "/boom"})
    [event] = delivered(auditor, sink)
    assert event.request is not None and event.request.status == 500


from centure_audit_middleware import AuditSpec  # noqa: E402

AuditSpecFailing = AuditSpec.build("thing.boom", record_failures=True)
