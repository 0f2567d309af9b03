"""Turns what the request path handed off (a finished `RequestContext`, or a `PendingEvent`) into a validated,
redacted, enriched `AuditEvent`. Runs in the dispatcher thread only."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..context import PendingEvent, RequestContext
from ..events import (
    MAX_ID_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_NAME_LENGTH,
    MAX_TYPE_LENGTH,
    Actor,
    AuditEvent,
    EventContext,
    EventError,
    RequestInfo,
    Target,
    fit_metadata,
    new_event_id,
    original_metadata,
    truncate,
)
from .redact import Redactor

if TYPE_CHECKING:
    from ..events import GeoInfo

__all__ = ["MAX_USER_AGENT_LENGTH", "EventBuilder", "Validator"]

_JSON_OPENERS: Final = frozenset("{[")
_KNOWN_KEYS_LIMIT: Final = 4096
_VALID_KEY: Final = re.compile(r"^[A-Za-z0-9_-]{0,40}$")

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
        #: metadata keys seen valid and not secret (bounded: hostile keys must not grow it for ever)
        self._known_keys: set[str] = set()
        self.geo_metadata = geo_metadata

    def build(self, item: RequestContext | PendingEvent) -> AuditEvent:
        """The event, or `EventError` (with the field and why) when it can't be delivered anywhere."""
        if isinstance(item, RequestContext):
            event, declared = self._from_request(item)
        else:
            event, declared = self._from_pending(item), ()
        originals: dict[str, Any] = {}

        def clean(metadata: Mapping[str, Any] | None, where: str) -> Mapping[str, Any]:
            if type(metadata) is dict and self._fits(metadata):
                return metadata
            # Redact first: a secret nested in a dict must go before coercion turns the dict into a JSON string.
            redacted = self.redactor(metadata)
            fitted, lossy = fit_metadata(redacted, where, declared if where == "event" else ())
            if lossy:  # the local store keeps what WorkOS's limits made us cut or fold
                originals[where] = original_metadata(redacted)
            return fitted

        event = event.validated(clean)
        if originals:
            event = dataclasses.replace(event, original_metadata=originals)
        for validate in self.validators:
            validate(event)
        return event

    def _fits(self, metadata: dict[Any, Any]) -> bool:
        """Whether `metadata` is already within WorkOS's rules and holds no secret: the common case, told apart
        with no copy and no call per value. Anything unusual (a long or non-ASCII string, JSON text, a nested
        value, an unknown key) takes the full path: redaction, then `fit_metadata`."""
        if len(metadata) > MAX_METADATA_KEYS:
            return False
        known = self._known_keys
        for key, value in metadata.items():
            if key not in known:
                if type(key) is not str or _VALID_KEY.match(key) is None or self.redactor.is_secret(key):
                    return False
                if len(known) < _KNOWN_KEYS_LIMIT:
                    known.add(key)
            kind = type(value)
            if kind is str:
                if len(value) > MAX_METADATA_VALUE_LENGTH or not value.isascii() or value[:1] in _JSON_OPENERS:
                    return False
            elif kind is not int and kind is not bool and not (kind is float and math.isfinite(value)):
                return False
        return True

    def _from_request(self, ctx: RequestContext) -> tuple[AuditEvent, Sequence[str]]:
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
        event = self._assemble(
            ctx, spec.action, ctx.actor, ctx.organization_id, targets, metadata, ctx.started_at, spec.version
        )
        # The keys the route declares (and the status) come first when the metadata must be cut to WorkOS's 50.
        return event, [*(declared or ()), "http_status"]

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
        if isinstance(occurred_at, dt.datetime):
            when, timestamp = occurred_at, occurred_at.timestamp()
        else:
            timestamp = time.time() if occurred_at is None else occurred_at
            when = dt.datetime.fromtimestamp(timestamp, dt.UTC)
        geo = user_agent_info = request = None
        location, user_agent = "unknown", None
        if ctx is not None:
            location = ctx.client_ip or "unknown"
            raw_agent = ctx.user_agent
            user_agent = truncate(raw_agent, MAX_USER_AGENT_LENGTH) if raw_agent else None
            geo = ctx.geo
            user_agent_info = ctx.user_agent_info
            # Positional: a dataclass's __init__ is measurably cheaper without keywords, once per event.
            request = RequestInfo(
                ctx.method, ctx.path, ctx.route_template(), ctx.status or None, ctx.peer, ctx.request_id
            )
            if self.geo_metadata is not None and geo is not None:
                extra = {k: v for k, v in self.geo_metadata(geo).items() if k not in metadata}
                # Geo keys are a bonus: never the reason an event exceeds WorkOS's 50-key limit.
                if len(metadata) + len(extra) <= MAX_METADATA_KEYS:
                    metadata.update(extra)
        return AuditEvent(
            new_event_id(timestamp),
            organization_id,
            action,
            when,
            actor,
            tuple(targets),
            EventContext(location, user_agent),
            metadata,
            version,
            geo,
            user_agent_info,
            request,
        )

    def describe(self, item: RequestContext | PendingEvent, event_id: str, error: str) -> dict[str, Any]:
        """Everything known of an event that could not be built, for its dead letter: the same fields as
        `AuditEvent.to_dict()` as far as they exist, redacted, plus ``error``. Never raises."""
        ctx = item if isinstance(item, RequestContext) else item.request
        out: dict[str, Any] = {"id": event_id, "error": error}
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("action", lambda: _action(item)),
            ("organization_id", lambda: self._identity(item)[1]),
            ("occurred_at", lambda: _when(item.started_at if isinstance(item, RequestContext) else item.occurred_at)),
            ("actor", lambda: self._entity(self._identity(item)[0])),
            ("targets", lambda: [self._entity(t) for t in self._targets(item)]),
            ("metadata", lambda: original_metadata(self.redactor(self._metadata(item)))),
        ]
        if ctx is not None:
            steps += [
                ("context", lambda: {"location": ctx.client_ip or "unknown", "user_agent": _agent(ctx.user_agent)}),
                ("request", lambda: {"method": ctx.method, "path": ctx.path, "status": ctx.status or None}),
            ]
        for name, step in steps:
            try:
                out[name] = step()
            except Exception as exc:  # a resolver that fails is likely why we are here: note it, keep the rest
                out[name] = None
                out.setdefault("unresolved", {})[name] = repr(exc)[:500]
        return out

    @staticmethod
    def _identity(item: RequestContext | PendingEvent) -> tuple[Actor | None, str | None]:
        if isinstance(item, RequestContext):
            return item.actor, item.organization_id
        ctx = item.request
        actor = item.actor if item.actor is not None else (ctx.actor if ctx else None)
        return actor, item.organization_id or (ctx.organization_id if ctx else None)

    @staticmethod
    def _targets(item: RequestContext | PendingEvent) -> list[Target]:
        if isinstance(item, PendingEvent):
            return list(item.targets or ())
        targets = item.spec.resolve_targets(item) if item.spec else []
        return targets + list(item.targets or ())

    @staticmethod
    def _metadata(item: RequestContext | PendingEvent) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if isinstance(item, RequestContext):
            metadata.update((item.spec.resolve_metadata(item) if item.spec else None) or {})
        metadata.update(item.metadata or {})
        return metadata

    def _entity(self, entity: Actor | Target | None) -> dict[str, Any] | None:
        if entity is None:
            return None
        if not isinstance(entity, Actor | Target):
            return {"invalid": truncate(repr(entity), MAX_NAME_LENGTH)}
        data: dict[str, Any] = {"id": _short(entity.id, MAX_ID_LENGTH), "type": _short(entity.type, MAX_TYPE_LENGTH)}
        if entity.name is not None:
            data["name"] = _short(entity.name, MAX_NAME_LENGTH)
        if entity.metadata:
            data["metadata"] = original_metadata(self.redactor(entity.metadata))
        return data


def _short(value: object, limit: int) -> str:
    return truncate(value if isinstance(value, str) else repr(value), limit)


def _action(item: RequestContext | PendingEvent) -> str | None:
    if isinstance(item, PendingEvent):
        return item.action
    return item.spec.action if item.spec else None


def _when(occurred_at: float | dt.datetime | None) -> str:
    if isinstance(occurred_at, dt.datetime):
        return occurred_at.isoformat()
    return dt.datetime.fromtimestamp(time.time() if occurred_at is None else occurred_at, dt.UTC).isoformat()


def _agent(raw: str | None) -> str | None:
    return truncate(raw, MAX_USER_AGENT_LENGTH) if raw else None
