"""`AuditLogsPage`: the page's logic, framework-neutral: an `AdminRequest` in, an `AdminResponse` out.

Order of checks on every admin route: identity (403 unless the hooks recognised an admin of an organization), then
CSRF for POSTs (403), then the add-on where the route needs it, then the work. The organization is always
`identity.organization_id`; no query parameter or form field can name another.

Blocking work (store reads, Stripe, WorkOS) happens here, so the ASGI router runs `handle` in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ..context import NoRequestError
from ..store import EventStore, StoreError
from ..store.export import iter_csv
from . import render
from .csrf import COOKIE_NAME, FIELD_NAME, CsrfProtect
from .entitlements import CheckoutProvider, Entitlements, EntitlementStatus, EntitlementsUnavailable, WebhookError
from .filters import filter_values, parse_filters
from .portal import PORTAL_INTENTS, PortalAuditError, PortalLinkError, PortalLinks, record_portal_access
from .wire import AdminRequest, AdminResponse, Identity

if TYPE_CHECKING:
    from ..auditor import Auditor

__all__ = ["MAX_WEBHOOK_BYTES", "AuditLogsPage", "WebhookReceiver"]

logger = logging.getLogger("centure_audit_middleware.admin")

#: Stripe's event payloads are a few KB; anything near this is not one.
MAX_WEBHOOK_BYTES: Final = 1024 * 1024
DEFAULT_PAGE_SIZE: Final = 50
MAX_API_LIMIT: Final = 200
DEFAULT_CHECKOUT_REFRESH_INTERVAL: Final = 30.0
_JSON: Final = "application/json"
_CSV: Final = "text/csv; charset=utf-8"
_UNSAFE_FILENAME: Final = re.compile(r"[^A-Za-z0-9_-]+")

# On every admin response: portal links, events and tokens must not be kept by the browser or any shared cache,
# nor framed (clickjacking on Subscribe Now), nor sniffed, nor leak this page's URL (cursor, filters) as a Referer.
_SECURITY_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


@runtime_checkable
class WebhookReceiver(Protocol):
    """Entitlements that learn from Stripe webhooks (`StripeEntitlements`)."""

    def handle_webhook(self, payload: bytes, signature: str | None) -> str: ...


class AuditLogsPage:
    """The Audit Logs page and its JSON API; `starlette.audit_logs_router` and `flask.audit_logs_blueprint` serve it.

    - `entitlements`: who has the add-on (`StripeEntitlements`, `StaticEntitlements`, your own).
    - `secret_key`: signs the CSRF tokens (at least 16 bytes; the same on every worker).
    - `store`: the local event store: enables the event table, the detail view, CSV export and the events API.
    - `portal`: WorkOS portal links (`PortalLinks(client or factory)`); default: the SDK's environment variables.
    - `auditor`: records portal access when the request is not inside the audit middleware.
    - `subscribe_url`: where Subscribe Now leads when `entitlements` cannot sell (your own billing page).
    - `public_url`: ``https://app.example.com``: the origin for Stripe's return URLs; default: the request's own
      origin (set it when a proxy rewrites Host, so a forged Host header can't choose where Stripe sends admins).
    - `price_note`: a line under the banner (e.g. the add-on's price).
    - `checkout_refresh_interval`: seconds; back from Checkout (``?checkout=success``), the page reads the
      organization's subscription from the billing provider afresh at most once per interval (per process), and
      from the cache otherwise: anyone can reload that URL, and each read costs a billing API call (Stripe's rate
      limit is shared with the rest of the app). The webhook updates the cache as soon as Stripe sends it.
    """

    def __init__(
        self,
        *,
        entitlements: Entitlements,
        secret_key: str | bytes,
        store: EventStore | None = None,
        portal: PortalLinks | None = None,
        auditor: Auditor | None = None,
        subscribe_url: str | None = None,
        public_url: str | None = None,
        price_note: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        csrf_max_age: float = 8 * 3600,
        checkout_refresh_interval: float = DEFAULT_CHECKOUT_REFRESH_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.entitlements = entitlements
        self.csrf = CsrfProtect(secret_key, max_age=csrf_max_age, clock=clock)
        self.store = store
        self.portal = portal or PortalLinks()
        self.auditor = auditor
        self.subscribe_url = subscribe_url
        self.public_url = public_url.rstrip("/") if public_url else None
        self.price_note = price_note
        self.page_size = page_size
        self.checkout_refresh_interval = checkout_refresh_interval
        self._clock = clock
        self._refresh_lock = threading.Lock()
        #: organization -> when `?checkout=success` last made it read the billing provider (on `clock`).
        self._checkout_refreshes: dict[str, float] = {}
        self._handlers: dict[str, Callable[[AdminRequest, Identity], AdminResponse]] = {
            "page": self._page,
            "subscribe": self._subscribe,
            "portal": self._portal,
            "event": self._event,
            "export_csv": self._export_csv,
            "api_events": self._api_events,
            "api_event": self._api_event,
            "api_status": self._api_status,
        }

    # -- entry point ---------------------------------------------------------------------------------------------
    def handle(self, req: AdminRequest) -> AdminResponse:
        try:
            response = self._dispatch(req)
        except Exception:
            # No value of ours is in the message: a portal link only ever lives in the 303 built after the last step
            # that can fail.
            logger.exception("audit logs page: %s failed", req.route)
            response = self._error(req, 500, "Something went wrong", "The request could not be completed.")
        return self._finish(response)

    def too_large(self) -> AdminResponse:
        """The answer to a POST whose body is over the adapter's limit (refused before it is read): built here, so it
        carries the same headers as every other admin response."""
        return self._finish(_json(413, {"error": "too_large"}))

    def _dispatch(self, req: AdminRequest) -> AdminResponse:
        if req.route == "stripe_webhook":
            return self._stripe_webhook(req)
        handler = self._handlers.get(req.route)
        if handler is None:
            return self._error(req, 404, "Not found", "There is no such page.")
        identity = req.identity
        if identity is None:
            return self._error(req, 403, "Forbidden", "Only organization administrators can open Audit Logs.")
        if req.method == "POST" and not self.csrf.verify(
            req.form.get(FIELD_NAME),
            req.cookies.get(COOKIE_NAME),
            organization_id=identity.organization_id,
            session=identity.session,
            headers=req.headers,
        ):
            return self._error(
                req, 403, "Form expired", "This form has expired or did not come from this page. Reload the page."
            )
        return handler(req, identity)

    def _finish(self, response: AdminResponse) -> AdminResponse:
        present = {name.lower() for name, _ in response.headers}
        response.headers.extend(h for h in _SECURITY_HEADERS if h[0].lower() not in present)
        if response.content_type.startswith("text/html"):
            response.headers.append(("Content-Security-Policy", render.CONTENT_SECURITY_POLICY))
        return response

    # -- helpers -------------------------------------------------------------------------------------------------
    @staticmethod
    def _base(req: AdminRequest) -> str:
        return f"{req.root}/audit-logs"

    @staticmethod
    def _is_api(req: AdminRequest) -> bool:
        return req.route.startswith("api_") or req.route == "stripe_webhook"

    def _error(self, req: AdminRequest, status: int, title: str, message: str) -> AdminResponse:
        if self._is_api(req):
            return _json(status, {"error": title.lower().replace(" ", "_"), "message": message})
        back = None if title == "Forbidden" else self._base(req)  # nothing to go back to for a non-admin
        return AdminResponse(status, render.error_page(title, message, back=back).encode())

    def _csrf_cookie(self, req: AdminRequest) -> tuple[str, list[tuple[str, str]]]:
        """The browser's CSRF cookie value, issuing one (and its Set-Cookie header) when it has none."""
        current = req.cookies.get(COOKIE_NAME)
        if self.csrf.valid_cookie_value(current):
            assert current is not None
            return current, []
        value = self.csrf.new_cookie_value()
        # Scoped to the page's URLs; HttpOnly: no script needs it; Strict: never sent on a cross-site request.
        cookie = f"{COOKIE_NAME}={value}; Path={self._base(req)}; HttpOnly; SameSite=Strict"
        if self._origin(req).startswith("https:"):  # the public URL counts: TLS may end at a proxy
            cookie += "; Secure"
        return value, [("Set-Cookie", cookie)]

    def _status(self, identity: Identity) -> EntitlementStatus:
        return self.entitlements.status(identity.organization_id)

    def _origin(self, req: AdminRequest) -> str:
        return self.public_url or req.origin

    def _refresh_after_checkout(self, organization_id: str) -> None:
        """Back from Checkout: have the next status read ask the billing provider, once per interval at most."""
        invalidate = getattr(self.entitlements, "invalidate", None)
        if not callable(invalidate):
            return
        now = self._clock()
        interval = self.checkout_refresh_interval
        with self._refresh_lock:
            last = self._checkout_refreshes.get(organization_id)
            if last is not None and now - last < interval:
                return
            # Only the organizations still within their interval are remembered: the map stays small.
            self._checkout_refreshes = {org: t for org, t in self._checkout_refreshes.items() if now - t < interval}
            self._checkout_refreshes[organization_id] = now
        invalidate(organization_id)

    def _gate(self, req: AdminRequest, identity: Identity) -> AdminResponse | None:
        """A refusal unless the organization has the add-on and a store to read."""
        if self.store is None:
            return self._error(req, 404, "Not found", "This installation keeps no local copy of the audit logs.")
        return self._require_active(req, identity)

    def _require_active(self, req: AdminRequest, identity: Identity) -> AdminResponse | None:
        """A refusal unless the organization's add-on is active (503 when that can't be known now)."""
        try:
            active = self._status(identity).active
        except EntitlementsUnavailable:
            return self._error(req, 503, "Try again later", "The subscription status is unavailable right now.")
        if not active:
            return self._error(
                req, 403, "Subscription required", "The Audit Logging add-on is not active for this organization."
            )
        return None

    # -- the page ------------------------------------------------------------------------------------------------
    def _page(self, req: AdminRequest, identity: Identity) -> AdminResponse:
        cookie, headers = self._csrf_cookie(req)
        org = identity.organization_id
        notices: list[tuple[str, str]] = []
        checkout = req.query.get("checkout")
        if checkout == "success":
            self._refresh_after_checkout(org)
        status: EntitlementStatus | None
        http_status = 200
        try:
            status = self._status(identity)
        except EntitlementsUnavailable:
            status = None
            http_status = 503
            notices.append(("error", "The subscription status is unavailable right now. Reload the page in a minute."))
        if status is not None and not status.active and checkout == "success":
            notices.append(("info", "Thank you! Your subscription is being activated; reload this page in a minute."))
        elif checkout == "cancelled" and status is not None and not status.active:
            notices.append(("info", "Checkout was cancelled; nothing was charged."))
        model = render.PageModel(
            base=self._base(req),
            organization=identity.organization_name or org,
            status=status,
            csrf_token=self.csrf.token(cookie, organization_id=org, session=identity.session),
            can_subscribe=isinstance(self.entitlements, CheckoutProvider) or self.subscribe_url is not None,
            price_note=self.price_note,
            notices=notices,
            has_store=self.store is not None,
        )
        if self.store is not None and status is not None and status.active:
            http_status = self._fill_events(req, identity, model)
        return AdminResponse(http_status, render.main_page(model).encode(), headers=headers)

    def _fill_events(self, req: AdminRequest, identity: Identity, model: render.PageModel) -> int:
        assert self.store is not None
        model.filters = filter_values(req.query)
        model.paged = bool(req.query.get("cursor"))
        try:
            query = parse_filters(req.query, identity.organization_id, limit=self.page_size)
        except ValueError as exc:
            model.filter_error = str(exc)
            return 400
        try:
            page = self.store.query(query)
        except StoreError:
            model.filter_error = "The event store is unavailable right now."
            return 503
        model.events = page.events
        model.next_cursor = page.next_cursor
        return 200

    def _event(self, req: AdminRequest, identity: Identity) -> AdminResponse:
        refused = self._gate(req, identity)
        if refused is not None:
            return refused
        assert self.store is not None
        event = self.store.get(identity.organization_id, req.params.get("event_id", ""))
        if event is None:
            return self._error(req, 404, "Not found", "There is no such event in this organization.")
        page = render.event_page(self._base(req), identity.organization_name or identity.organization_id, event)
        return AdminResponse(200, page.encode())

    # -- POST actions --------------------------------------------------------------------------------------------
    def _subscribe(self, req: AdminRequest, identity: Identity) -> AdminResponse:
        org = identity.organization_id
        base = self._base(req)
        try:
            if self._status(identity).active:
                return _redirect(base)
        except EntitlementsUnavailable:
            return self._error(req, 503, "Try again later", "The subscription status is unavailable right now.")
        if isinstance(self.entitlements, CheckoutProvider):
            page_url = self._origin(req) + base
            try:
                url = self.entitlements.checkout_url(
                    org, success_url=f"{page_url}?checkout=success", cancel_url=f"{page_url}?checkout=cancelled"
                )
            except Exception as exc:
                logger.error("audit logs page: checkout failed for %s: %s", org, type(exc).__name__)
                return self._error(req, 502, "Checkout unavailable", "Stripe checkout could not be started.")
            return _redirect(url)
        if self.subscribe_url is not None:
            return _redirect(self.subscribe_url)
        return self._error(req, 404, "Not found", "Subscriptions are not sold from this page.")

    def _portal(self, req: AdminRequest, identity: Identity) -> AdminResponse:
        intent = req.params.get("intent", "")
        if intent not in PORTAL_INTENTS:
            return self._error(req, 404, "Not found", "There is no such portal.")
        org = identity.organization_id
        refusal = self._require_active(req, identity)
        if refusal is not None:
            return refusal
        try:
            url = self.portal.generate(org, intent)
        except PortalLinkError:
            logger.error("audit logs page: WorkOS gave no %s portal link for %s", intent, org)
            return self._error(req, 502, "WorkOS unavailable", "The WorkOS portal could not be opened. Try again.")
        try:
            record_portal_access(
                intent,
                organization_id=org,
                organization_name=identity.organization_name,
                actor=identity.actor,
                source=self._base(req),
                auditor=self.auditor,
            )
        except (PortalAuditError, NoRequestError) as exc:
            # Unaudited access is worse than no access: the link is dropped (it expires unused).
            logger.error("audit logs page: portal access for %s not recorded, link withheld: %s", org, exc)
            return self._error(req, 500, "Not recorded", "The portal access could not be recorded, so it was refused.")
        return _redirect(url)

    # -- export and API ------------------------------------------------------------------------------------------
    def _export_csv(self, req: AdminRequest, identity: Identity) -> AdminResponse:
        refused = self._gate(req, identity)
        if refused is not None:
            return refused
        assert self.store is not None
        try:
            query = parse_filters(req.query, identity.organization_id, limit=self.page_size, with_cursor=False)
        except ValueError as exc:
            return self._error(req, 400, "Invalid filter", str(exc))
        day = dt.datetime.fromtimestamp(self._clock(), dt.UTC).strftime("%Y%m%d")
        name = _UNSAFE_FILENAME.sub("_", identity.organization_id)[:80]
        body: Iterator[bytes] = (chunk.encode("utf-8") for chunk in iter_csv(self.store, query))
        disposition = f'attachment; filename="audit-logs-{name}-{day}.csv"'
        return AdminResponse(200, body, _CSV, [("Content-Disposition", disposition)])

    def _api_events(self, req: AdminRequest, identity: Identity) -> AdminResponse:
        refused = self._gate(req, identity)
        if refused is not None:
            return refused
        assert self.store is not None
        try:
            limit = int(req.query.get("limit") or DEFAULT_PAGE_SIZE)
            if not 1 <= limit <= MAX_API_LIMIT:
                raise ValueError(f"limit must be from 1 to {MAX_API_LIMIT}")
            query = parse_filters(req.query, identity.organization_id, limit=limit)
        except ValueError as exc:
            return _json(400, {"error": "invalid_filter", "message": str(exc)})
        page = self.store.query(query)
        return _json(200, {"data": [e.to_dict() for e in page.events], "next_cursor": page.next_cursor})

    def _api_event(self, req: AdminRequest, identity: Identity) -> AdminResponse:
        refused = self._gate(req, identity)
        if refused is not None:
            return refused
        assert self.store is not None
        event = self.store.get(identity.organization_id, req.params.get("event_id", ""))
        if event is None:
            return _json(404, {"error": "not_found", "message": "There is no such event in this organization."})
        return _json(200, event.to_dict())

    def _api_status(self, req: AdminRequest, identity: Identity) -> AdminResponse:
        try:
            status = self._status(identity)
        except EntitlementsUnavailable:
            return _json(503, {"error": "unavailable", "message": "The subscription status is unavailable."})
        return _json(200, {"organization_id": identity.organization_id, **status.to_dict()})

    # -- Stripe --------------------------------------------------------------------------------------------------
    def _stripe_webhook(self, req: AdminRequest) -> AdminResponse:
        receiver = self.entitlements
        if not isinstance(receiver, WebhookReceiver) or req.method != "POST":
            return _json(404, {"error": "not_found"})
        if len(req.body) > MAX_WEBHOOK_BYTES:
            return _json(413, {"error": "too_large"})
        try:
            event_type = receiver.handle_webhook(req.body, req.headers.get("stripe-signature"))
        except WebhookError as exc:
            logger.warning("audit logs page: Stripe webhook refused: %s", exc)
            return _json(400, {"error": "invalid_webhook"})
        logger.info("audit logs page: Stripe webhook %s", event_type)
        return _json(200, {"received": True})


def _json(status: int, payload: Any) -> AdminResponse:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    return AdminResponse(status, body, _JSON)


def _redirect(url: str) -> AdminResponse:
    # 303: the browser follows with a GET whatever the form's method was. The Location may be a portal link: the
    # response carries no-store like every other, and nothing logs it.
    return AdminResponse(303, b"", "text/plain; charset=utf-8", [("Location", url)])
