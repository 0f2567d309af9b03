"""The framework-neutral request and response the page's logic works on, and its route table.

The Starlette router and the Flask blueprint each translate their framework's request into an `AdminRequest`
(calling the app's hooks on the framework's own request object) and an `AdminResponse` back; everything between is
plain Python, tested once for both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from ..events import Actor

__all__ = ["ROUTES", "AdminRequest", "AdminResponse", "Identity", "RouteSpec"]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route: `path` is relative to where the app mounts the router, with ``{name}`` parameters."""

    name: str
    method: str
    path: str
    #: False only for the Stripe webhook, which Stripe calls (signed) without any session.
    admin: bool = True


ROUTES: Final = (
    RouteSpec("page", "GET", "/audit-logs"),
    RouteSpec("subscribe", "POST", "/audit-logs/subscribe"),
    RouteSpec("portal", "POST", "/audit-logs/portal/{intent}"),
    RouteSpec("event", "GET", "/audit-logs/events/{event_id}"),
    RouteSpec("export_csv", "GET", "/audit-logs/export.csv"),
    RouteSpec("api_events", "GET", "/audit-logs/api/events"),
    RouteSpec("api_event", "GET", "/audit-logs/api/events/{event_id}"),
    RouteSpec("api_status", "GET", "/audit-logs/api/status"),
    RouteSpec("stripe_webhook", "POST", "/audit-logs/billing/stripe-webhook", admin=False),
)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking, as the app's hooks said: only ever built for an admin of `organization_id`."""

    organization_id: str
    organization_name: str | None = None
    actor: Actor | None = None
    #: The app's session id (binds CSRF tokens to one login), "" when the app gives none.
    session: str = ""


@dataclass(frozen=True, slots=True)
class AdminRequest:
    route: str
    method: str
    #: Path parameters of the route.
    params: Mapping[str, str]
    #: Query string, first value of each name.
    query: Mapping[str, str]
    #: Form fields of a POST (first value of each name).
    form: Mapping[str, str]
    cookies: Mapping[str, str]
    #: Lower-case names.
    headers: Mapping[str, str]
    #: The URL path the router is mounted at: "" at the app's root, "/settings" under a mount.
    root: str
    #: ``scheme://host[:port]`` of the request (or the configured public URL).
    origin: str
    #: None when the hooks did not recognise an admin with an organization (every admin route then answers 403).
    identity: Identity | None = None
    #: The raw body (the Stripe webhook verifies its signature over these exact bytes).
    body: bytes = b""


@dataclass(slots=True)
class AdminResponse:
    status: int
    body: bytes | Iterator[bytes] = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)
