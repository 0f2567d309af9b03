"""Turns what the request path handed off (a finished `RequestContext`, or a `PendingEvent`) into a validated,
redacted, enriched `AuditEvent`. Runs in the dispatcher thread only."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import orjson

from ..context import PendingEvent, RequestContext
from ..events import (
    _VALID_KEY,
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
    _plain,
    fit_metadata,
    new_event_id,
    original_metadata,
    truncate,
)
from .redact import Redactor

if TYPE_CHECKING:
    from ..events import GeoInfo, UserAgentInfo

__all__ = ["MAX_USER_AGENT_LENGTH", "EventBuilder", "Validator"]

_JSON_OPENERS: Final = frozenset("{[")
_KNOWN_KEYS_LIMIT: Final = 4096

#: WorkOS documents no limit for context.user_agent; a 200 KB header must not make the whole event fail, so the
#: raw string is cut here (the parsed form comes from the first 1,024 characters too).
MAX_USER_AGENT_LENGTH: Final = 1024

Validator = Callable[[AuditEvent], None]
_Draft = tuple[
    "RequestContext | None",
    str,
    "Actor | None",
    "str | None",
    "list[Target]",
    "dict[str, Any]",
    Any,
    "int | None",
    "Sequence[str]",
]
_E = TypeVar("_E", Actor, Target)
#: The key that marks a captured (not yet completed) event's JSON; no event's JSON has it.
_CAPTURED: Final = "captured"


class Enricher(Protocol):
    def locate(self, ip: str | None) -> GeoInfo | None: ...

    def parse_user_agent(self, user_agent: str | None) -> UserAgentInfo | None: ...


class EventBuilder:
    def __init__(
        self,
        redactor: Redactor,
        validators: Sequence[Validator] = (),
        geo_metadata: Callable[[GeoInfo | None], Mapping[str, Any]] | None = None,
        enricher: Enricher | None = None,
    ) -> None:
        self.redactor = redactor
        #: where `complete()` gets geolocation and parsed user agents (the Auditor); requests carry their own
        self.enricher = enricher
        self.validators = list(validators)
        #: metadata keys seen valid and not secret (bounded: hostile keys must not grow it for ever)
        self._known_keys: set[str] = set()
        self.geo_metadata = geo_metadata

    def build(self, item: RequestContext | PendingEvent) -> AuditEvent:
        """The event, or `EventError` (with the field and why) when it can't be delivered anywhere."""
        draft = self._draft(item)
        event = self._assemble(*draft[:-1])
        if not self._as_is(event):
            return self._finish(event, draft[-1])
        for validate in self.validators:
            validate(event)
        return event

    def _as_is(self, event: AuditEvent) -> bool:
        """Whether `event.validated(clean)` (see `_finish`) would return `event` itself: short ASCII identity
        fields, a tz-aware time, clean metadata everywhere. The common case, told apart without the closures,
        copies and calls of the full path, which takes anything else (and says what is wrong with it)."""
        organization_id, action, when = event.organization_id, event.action, event.occurred_at
        if not (
            type(organization_id) is str
            and organization_id
            and organization_id.isascii()
            and type(action) is str
            and action
            and action.isascii()
            and isinstance(when, dt.datetime)
            and (when.tzinfo is dt.UTC or when.utcoffset() is not None)
            and type(event.actor) is Actor
            and self._plain_entity(event.actor)
        ):
            return False
        for target in event.targets:
            if type(target) is not Target or not self._plain_entity(target):
                return False
        metadata = event.metadata
        return type(metadata) is dict and (not metadata or self._fits(metadata))

    def _plain_entity(self, entity: Actor | Target) -> bool:
        metadata = entity.metadata
        return (
            type(metadata) is dict
            and _plain(entity.id, entity.type, entity.name)
            and (not metadata or self._fits(metadata))
        )

    def capture(self, item: RequestContext | PendingEvent) -> tuple[str, str]:
        """(event id, JSON) of what the app knows of an event, redacted but neither fitted nor enriched: what a
        process in relay mode commits, so that the rest of the work (`complete`) is the relay's, not the app's.
        The id is fixed here, once, as for any event; `EventError` when there is no actor or organization."""
        ctx, action, actor, organization_id, targets, metadata, occurred_at, version, declared = self._draft(item)
        _require_identity(action, actor, organization_id)
        assert actor is not None  # for mypy: checked just above
        timestamp = occurred_at.timestamp() if isinstance(occurred_at, dt.datetime) else occurred_at or time.time()
        event_id = new_event_id(timestamp)
        data: dict[str, Any] = {
            _CAPTURED: 1,
            "id": event_id,
            "organization_id": organization_id,
            "action": action,
            "occurred_at": timestamp,
            "actor": self._captured_entity(actor),
            "targets": [self._captured_entity(t) for t in targets],
            "metadata": metadata if self._fits(metadata) else self.redactor(metadata),
            "version": version,
            "declared": list(declared),
        }
        if ctx is not None:
            agent = ctx.user_agent
            data["request"] = (
                ctx.client_ip,
                truncate(agent, MAX_USER_AGENT_LENGTH) if agent else None,
                ctx.method,
                ctx.path,
                ctx.route_template(),
                ctx.status or None,
                ctx.peer,
                ctx.request_id,
            )
        return event_id, _captured_json(data)

    def complete(self, data: Mapping[str, Any]) -> AuditEvent:
        """The event a relay makes of what an app captured (`capture`): fitted, enriched and validated once, before
        any send, so that every attempt sends the same body."""
        geo = user_agent_info = request = None
        location, user_agent = "unknown", None
        metadata = dict(data.get("metadata") or {})
        captured_request = data.get("request")
        if captured_request:
            ip, user_agent, method, path, route, status, peer, request_id = captured_request
            location = ip or "unknown"
            request = RequestInfo(method, path, route, status, peer, request_id)
            if self.enricher is not None:
                geo = self.enricher.locate(ip)
                user_agent_info = self.enricher.parse_user_agent(user_agent)
            self._add_geo_metadata(geo, metadata)
        timestamp = float(data["occurred_at"])
        event = AuditEvent(
            data["id"],
            data["organization_id"],
            data["action"],
            dt.datetime.fromtimestamp(timestamp, dt.UTC),
            _entity(Actor, data["actor"]),
            tuple(_entity(Target, t) for t in data.get("targets") or ()),
            EventContext(location, user_agent),
            metadata,
            data.get("version"),
            geo,
            user_agent_info,
            request,
        )
        return self._finish(event, data.get("declared") or ())

    def _captured_entity(self, entity: Actor | Target) -> dict[str, Any]:
        if not isinstance(entity, Actor | Target):
            raise EventError(f"expected an Actor or a Target, got {type(entity).__name__}")
        metadata = entity.metadata
        if metadata and not (type(metadata) is dict and self._fits(metadata)):
            metadata = self.redactor(metadata)
        return {"id": entity.id, "type": entity.type, "name": entity.name, "metadata": metadata or None}

    def _finish(self, event: AuditEvent, declared: Sequence[str]) -> AuditEvent:
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

    def _draft(self, item: RequestContext | PendingEvent) -> _Draft:
        """What is known of the event: (request, action, actor, organization, targets, metadata, occurred_at,
        version, declared metadata keys), nothing computed yet."""
        if isinstance(item, RequestContext):
            ctx, spec = item, item.spec
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
            # The keys the route declares (and the status) come first when the metadata must be cut to WorkOS's 50.
            first = [*(declared or ()), "http_status"]
            return (
                ctx,
                spec.action,
                ctx.actor,
                ctx.organization_id,
                targets,
                metadata,
                ctx.started_at,
                spec.version,
                first,
            )
        request = item.request
        actor = item.actor if item.actor is not None else (request.actor if request else None)
        organization = item.organization_id or (request.organization_id if request else None)
        metadata = dict(item.metadata) if item.metadata else {}
        targets = list(item.targets or [])
        return request, item.action, actor, organization, targets, metadata, item.occurred_at, item.version, ()

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
        _require_identity(action, actor, organization_id)
        assert actor is not None and organization_id is not None  # for mypy: checked just above
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
            if raw_agent:  # (a browser's fits as it is: no call for it)
                fits = len(raw_agent) <= MAX_USER_AGENT_LENGTH // 2 and raw_agent.isascii()
                user_agent = raw_agent if fits else truncate(raw_agent, MAX_USER_AGENT_LENGTH)
            geo = ctx.geo
            user_agent_info = ctx.user_agent_info
            # Positional: a dataclass's __init__ is measurably cheaper without keywords, once per event.
            request = RequestInfo(
                ctx.method, ctx.path, ctx.route_template(), ctx.status or None, ctx.peer, ctx.request_id
            )
            if geo is not None:
                self._add_geo_metadata(geo, metadata)
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

    def _add_geo_metadata(self, geo: GeoInfo | None, metadata: dict[str, Any]) -> None:
        if self.geo_metadata is not None and geo is not None:
            extra = {k: v for k, v in self.geo_metadata(geo).items() if k not in metadata}
            # Geo keys are a bonus: never the reason an event exceeds WorkOS's 50-key limit.
            if len(metadata) + len(extra) <= MAX_METADATA_KEYS:
                metadata.update(extra)

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


def _require_identity(action: str, actor: Actor | None, organization_id: str | None) -> None:
    if actor is None:
        raise EventError(f"{action}: no actor (call audit.actor() in the auth layer or configure actor=)")
    if not organization_id:
        raise EventError(f"{action}: no organization (call audit.organization() or configure organization=)")


def _entity(kind: type[_E], data: Mapping[str, Any]) -> _E:
    return kind(id=data["id"], type=data["type"], name=data.get("name"), metadata=data.get("metadata") or {})


def _captured_default(value: object) -> Any:
    # As coercion would have it (events.fit_metadata): what orjson can't encode becomes text.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def _captured_json(data: dict[str, Any]) -> str:
    try:
        return orjson.dumps(data, default=_captured_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # a lone surrogate (or an int past 64 bits): escaped ASCII JSON, which any database takes
        return json.dumps(data, default=_captured_default, ensure_ascii=True)


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
