"""The apps `benchmarks/server_throughput.py` serves: one variant per server process, chosen by `BENCH_VARIANT`.

    uvicorn apps.bench_server:fastapi_app --app-dir benchmarks        # FastAPI
    gunicorn apps.bench_server:flask_app --chdir benchmarks           # Flask

Every variant serves the same audited endpoint, `POST /projects/{project_id}/api-keys`, decorated with
`@audited("api_key.create", targets=[Target.from_path("project", "project_id")])`; the handler sets actor and
organization with `audit.*` (when an audit context exists), as an auth dependency would. `GET /health` is for the
readiness check. Variants (`BENCH_VARIANT`):

| variant | what wraps the app |
| --- | --- |
| `bare` | nothing |
| `passthrough` | a trivial pure-ASGI middleware (FastAPI only) |
| `correlation-id` | asgi-correlation-id's `CorrelationIdMiddleware` (FastAPI only) |
| `otel` | opentelemetry-instrumentation-asgi, SDK tracer, `BatchSpanProcessor`, an exporter that discards (FastAPI) |
| `audit`, `audit-workos` | `Auditor.from_env().install(app)`; the benchmark sets the variables |
| `audit-relay` | the same with `delivery="relay"` |
| `audit-all` | `Auditor.from_env(record_all=RecordAll(prefixes=["/projects/"]))`, the endpoint undecorated |

The environment (`CENTURE_AUDIT_OUTBOX`, `CENTURE_AUDIT_STORE`, and for WorkOS `WORKOS_API_KEY`, `WORKOS_BASE_URL`,
`CENTURE_AUDIT_RATE_LIMIT`) says where the outbox and the store are and where WorkOS is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from centure_audit_middleware import Actor, Auditor, RecordAll, Target, audit, audited
from centure_audit_middleware.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI
    from flask import Flask

__all__ = ["ACTION", "ACTOR", "ORG", "VARIANTS_ASGI", "VARIANTS_WSGI", "create_fastapi_app", "create_flask_app"]

ACTION = "api_key.create"
ORG = "org_01BENCH"
ACTOR = Actor(
    "user_01BENCH",
    name="Ada Lovelace",
    metadata={"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"},
)
VARIANTS_ASGI = ("bare", "passthrough", "correlation-id", "otel", "audit", "audit-workos", "audit-relay", "audit-all")
VARIANTS_WSGI = ("bare", "audit", "audit-workos", "audit-relay", "audit-all")
#: the catch-all variant's configuration: every request under the endpoint's prefix, no annotation anywhere
RECORD_ALL_PREFIXES = ("/projects/",)

_apps: dict[str, Any] = {}


def _variant(allowed: Sequence[str]) -> str:
    variant = os.environ.get("BENCH_VARIANT", "bare")
    if variant not in allowed:
        raise ValueError(f"BENCH_VARIANT={variant!r}: expected one of {', '.join(allowed)}")
    return variant


def _auditor(variant: str) -> Auditor | None:
    if not variant.startswith("audit"):
        return None
    if variant == "audit-relay":
        return Auditor.from_env(delivery="relay")
    if variant == "audit-all":
        return Auditor.from_env(record_all=RecordAll(prefixes=RECORD_ALL_PREFIXES))
    return Auditor.from_env()


def _annotate(variant: str, endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """The endpoint as every variant but `audit-all` declares it; that one leaves it to the catch-all."""
    if variant == "audit-all":
        return endpoint
    return audited(ACTION, targets=[Target.from_path("project", "project_id")])(endpoint)


def _identify() -> None:
    """What the app's auth layer does: say who acts, for which organization (nothing to say without an auditor)."""
    if audit.active:
        audit.actor(ACTOR)
        audit.organization(ORG)


class PassThrough:
    """The cheapest possible pure-ASGI middleware: the floor any middleware pays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _otel_provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DiscardExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> Any:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardExporter()))
    return provider


def create_fastapi_app() -> FastAPI:
    from fastapi import FastAPI

    variant = _variant(VARIANTS_ASGI)
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "variant": variant, "pid": os.getpid()}

    async def create_key(project_id: str) -> dict[str, str]:
        _identify()
        return {"id": "key_01BENCH", "project": project_id}

    app.post("/projects/{project_id}/api-keys", status_code=201)(_annotate(variant, create_key))

    if variant == "passthrough":
        app.add_middleware(PassThrough)
    elif variant == "correlation-id":
        from asgi_correlation_id import CorrelationIdMiddleware

        app.add_middleware(CorrelationIdMiddleware)
    elif variant == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(OpenTelemetryMiddleware, tracer_provider=_otel_provider())
    auditor = _auditor(variant)
    if auditor is not None:
        auditor.install(app)
    return app


def create_flask_app() -> Flask:
    from flask import Flask, jsonify
    from werkzeug.wrappers import Response

    variant = _variant(VARIANTS_WSGI)
    app = Flask(__name__)

    @app.get("/health")
    def health() -> Response:
        return jsonify(ok=True, variant=variant, pid=os.getpid())

    def create_key(project_id: str) -> tuple[Response, int]:
        _identify()
        return jsonify(id="key_01BENCH", project=project_id), 201

    app.post("/projects/<project_id>/api-keys")(_annotate(variant, create_key))

    auditor = _auditor(variant)
    if auditor is not None:
        auditor.install(app)
    return app


def __getattr__(name: str) -> Any:
    # Built on first access (PEP 562): a server process builds, and installs an auditor into, only the app it serves.
    factories: dict[str, Callable[[], Any]] = {"fastapi_app": create_fastapi_app, "flask_app": create_flask_app}
    if name not in factories:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _apps:
        _apps[name] = factories[name]()
    return _apps[name]
