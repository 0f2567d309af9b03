"""Who has the Audit Logging add-on: the `Entitlements` protocol, its status value, and an allow-list implementation.

The admin page asks `status()` (to show the banner, the portal buttons, or "your subscription ends on ..."); the
delivery gate (`admin.gate`) asks `is_active()` for every event. `StripeEntitlements` (`admin.stripe_entitlements`)
answers from Stripe; `StaticEntitlements` from a set the app keeps (tests, demos, apps that bill elsewhere).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "CheckoutProvider",
    "EntitlementStatus",
    "Entitlements",
    "EntitlementsUnavailable",
    "StaticEntitlements",
    "WebhookError",
]


@dataclass(frozen=True, slots=True)
class EntitlementStatus:
    """An organization's add-on, as the page shows it.

    `active`: the add-on is paid for right now. `cancel_at_period_end`: it was cancelled and stays active until
    `current_period_end` (cancellation takes effect at the end of the billing period, no refunds).
    `current_period_end`: the end of the paid period (UTC), when known.
    """

    active: bool
    cancel_at_period_end: bool = False
    current_period_end: dt.datetime | None = None

    def to_dict(self) -> dict[str, object]:
        end = self.current_period_end
        return {
            "active": self.active,
            "cancel_at_period_end": self.cancel_at_period_end,
            "current_period_end": end.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if end else None,
        }


INACTIVE = EntitlementStatus(active=False)


class EntitlementsUnavailable(Exception):
    """The answer is unknown right now (billing provider unreachable and nothing cached): try again later.

    Callers must not read it as "inactive": the page says "try again", the delivery gate retries the event.
    """


class WebhookError(ValueError):
    """A billing webhook that must be answered 400: bad signature, stale timestamp, unreadable body, or no secret."""


class Entitlements(Protocol):
    """What the admin page and the delivery gate need to know about an organization's add-on."""

    def is_active(self, organization_id: str) -> bool:
        """True while the organization's Audit Logging add-on is paid for."""
        ...

    def status(self, organization_id: str) -> EntitlementStatus:
        """The add-on's state, for the page (may raise `EntitlementsUnavailable`)."""
        ...


@runtime_checkable
class CheckoutProvider(Protocol):
    """Entitlements that can sell the add-on: the page's Subscribe Now button sends the admin to `checkout_url`."""

    def checkout_url(self, organization_id: str, success_url: str, cancel_url: str) -> str: ...


class StaticEntitlements:
    """An allow-list of organizations with an active add-on; thread-safe, changeable at run time.

    `StaticEntitlements({"org_1"})`; `activate("org_2", cancel_at_period_end=True, current_period_end=...)` shows the
    page's "ends on" notice.
    """

    def __init__(self, active: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, EntitlementStatus] = {org: EntitlementStatus(active=True) for org in active}

    def activate(
        self,
        organization_id: str,
        *,
        cancel_at_period_end: bool = False,
        current_period_end: dt.datetime | None = None,
    ) -> None:
        status = EntitlementStatus(True, cancel_at_period_end, current_period_end)
        with self._lock:
            self._status[organization_id] = status

    def deactivate(self, organization_id: str) -> None:
        with self._lock:
            self._status.pop(organization_id, None)

    def status(self, organization_id: str) -> EntitlementStatus:
        with self._lock:
            return self._status.get(organization_id, INACTIVE)

    def is_active(self, organization_id: str) -> bool:
        return self.status(organization_id).active
