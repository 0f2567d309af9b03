"""The Audit Logs page for FastAPI and Starlette: `audit_logs_router(...)` returns a Starlette `Router`.

    from centure_audit_middleware.admin.starlette import audit_logs_router

    router = audit_logs_router(
        is_admin=lambda request: request.state.user.is_org_admin,
        organization=lambda request: request.state.user.organization_id,
        entitlements=StripeEntitlements(...),
        secret_key=settings.SECRET_KEY,
        store=store,                       # optional: the event table, CSV export, events API
        workos=workos_client_factory(),    # optional: WORKOS_API_KEY / WORKOS_BASE_URL by default
    )
    app.mount("/settings", router)        # the page is /settings/audit-logs

The hooks run on the event loop (make them `async def` if they do I/O); the page's own work (store, Stripe, WorkOS)
runs in Starlette's thread pool, inside the request's audit context.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, Router

from .hooks import AdminHooks, Hook, resolve_async
from .portal import PortalLinks, WorkOSClientFactory
from .views import MAX_WEBHOOK_BYTES, AuditLogsPage
from .wire import ROUTES, AdminRequest, AdminResponse, RouteSpec

if TYPE_CHECKING:
    from workos import WorkOSClient

    from ..auditor import Auditor
    from ..store import EventStore
    from .entitlements import Entitlements

__all__ = ["audit_logs_router", "page_router"]

#: The admin forms carry a token and nothing else; a bigger body is not ours.
MAX_FORM_BYTES = 64 * 1024


def audit_logs_router(
    *,
    is_admin: Hook | None,
    organization: Hook | None,
    entitlements: Entitlements,
    secret_key: str | bytes,
    store: EventStore | None = None,
    workos: WorkOSClient | WorkOSClientFactory | None = None,
    auditor: Auditor | None = None,
    actor: Hook | None = None,
    organization_name: Hook | None = None,
    session: Hook | None = None,
    subscribe_url: str | None = None,
    public_url: str | None = None,
    price_note: str | None = None,
    page_size: int = 50,
) -> Router:
    """The page's routes (``/audit-logs`` and below) as a Router to mount; see `AuditLogsPage` for the options."""
    page = AuditLogsPage(
        entitlements=entitlements,
        secret_key=secret_key,
        store=store,
        portal=PortalLinks(workos),
        auditor=auditor,
        subscribe_url=subscribe_url,
        public_url=public_url,
        price_note=price_note,
        page_size=page_size,
    )
    hooks = AdminHooks(is_admin, organization, actor, organization_name, session)
    return page_router(page, hooks)


def page_router(page: AuditLogsPage, hooks: AdminHooks) -> Router:
    """A Router serving an already configured `AuditLogsPage`."""
    return Router(
        routes=[
            Route(spec.path, _endpoint(page, hooks, spec), methods=[spec.method], name=f"centure_audit_{spec.name}")
            for spec in ROUTES
        ]
    )


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None if it is larger than `limit` (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _form(body: bytes, content_type: str) -> Mapping[str, str]:
    # Our forms are urlencoded; parsing them here spares apps the python-multipart dependency.
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20):
        fields.setdefault(name, value)
    return fields


def _endpoint(page: AuditLogsPage, hooks: AdminHooks, spec: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        identity = await resolve_async(hooks, request) if spec.admin else None
        body = b""
        form: Mapping[str, str] = {}
        if spec.method == "POST":
            read = await _read_body(request, MAX_FORM_BYTES if spec.admin else MAX_WEBHOOK_BYTES)
            if read is None:
                return _to_starlette(page.too_large())
            body = read
            if spec.admin:
                form = _form(body, request.headers.get("content-type", ""))
                body = b""
        query: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            query.setdefault(name, value)  # the first of repeated names, as Flask does
        url = request.url
        admin_request = AdminRequest(
            route=spec.name,
            method=request.method,
            params={k: str(v) for k, v in request.path_params.items()},
            query=query,
            form=form,
            cookies=dict(request.cookies),
            headers={k.lower(): v for k, v in request.headers.items()},
            root=str(request.scope.get("root_path", "")).rstrip("/"),
            origin=f"{url.scheme}://{url.netloc}",
            identity=identity,
            body=body,
        )
        # run_in_threadpool copies the context: the page's audit.record() lands in this request's audit record.
        response = await run_in_threadpool(page.handle, admin_request)
        return _to_starlette(response)

    return endpoint


def _to_starlette(response: AdminResponse) -> Response:
    headers: Any = response.headers  # a list of pairs keeps repeated names (Set-Cookie) apart
    body = response.body
    if isinstance(body, bytes):
        out = Response(body, status_code=response.status, media_type=response.content_type)
    else:
        # A sync iterator: Starlette drives it in its thread pool, one chunk at a time.
        out = StreamingResponse(body, status_code=response.status, media_type=response.content_type)
    for name, value in headers:
        out.headers.append(name, value)
    return out
