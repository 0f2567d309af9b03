"""WorkOS Admin Portal links for the page's two buttons, and the audit event that opening one records.

A portal link is a bearer credential: for its five minutes, whoever holds it administers the organization's audit
logs and log streams. So it is generated only on a POST from an admin, handed straight to the browser in a 303
(`Cache-Control: no-store`), and never logged, cached, stored, nor put in an event.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..catalog import events as catalog_events
from ..catalog import targets as catalog_targets
from ..context import audit
from ..events import Actor

if TYPE_CHECKING:
    from workos import WorkOSClient

    from ..auditor import Auditor

__all__ = [
    "PORTAL_INTENTS",
    "CachedWorkOSClient",
    "PortalAuditError",
    "PortalLinkError",
    "PortalLinks",
    "WorkOSClientFactory",
    "record_portal_access",
    "workos_client_factory",
]

#: The page's buttons: "View Audit Logs" and "Configure Log Streams".
PORTAL_INTENTS: Final = ("audit_logs", "log_streams")

WorkOSClientFactory = Callable[[], "WorkOSClient"]


class PortalLinkError(Exception):
    """WorkOS did not give a link (unreachable, key refused, organization unknown): the page says so."""


class PortalAuditError(Exception):
    """The portal access cannot be recorded (no actor known), so no link is handed out: access must be audited."""


class CachedWorkOSClient:
    """A factory of one `WorkOSClient` per process (`WORKOS_API_KEY` / `WORKOS_BASE_URL` when not given).

    The SDK's own retries sleep for minutes on 429/5xx; an admin waiting on a button gets one attempt and an error
    page instead, so `max_retries=0`. One client per process: its connection pool must not cross a fork.
    `close()` releases the current one (the next call makes another).
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, timeout: float = 10.0) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self._lock = threading.Lock()
        self._client: WorkOSClient | None = None
        self._pid = 0

    def __call__(self) -> WorkOSClient:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                from workos import WorkOSClient

                key = self.api_key or os.environ.get("WORKOS_API_KEY")
                if not key:
                    raise PortalLinkError("WorkOS is not configured (no API key)")
                # A client inherited from the parent process is dropped, not closed: its sockets are the parent's.
                self._client = WorkOSClient(
                    api_key=key,
                    base_url=self.base_url or os.environ.get("WORKOS_BASE_URL") or None,
                    request_timeout=self.timeout,  # type: ignore[arg-type]  # typed int, used as float
                    max_retries=0,
                )
                self._pid = os.getpid()
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.close()


def workos_client_factory(
    api_key: str | None = None, base_url: str | None = None, *, timeout: float = 10.0
) -> CachedWorkOSClient:
    """`CachedWorkOSClient(api_key, base_url, timeout=timeout)`: pass it as the page's `workos`."""
    return CachedWorkOSClient(api_key, base_url, timeout=timeout)


class PortalLinks:
    """Generates portal links through the `workos` SDK (`client.admin_portal.generate_link`).

    `client`: a `WorkOSClient`, or a factory returning one (`workos_client_factory(...)`); None: the factory on the
    SDK's environment variables.
    """

    def __init__(self, client: WorkOSClient | WorkOSClientFactory | None = None) -> None:
        self._factory: WorkOSClientFactory
        self._owned: CachedWorkOSClient | None = None
        if client is None:
            self._factory = self._owned = workos_client_factory()
        elif callable(client):
            self._factory = client
        else:
            fixed = client
            self._factory = lambda: fixed

    def generate(self, organization_id: str, intent: str) -> str:
        """A fresh link for `intent` ("audit_logs" or "log_streams"); `PortalLinkError` if WorkOS gives none."""
        if intent not in PORTAL_INTENTS:
            raise ValueError(f"unknown portal intent {intent!r}")
        from workos._errors import WorkOSError

        try:
            response = self._factory().admin_portal.generate_link(organization=organization_id, intent=intent)
        except WorkOSError as exc:
            # The error's class says enough; its text may echo the request, never worth logging here.
            raise PortalLinkError(f"WorkOS did not generate a portal link: {type(exc).__name__}") from None
        return response.link

    def close(self) -> None:
        """Close the client this object made itself (a client or factory passed in belongs to the caller)."""
        if self._owned is not None:
            self._owned.close()


def record_portal_access(
    intent: str,
    *,
    organization_id: str,
    organization_name: str | None,
    actor: Actor | None,
    source: str,
    auditor: Auditor | None = None,
) -> None:
    """Record ``audit_logs.create_management_portal_url`` / ``log_streams.create_management_portal_url``.

    Inside a request the audit middleware handles, the event inherits the request's context (IP, user agent) and,
    when `actor` is None, its actor. Outside one it goes to `auditor` (default: the last Auditor created) and needs
    `actor`. `PortalAuditError` when no actor can be known: the caller must then refuse the link.
    """
    event = catalog_events.portal_link(
        intent, organization=catalog_targets.organization(organization_id, organization_name), source=source
    )
    if audit.active:
        ctx = audit.request
        if actor is None and ctx.actor is None and ctx.auditor.actor_resolver is None:
            raise PortalAuditError("no actor for the portal access event: give the page an actor hook")
        event.record(actor=actor, organization=organization_id)
        return
    if actor is None:
        raise PortalAuditError("no actor for the portal access event: give the page an actor hook")
    if auditor is None:
        from ..auditor import default_auditor

        auditor = default_auditor()
    auditor.record(
        event.action, actor=actor, organization=organization_id, targets=event.targets, metadata=event.metadata
    )
