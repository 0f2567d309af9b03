"""The Audit Logs page for Flask: `audit_logs_blueprint(...)` returns a `Blueprint`.

    from centure_audit_middleware.admin.flask import audit_logs_blueprint

    app.register_blueprint(
        audit_logs_blueprint(
            is_admin=lambda request: g.user.is_org_admin,
            organization=lambda request: g.user.organization_id,
            entitlements=StripeEntitlements(...),
            secret_key=app.secret_key,
            store=store,
        ),
        url_prefix="/settings",            # the page is /settings/audit-logs
    )

The page has its own CSRF protection: if the app uses Flask-WTF's `CSRFProtect`, exempt the blueprint
(`csrf.exempt(blueprint)`), or its POSTs (and Stripe's webhook) are refused before they reach the page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from .hooks import AdminHooks, Hook, resolve
from .portal import PortalLinks, WorkOSClientFactory
from .views import MAX_WEBHOOK_BYTES, AuditLogsPage
from .wire import ROUTES, AdminRequest, AdminResponse, RouteSpec

if TYPE_CHECKING:
    from workos import WorkOSClient

    from ..auditor import Auditor
    from ..store import EventStore
    from .entitlements import Entitlements

__all__ = ["audit_logs_blueprint", "page_blueprint"]

MAX_FORM_BYTES = 64 * 1024
_PARAM = re.compile(r"\{(\w+)\}")


def audit_logs_blueprint(
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
    name: str = "centure_audit_logs",
) -> Blueprint:
    """The page's routes (``/audit-logs`` and below) as a Blueprint; see `AuditLogsPage` for the options."""
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
    return page_blueprint(page, hooks, name=name)


def page_blueprint(page: AuditLogsPage, hooks: AdminHooks, *, name: str = "centure_audit_logs") -> Blueprint:
    """A Blueprint serving an already configured `AuditLogsPage`."""
    blueprint = Blueprint(name, __name__)
    for spec in ROUTES:
        blueprint.add_url_rule(
            _PARAM.sub(r"<\1>", spec.path),
            endpoint=spec.name,
            view_func=_view(page, hooks, spec),
            methods=[spec.method],
        )
    return blueprint


def _root(spec: RouteSpec) -> str:
    """Where the blueprint is mounted, as the browser sees it: script root plus the registration's url_prefix."""
    rule = request.url_rule.rule if request.url_rule is not None else ""
    flask_path = _PARAM.sub(r"<\1>", spec.path)
    prefix = rule[: -len(flask_path)] if rule.endswith(flask_path) else ""
    return (request.script_root + prefix).rstrip("/")


def _view(page: AuditLogsPage, hooks: AdminHooks, spec: RouteSpec) -> Callable[..., Response]:
    def view(**params: str) -> Response:
        identity = resolve(hooks, request) if spec.admin else None
        body = b""
        form: dict[str, str] = {}
        if spec.method == "POST":
            limit = MAX_FORM_BYTES if spec.admin else MAX_WEBHOOK_BYTES
            if (request.content_length or 0) > limit:
                return _to_flask(page.too_large())
            if spec.admin:
                form = request.form.to_dict()  # first value of each name
            else:
                body = request.get_data(cache=False)
        admin_request = AdminRequest(
            route=spec.name,
            method=request.method,
            params=params,
            query=request.args.to_dict(),
            form=form,
            cookies=request.cookies.to_dict(),
            headers={k.lower(): v for k, v in request.headers.items()},
            root=_root(spec),
            origin=f"{request.scheme}://{request.host}",
            identity=identity,
            body=body,
        )
        return _to_flask(page.handle(admin_request))

    view.__name__ = f"centure_audit_{spec.name}"
    return view


def _to_flask(response: AdminResponse) -> Response:
    out = Response(response.body, status=response.status, content_type=response.content_type)
    for name, value in response.headers:
        out.headers.add(name, value)
    return out
