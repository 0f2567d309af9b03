"""The Audit Logs page in the demo's FastAPI app: `mount_admin(app, store=..., auditor=..., emulator=...)`.

Demo identities are the demo's bearer tokens (`demo.apps.USERS`). `tok_ada` is an admin of Acme Robotics
(org_01CENTUREACME), which has the add-on, so she sees the portal buttons and the event table; `tok_linus` is an
admin of Globex Labs, which has not subscribed, so he sees the banner with *Subscribe Now*; everyone else is
refused. A browser can't send a bearer token, so ``GET <prefix>/demo-login?token=tok_ada`` stores it in a cookie and
redirects to the page. The portal buttons open the WorkOS emulator's portal pages.

Subscribe Now leads, as it would to Stripe Checkout, to a pretend checkout page served by the demo itself
(``<prefix>/demo-checkout``: no card, no network); paying there enables the add-on for the admin's organization
(`DemoBilling`, an allow-list that can sell) and returns to the page, which then shows the portal buttons.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from html import escape
from typing import TYPE_CHECKING, Any, Final

from ..admin import StaticEntitlements, workos_client_factory
from .apps import ACME, ORGANIZATIONS, USERS, DemoUser

if TYPE_CHECKING:
    from ..auditor import Auditor
    from ..store import EventStore
    from ..testing.emulator import WorkOSEmulator

__all__ = ["DEMO_ADMINS", "DemoBilling", "mount_admin"]

#: Demo tokens of organization admins.
DEMO_ADMINS: Final = frozenset({"tok_ada", "tok_linus"})
TOKEN_COOKIE: Final = "centure_demo_token"
PRICE_NOTE: Final = "Audit Logging costs $10 per month per organization (a temporary flat fee)."


class DemoBilling(StaticEntitlements):
    """An allow-list that can sell the add-on (a `CheckoutProvider`), so the page offers Subscribe Now: checkout is
    the demo's pretend page at `checkout_path`, which comes back to the page itself."""

    def __init__(self, active: Iterable[str], checkout_path: str) -> None:
        super().__init__(active)
        self.checkout_path = checkout_path

    def checkout_url(self, organization_id: str, success_url: str, cancel_url: str) -> str:
        # The pretend page knows where to come back to (the page's own path): it takes no URL from the query, so it
        # can't be made to redirect anywhere else.
        return self.checkout_path


def _token(request: Any) -> str:
    header = request.headers.get("authorization") or ""
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    return token or request.cookies.get(TOKEN_COOKIE) or ""


def _user(request: Any) -> DemoUser | None:
    return USERS.get(_token(request))


def _closing(
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]], close: Callable[[], None]
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    # The WorkOS client's connections are closed when the app shuts down, after the app's own shutdown.
    @asynccontextmanager
    async def closing(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            yield state
        close()

    return closing


def mount_admin(
    app: Any, *, store: EventStore, auditor: Auditor, emulator: WorkOSEmulator, prefix: str = "/admin"
) -> str:
    """Mount the page into the demo's FastAPI `app` under `prefix`; returns the page's path."""
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route

    from ..admin.starlette import audit_logs_router

    for organization_id in ORGANIZATIONS:
        emulator.add_organization(organization_id)
    page_path = f"{prefix}/audit-logs"

    def is_admin(request: Any) -> bool:
        return _token(request) in DEMO_ADMINS and _user(request) is not None

    def organization(request: Any) -> str | None:
        user = _user(request)
        return user.organization_id if user is not None else None

    def actor(request: Any) -> Any:
        user = _user(request)
        return user.actor() if user is not None else None

    def organization_name(request: Any) -> str | None:
        user = _user(request)
        return ORGANIZATIONS.get(user.organization_id) if user is not None else None

    workos = workos_client_factory(emulator.api_key, emulator.url)
    billing = DemoBilling({ACME}, checkout_path=f"{prefix}/demo-checkout")
    router = audit_logs_router(
        is_admin=is_admin,
        organization=organization,
        actor=actor,
        organization_name=organization_name,
        entitlements=billing,
        # One process, one run: a random key is enough (a real app reads one shared by all its workers).
        secret_key=secrets.token_urlsafe(32),
        store=store,
        workos=workos,
        auditor=auditor,
        price_note=PRICE_NOTE,
    )

    async def demo_login(request: Request) -> Response:
        token = request.query_params.get("token", "")
        if token not in USERS:
            return Response("unknown demo token", status_code=400, media_type="text/plain")
        response = RedirectResponse(page_path, status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, path="/", httponly=True, samesite="lax")
        return response

    async def demo_checkout(request: Request) -> Response:
        # Stripe Checkout's stand-in. The organization is the signed-in admin's, never one named in the request.
        user = _user(request)
        if not is_admin(request) or user is None:
            return Response("only an organization admin can subscribe", status_code=403, media_type="text/plain")
        if request.method == "POST":
            billing.activate(user.organization_id)
            return RedirectResponse(f"{page_path}?checkout=success", status_code=303)
        name = escape(ORGANIZATIONS[user.organization_id])
        return HTMLResponse(
            f"<!doctype html><title>Demo checkout</title><h1>Demo checkout</h1>"
            f"<p>Audit Logging add-on for {name}. {escape(PRICE_NOTE)}</p>"
            "<p>A stand-in for Stripe Checkout: no card, nothing is charged.</p>"
            f'<form method="post"><button type="submit">Pay (demo)</button></form>'
            f'<p><a href="{page_path}?checkout=cancelled">Cancel</a></p>'
        )

    router.routes.append(Route("/demo-login", demo_login, methods=["GET"]))
    router.routes.append(Route("/demo-checkout", demo_checkout, methods=["GET", "POST"]))
    app.mount(prefix, router)
    app.router.lifespan_context = _closing(app.router.lifespan_context, workos.close)
    return page_path
