"""Turns what the request path handed off (a finished `RequestContext`, or a `PendingEvent`) into a validated,
redacted, enriched `AuditEvent`. Runs in the dispatcher thread only."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..context import PendingEvent, RequestContext
from ..events import (
    MAX_METADATA_KEYS,
    Actor,
    AuditEvent,
    EventContext,
    EventError,
    RequestInfo,
    Target,
    coerce_metadata,
    new_event_id,
    truncate,
)
from .redact import Redactor

if TYPE_CHECKING:
    from ..events import GeoInfo

__all__ = ["MAX_USER_AGENT_LENGTH", "EventBuilder", "Validator"]

#: WorkOS documents no limit for context.user_agent; a 200 KB header must not make the whole event fail, so the
#: raw string is cut here (the parsed form comes from the first 1,024 characters too).
MAX_USER_AGENT_LENGTH: Final = 1024

Validator = Callable[[AuditEvent], None]


class EventBuilder:
    def __init__(
        self,
        redactor: Redactor,
        validators: Sequence[Validator] = (),
        geo_metadata: Callable[[GeoInfo | None], Mapping[str, Any]] | None = None,
    ) -> None:
        self.redactor = redactor
        self.validators = list(validators)
        self.geo_metadata = geo_metadata

    def build(self, item: RequestContext | PendingEvent) -> AuditEvent:
        """The event, or `EventError` (with the field and why) when it can't be delivered anywhere."""
        event = self._from_request(item) if isinstance(item, RequestContext) else self._from_pending(item)
        event = event.validated(self._clean)
        for validate in self.validators:
            validate(event)
        return event

    def _from_request(self, ctx: RequestContext) -> AuditEvent:
        spec = ctx.spec
        if spec is None:  # pragma: no cover - complete() hands off only contexts with a spec
            raise EventError("request has no audit spec")
        targets = spec.resolve_targets(ctx)
        if ctx.targets:
            targets.extend(ctx.targets)
        metadata: dict[str, Any] = {}
        declared = spec.resolve_metadata(ctx)
        if declared:
            metadata.update(declared)
        if ctx.metadata:
            metadata.update(ctx.metadata)
        if ctx.status >= 400:
            metadata.setdefault("http_status", ctx.status)
        return self._assemble(
            ctx, spec.action, ctx.actor, ctx.organization_id, targets, metadata, ctx.started_at, spec.version
        )

    def _from_pending(self, pending: PendingEvent) -> AuditEvent:
        ctx = pending.request
        actor = pending.actor if pending.actor is not None else (ctx.actor if ctx else None)
        organization = pending.organization_id or (ctx.organization_id if ctx else None)
        metadata = dict(pending.metadata) if pending.metadata else {}
        return self._assemble(
            ctx,
            pending.action,
            actor,
            organization,
            pending.targets or [],
            metadata,
            pending.occurred_at,
            pending.version,
        )

    def _assemble(
        self,
        ctx: RequestContext | None,
        action: str,
        actor: Actor | None,
        organization_id: str | None,
        targets: list[Target],
        metadata: dict[str, Any],
        occurred_at: float | dt.datetime | None,
        version: int | None,
    ) -> AuditEvent:
        if actor is None:
            raise EventError(f"{action}: no actor (call audit.actor() in the auth layer or configure actor=)")
        if not organization_id:
            raise EventError(f"{action}: no organization (call audit.organization() or configure organization=)")
        when = (
            occurred_at
            if isinstance(occurred_at, dt.datetime)
            else dt.datetime.fromtimestamp(time.time() if occurred_at is None else occurred_at, dt.UTC)
        )
        geo = user_agent_info = request = None
        location, user_agent = "unknown", None
        if ctx is not None:
            location = ctx.client_ip or "unknown"
            raw_agent = ctx.user_agent
            user_agent = truncate(raw_agent, MAX_USER_AGENT_LENGTH) if raw_agent else None
            geo = ctx.geo
            user_agent_info = ctx.user_agent_info
            request = RequestInfo(
                method=ctx.method,
                path=ctx.path,
                route=ctx.route_template(),
                status=ctx.status or None,
                peer=ctx.peer,
                request_id=ctx.header("x-request-id"),
            )
            if self.geo_metadata is not None and geo is not None:
                extra = {k: v for k, v in self.geo_metadata(geo).items() if k not in metadata}
                # Geo keys are a bonus: never the reason an event exceeds WorkOS's 50-key limit.
                if len(metadata) + len(extra) <= MAX_METADATA_KEYS:
                    metadata.update(extra)
        return AuditEvent(
            id=new_event_id(when.timestamp()),
            organization_id=organization_id,
            action=action,
            occurred_at=when,
            actor=actor,
            targets=tuple(targets),
            context=EventContext(location=location, user_agent=user_agent),
            metadata=metadata,
            version=version,
            geo=geo,
            user_agent=user_agent_info,
            request=request,
        )

    def _clean(self, metadata: Mapping[str, Any] | None, where: str) -> Mapping[str, Any]:
        # Redact first: a secret nested in a dict must go before coercion turns the dict into a JSON string.
        return coerce_metadata(self.redactor(metadata), where)
