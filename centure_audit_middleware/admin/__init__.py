"""The Audit Logs page for organization admins: subscription gate, WorkOS portal links, search and export.

- `admin.starlette.audit_logs_router(...)` (FastAPI / Starlette) and `admin.flask.audit_logs_blueprint(...)` serve
  the page (``/audit-logs``), its event detail view, CSV export, JSON API and the Stripe webhook.
- Entitlements say which organizations have the Audit Logging add-on: `StaticEntitlements` (an allow-list) or
  `StripeEntitlements` (Stripe Checkout, webhooks, a TTL cache; needs the ``stripe`` package).
- `EntitlementGate` keeps events of organizations without the add-on from reaching WorkOS.

Nothing here imports a web framework or the Stripe SDK until the module that needs it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .entitlements import (
    CheckoutProvider,
    Entitlements,
    EntitlementStatus,
    EntitlementsUnavailable,
    StaticEntitlements,
    WebhookError,
)
from .gate import NOT_ENTITLED, EntitledSink, EntitlementGate, GatePolicy, GateStats
from .portal import PORTAL_INTENTS, CachedWorkOSClient, PortalLinks, workos_client_factory
from .views import AuditLogsPage
from .wire import ROUTES

if TYPE_CHECKING:
    from .stripe_entitlements import StripeEntitlements

__all__ = [
    "NOT_ENTITLED",
    "PORTAL_INTENTS",
    "ROUTES",
    "AuditLogsPage",
    "CachedWorkOSClient",
    "CheckoutProvider",
    "EntitledSink",
    "EntitlementGate",
    "EntitlementStatus",
    "Entitlements",
    "EntitlementsUnavailable",
    "GatePolicy",
    "GateStats",
    "PortalLinks",
    "StaticEntitlements",
    "StripeEntitlements",
    "WebhookError",
    "workos_client_factory",
]


def __getattr__(name: str) -> Any:
    # The Stripe SDK is imported on first use: apps using StaticEntitlements don't need it installed.
    if name == "StripeEntitlements":
        from .stripe_entitlements import StripeEntitlements

        return StripeEntitlements
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
