"""The audit event model, the WorkOS limits it must respect, and its wire forms.

Everything here is plain data: the request path never builds an `AuditEvent` (it hands a `PendingEvent` to the
dispatcher), so the validation and coercion below run off the request path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import orjson

if TYPE_CHECKING:
    from workos.audit_logs.models import AuditLogEvent

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_METADATA_KEYS",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_TYPE_LENGTH",
    "TRUNCATION_MARKER",
    "Actor",
    "AuditEvent",
    "EventContext",
    "EventError",
    "GeoInfo",
    "MetadataError",
    "MetadataValue",
    "RequestInfo",
    "Target",
    "UserAgentInfo",
    "coerce_metadata",
    "fit_metadata",
    "new_event_id",
    "original_metadata",
    "truncate",
]

MetadataValue: TypeAlias = str | int | float | bool
MetadataCleaner: TypeAlias = "Callable[[Mapping[str, Any] | None, str], Mapping[str, Any]]"

# WorkOS limits for event, actor and target metadata (DESIGN §6).
MAX_METADATA_KEYS: Final = 50
MAX_METADATA_KEY_LENGTH: Final = 40
MAX_METADATA_VALUE_LENGTH: Final = 500
# Caps of our own (WorkOS documents none): what an id, a type or a name can cost every sink and the store.
MAX_ID_LENGTH: Final = 256
MAX_TYPE_LENGTH: Final = 100
MAX_NAME_LENGTH: Final = 500
#: How much of the original, unfitted metadata an event keeps for the local store (JSON characters per level).
MAX_ORIGINAL_METADATA_CHARS: Final = 65_536
TRUNCATION_MARKER: Final = "…[truncated]"
UNKNOWN_LOCATION: Final = "unknown"

_VALID_KEY = re.compile(r"^[A-Za-z0-9_-]{0,40}$")
_INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class EventError(ValueError):
    """An event that cannot be delivered as it stands; the message says which field and why."""


class MetadataError(EventError):
    """Metadata that no documented coercion can bring within the WorkOS rules."""


def _utf16_length(value: str) -> int:
    return len(value) + sum(1 for ch in value if ord(ch) > 0xFFFF)


def _well_formed(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


def truncate(value: str, limit: int = MAX_METADATA_VALUE_LENGTH) -> str:
    """Cut `value` to at most `limit` characters, ending with a visible marker when anything was cut.

    Characters are counted as JavaScript counts them (UTF-16 code units: an emoji is two), which is never fewer
    than Python's count, so the result fits whichever way the API counts. A cut never splits a character. A lone
    surrogate (JSON's "\\ud800" decodes to one) becomes U+FFFD: no UTF-8 encoder, database or API takes it.
    """
    if not value.isascii():
        value = _well_formed(value)
    if len(value) <= limit // 2 or _utf16_length(value) <= limit:
        return value
    budget = limit - len(TRUNCATION_MARKER)
    used = 0
    for index, ch in enumerate(value):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > budget:
            return value[:index] + TRUNCATION_MARKER
    return value  # pragma: no cover - unreachable: the length check above said it does not fit


def _coerce_key(key: object) -> str:
    if not isinstance(key, str):
        key = str(key)  # documented coercion: a number or other non-string key becomes its text
    if _VALID_KEY.match(key):
        return key
    # Documented coercion: characters WorkOS refuses (dots, spaces, ...) become "_", then cut to 40.
    return _INVALID_KEY_CHARS.sub("_", key)[:MAX_METADATA_KEY_LENGTH]


def _json_text(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default, sort_keys=True)


def _json_default(value: object) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def _coerce_value(value: object) -> MetadataValue:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        # JSON has no NaN or infinity; WorkOS would refuse the whole event.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return truncate(value)
    if value is None:
        # Centure's own events send "" for absent optional fields (impersonator_email, ...).
        return ""
    if isinstance(value, bytes):
        return truncate(value.decode("utf-8", "replace"))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return _coerce_value(value.value)
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        try:
            return truncate(_json_text(value))
        except (TypeError, ValueError, RecursionError):  # keys of mixed types, a self-containing list, ...
            return truncate(_text_of(value))
    return truncate(_text_of(value))


def _text_of(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not cost the event
        return f"<unprintable {type(value).__name__}>"


def _numbered(key: str, taken: Mapping[str, object]) -> str:
    """`key` with the first free suffix ``_2``, ``_3``, ... (cut so that it stays within 40 characters)."""
    n = 2
    while True:
        suffix = f"_{n}"
        candidate = key[: MAX_METADATA_KEY_LENGTH - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1


def fit_metadata(
    metadata: Mapping[Any, object] | None, where: str = "event", declared: Iterable[str] = ()
) -> tuple[dict[str, MetadataValue], bool]:
    """Metadata within WorkOS's rules, and whether fitting it lost anything (a value cut, keys folded).

    Never refuses a mapping: an audited action is never lost because of its payload. Keys already valid keep their
    name; the others are coerced, and one that then collides gets the first free suffix (``_2``, ``_3``, ...). Past
    50 keys, the `declared` keys come first, then the rest in sorted order; the first 48 stay, and what doesn't fit
    is folded into ``metadata_overflow`` (compact JSON of the rest, cut to 500 characters) beside
    ``metadata_overflow_keys`` (how many were folded). The result is the same object as `metadata` when it was
    already clean, so callers can tell nothing changed without comparing.
    """
    if not metadata:
        return {}, False
    if not isinstance(metadata, Mapping):
        raise MetadataError(f"{where}: metadata must be a mapping, not {type(metadata).__name__}")
    clean: dict[str, MetadataValue] = {}
    renamed: list[tuple[str, object]] = []
    changed = lossy = False
    for raw_key, raw_value in metadata.items():
        if type(raw_key) is not str or not _VALID_KEY.match(raw_key):
            renamed.append((_coerce_key(raw_key), raw_value))
            continue
        value = clean[raw_key] = _coerce_value(raw_value)
        if value is not raw_value:
            changed = True
            lossy = lossy or (isinstance(value, str) and value.endswith(TRUNCATION_MARKER))
    for key, raw_value in renamed:  # after every valid key, so that none of those is the one renamed
        if key in clean:
            key = _numbered(key, clean)
        value = clean[key] = _coerce_value(raw_value)
        lossy = lossy or (isinstance(value, str) and value.endswith(TRUNCATION_MARKER))
    changed = changed or bool(renamed) or type(metadata) is not dict
    if len(clean) > MAX_METADATA_KEYS:
        clean, lossy = _fold(clean, declared), True
    # Already clean (the common case): the same dict, so callers can tell nothing changed without comparing.
    return (clean if changed or lossy else metadata), lossy  # type: ignore[return-value]


OVERFLOW_KEY: Final = "metadata_overflow"
OVERFLOW_COUNT_KEY: Final = "metadata_overflow_keys"


def _fold(clean: dict[str, MetadataValue], declared: Iterable[str]) -> dict[str, MetadataValue]:
    first = [k for k in dict.fromkeys(declared) if k in clean]
    chosen = set(first)
    order = first + sorted(k for k in clean if k not in chosen)
    keep = MAX_METADATA_KEYS - 2
    fitted = {k: clean[k] for k in order[:keep]}
    rest = {k: clean[k] for k in order[keep:]}
    # The two marker keys take their names from the free ones, should the app use these names itself.
    overflow_key = OVERFLOW_KEY if OVERFLOW_KEY not in fitted else _numbered(OVERFLOW_KEY, fitted)
    fitted[overflow_key] = truncate(_json_text(rest))
    count_key = OVERFLOW_COUNT_KEY if OVERFLOW_COUNT_KEY not in fitted else _numbered(OVERFLOW_COUNT_KEY, fitted)
    fitted[count_key] = len(rest)
    return fitted


def coerce_metadata(metadata: Mapping[Any, object] | None, where: str = "event") -> dict[str, MetadataValue]:
    """Bring metadata within the WorkOS rules (see `fit_metadata`; the README documents every coercion).

    Coercions: invalid key characters become ``_`` and keys are cut to 40 characters, colliding keys get a suffix,
    non-string keys become their text; strings are cut to 500 characters ending in ``…[truncated]``; ``None``
    becomes ``""``; dates, UUIDs, decimals and enums become strings; dicts, lists and sets become compact JSON
    strings; any other value becomes its ``str()``; past 50 keys the rest is folded into ``metadata_overflow``.
    Only metadata that is not a mapping at all raises `MetadataError`.
    """
    return fit_metadata(metadata, where)[0]


def _require_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise EventError(f"{what} must be a non-empty string, got {value!r}")
    return value if value.isascii() else _well_formed(value)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it. `type` is "user" for people; use e.g. "api_key" or "system" for machines and jobs."""

    id: str
    type: str = "user"
    name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _entity_dict(self.id, self.type, self.name, self.metadata)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Actor:
        return cls(
            id=data["id"], type=data.get("type", "user"), name=data.get("name"), metadata=data.get("metadata") or {}
        )

    def validated(self, clean: MetadataCleaner = coerce_metadata) -> Actor:
        id, type, name = _capped(self.id, self.type, self.name, "actor")
        metadata = clean(self.metadata, "actor")
        if metadata is self.metadata and id is self.id and type is self.type and name is self.name:
            return self
        return Actor(id, type, name, metadata)


@dataclass(frozen=True, slots=True)
class Target:
    """What was acted on. Build from known values, or declare how to find them with `from_path`/`from_result`."""

    type: str
    id: str
    name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_path(type: str, param: str, *, name: str | None = None) -> Any:
        """A target whose id is the route's path parameter `param` (resolved when the event is built)."""
        from .annotations import PathTarget

        return PathTarget(type=type, param=param, name=name)

    @staticmethod
    def from_result(type: str, id: Any = "id", *, name: Any = None) -> Any:
        """A target read from the handler's return value: `id`/`name` are attribute or key names, or callables."""
        from .annotations import ResultTarget

        return ResultTarget(type=type, id=id, name=name)

    def to_dict(self) -> dict[str, Any]:
        return _entity_dict(self.id, self.type, self.name, self.metadata)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        return cls(type=data["type"], id=data["id"], name=data.get("name"), metadata=data.get("metadata") or {})

    def validated(self, index: int, clean: MetadataCleaner = coerce_metadata) -> Target:
        id, type, name = _capped(self.id, self.type, self.name, f"targets[{index}]")
        metadata = clean(self.metadata, f"targets[{index}]")
        if metadata is self.metadata and id is self.id and type is self.type and name is self.name:
            return self
        return Target(type, id, name, metadata)


def _plain(id: object, type_: object, name: object) -> bool:
    """Whether id, type and name are short ASCII strings (the common case), which need no cap and no repair."""
    return (
        type(id) is str
        and type(type_) is str
        and 0 < len(id) <= MAX_ID_LENGTH
        and 0 < len(type_) <= MAX_TYPE_LENGTH
        and id.isascii()
        and type_.isascii()
        and (name is None or (type(name) is str and len(name) <= MAX_NAME_LENGTH and name.isascii()))
    )


def _capped(id: object, type: object, name: object, where: str) -> tuple[str, str, str | None]:
    """An actor's or target's id, type and name within our caps (cut with the truncation marker)."""
    if _plain(id, type, name):
        return id, type, name  # type: ignore[return-value]  # checked by _plain
    type_text = _require_text(type, f"{where}.type")
    id_text = _require_text(id, f"{where}.id")
    name_text = None if name is None else truncate(name if isinstance(name, str) else _text_of(name), MAX_NAME_LENGTH)
    return truncate(id_text, MAX_ID_LENGTH), truncate(type_text, MAX_TYPE_LENGTH), name_text


def _entity_dict(
    id: str, type: str, name: str | None, metadata: Mapping[str, Any], copy: Callable[[Mapping[str, Any]], Any] = dict
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id, "type": type}
    if name is not None:
        out["name"] = name
    if metadata:
        out["metadata"] = copy(metadata)
    return out


def _as_dict(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` itself when it is a dict (orjson encodes nothing else), else a copy."""
    return metadata if type(metadata) is dict else dict(metadata)


@dataclass(frozen=True, slots=True)
class EventContext:
    """WorkOS `context`: `location` is the client IP (or "unknown"); `user_agent` the raw header."""

    location: str = UNKNOWN_LOCATION
    user_agent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"location": self.location}
        if self.user_agent is not None:
            out["user_agent"] = self.user_agent
        return out


@dataclass(frozen=True, slots=True)
class GeoInfo:
    """Where an IP address is, as far as the configured database knows. All fields optional."""

    country_code: str | None = None
    country: str | None = None
    subdivision: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    accuracy_radius_km: int | None = None
    time_zone: str | None = None
    asn: int | None = None
    as_organization: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies, and this runs for every event the outbox and stores serialise.
        return {name: value for name in self.__slots__ if (value := getattr(self, name)) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeoInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    """A parsed user agent. `device_class` is one of desktop, mobile, tablet, bot, other."""

    browser_family: str = "Other"
    browser_version: str | None = None
    os_family: str = "Other"
    os_version: str | None = None
    device_family: str = "Other"
    device_brand: str | None = None
    device_model: str | None = None
    device_class: str = "other"

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies, and this runs for every event the outbox and stores serialise.
        return {name: value for name in self.__slots__ if (value := getattr(self, name)) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserAgentInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The HTTP exchange that produced the event (kept by the local store, not sent to WorkOS)."""

    method: str | None = None
    path: str | None = None
    route: str | None = None
    status: int | None = None
    peer: str | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies, and this runs for every event the outbox and stores serialise.
        return {name: value for name in self.__slots__ if (value := getattr(self, name)) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record, WorkOS-shaped, plus the enrichment the local store keeps.

    `id` is fixed when the event is recorded and is sent as the `Idempotency-Key` on every attempt.
    """

    id: str
    organization_id: str
    action: str
    occurred_at: dt.datetime
    actor: Actor
    targets: tuple[Target, ...] = ()
    context: EventContext = field(default_factory=EventContext)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    version: int | None = None
    geo: GeoInfo | None = None
    user_agent: UserAgentInfo | None = None
    request: RequestInfo | None = None
    #: Metadata as the app gave it (redacted), by level ("event", "actor", "targets[0]"), for the levels that fitting
    #: to WorkOS's limits cut or folded. Kept by the local store; never sent to WorkOS.
    original_metadata: Mapping[str, Any] | None = None

    def validated(self, clean: MetadataCleaner = coerce_metadata) -> AuditEvent:
        """A copy within WorkOS's rules (coercions as in `coerce_metadata`), or `EventError` naming the field.

        `clean(metadata, where)` replaces `coerce_metadata` for every metadata mapping (the dispatcher redacts, then
        coerces); it returns its argument itself when nothing changed.
        """
        _require_text(self.id, "id")
        organization_id = _require_text(self.organization_id, "organization_id")
        action = _require_text(self.action, "action")
        if not isinstance(self.occurred_at, dt.datetime) or self.occurred_at.utcoffset() is None:
            raise EventError("occurred_at must be a timezone-aware datetime")
        if not isinstance(self.actor, Actor):
            raise EventError(f"actor must be an Actor, got {type(self.actor).__name__}")
        targets = tuple(_as_target(t, i).validated(i, clean) for i, t in enumerate(self.targets))
        actor = self.actor.validated(clean)
        metadata = clean(self.metadata, "event")
        if (
            metadata is self.metadata
            and actor is self.actor
            and organization_id is self.organization_id
            and action is self.action
            and all(a is b for a, b in zip(targets, self.targets, strict=True))
        ):
            return self
        return AuditEvent(
            self.id,
            organization_id,
            action,
            self.occurred_at,
            actor,
            targets,
            self.context,
            metadata,
            self.version,
            self.geo,
            self.user_agent,
            self.request,
            self.original_metadata,
        )

    def to_workos(self) -> dict[str, Any]:
        """The `event` object of `POST /audit_logs/events`."""
        return self._body(self.occurred_at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))

    def _body(self, occurred_at: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "occurred_at": occurred_at,
            "actor": self.actor.to_dict(),
            "targets": [t.to_dict() for t in self.targets],
            "context": self.context.to_dict(),
        }
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.version is not None:
            out["version"] = self.version
        return out

    def to_sdk(self) -> AuditLogEvent:
        """The `workos` SDK's `AuditLogEvent` (the SDK refuses plain dicts)."""
        from workos.audit_logs.models import AuditLogEvent

        event = AuditLogEvent.from_dict(self.to_workos())
        # from_dict parses the timestamp; make sure it stays tz-aware whatever the SDK version does with "Z".
        if isinstance(getattr(event, "occurred_at", None), dt.datetime) and event.occurred_at.tzinfo is None:
            object.__setattr__(event, "occurred_at", self.occurred_at.astimezone(dt.UTC))
        return event

    def to_dict(self) -> dict[str, Any]:
        """A lossless JSON-ready form (outbox, JSON Lines, local store)."""
        return self._full(self.occurred_at.isoformat(), dict)

    def _full(self, occurred_at: object, copy: Callable[[Mapping[str, Any]], Any]) -> dict[str, Any]:
        """`to_dict`'s form, its keys in its order, made in one function (it runs for every event recorded):
        `occurred_at` as given; metadata through `copy` (`to_json` needs no copies of dicts)."""
        actor, context = self.actor, self.context
        out: dict[str, Any] = {
            "id": self.id,
            "organization_id": self.organization_id,
            "action": self.action,
            "occurred_at": occurred_at,
            "actor": _entity_dict(actor.id, actor.type, actor.name, actor.metadata, copy),
            "targets": [_entity_dict(t.id, t.type, t.name, t.metadata, copy) for t in self.targets],
            "context": (
                {"location": context.location}
                if context.user_agent is None
                else {"location": context.location, "user_agent": context.user_agent}
            ),
        }
        if self.metadata:
            out["metadata"] = copy(self.metadata)
        if self.version is not None:
            out["version"] = self.version
        if self.geo is not None:
            out["geo"] = self.geo.to_dict()
        if self.user_agent is not None:
            out["user_agent_parsed"] = self.user_agent.to_dict()
        if self.request is not None:
            out["request"] = self.request.to_dict()
        if self.original_metadata:
            out["original_metadata"] = self.original_metadata
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        context = data.get("context") or {}
        return cls(
            id=data["id"],
            organization_id=data["organization_id"],
            action=data["action"],
            occurred_at=_parse_datetime(data["occurred_at"]),
            actor=Actor.from_dict(data["actor"]),
            targets=tuple(Target.from_dict(t) for t in data.get("targets") or ()),
            context=EventContext(
                location=context.get("location", UNKNOWN_LOCATION), user_agent=context.get("user_agent")
            ),
            metadata=dict(data.get("metadata") or {}),
            version=data.get("version"),
            geo=GeoInfo.from_dict(data["geo"]) if data.get("geo") else None,
            user_agent=UserAgentInfo.from_dict(data["user_agent_parsed"]) if data.get("user_agent_parsed") else None,
            request=RequestInfo.from_dict(data["request"]) if data.get("request") else None,
            original_metadata=data.get("original_metadata") or None,
        )

    def to_json(self) -> str:
        """`to_dict()` as compact JSON."""
        when = self.occurred_at
        try:
            # orjson: a fifth of json.dumps's cost, and this runs once for every event recorded. It writes a UTC
            # datetime exactly as isoformat() does (at a tenth of the cost), and takes the metadata uncopied.
            data = self._full(when if when.tzinfo is dt.UTC else when.isoformat(), _as_dict)
            return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson refuses and json takes (an int past 64 bits): the same text, the slow way
            return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> AuditEvent:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:  # what orjson refuses and json reads (a lone surrogate's escape)
            data = json.loads(text)
        return cls.from_dict(data)


def original_metadata(metadata: Mapping[Any, object]) -> dict[str, Any]:
    """A JSON-ready copy of metadata as given: each value within 16 KiB of JSON, and the whole within
    `MAX_ORIGINAL_METADATA_CHARS` (the keys past it are counted, not kept)."""
    out: dict[str, Any] = {}
    used = 0
    for key, value in metadata.items():
        try:
            text = _json_text(value)
        except (TypeError, ValueError, RecursionError):
            text = _json_text(_text_of(value))
        if len(text) > 16_384:
            text = _json_text(truncate(text, 16_384))
        name = truncate(_text_of(key), 1024)  # keys count too: 5,000 short values under long keys are not small
        size = len(text) + len(name) + 4  # the key's quotes, its colon and the comma
        if used + size > MAX_ORIGINAL_METADATA_CHARS:
            out["…"] = f"{len(metadata) - len(out)} more keys not kept"
            break
        out[name] = json.loads(text)
        used += size
    return out


def _as_target(value: object, index: int) -> Target:
    if isinstance(value, Target):
        return value
    raise EventError(f"targets[{index}] must be a Target, got {type(value).__name__}")


def _parse_datetime(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


_id_lock = threading.Lock()
_last_id = [0, 0]  # the last (millisecond, 12-bit counter) handed out
#: Random bytes are read from the OS this many at a time (ten per id): one getrandom() call per 409 ids instead of
#: a system call per id.
_RANDOM_POOL: Final = 4090
_random: list[Any] = [b"", 0]  # the pool and the next offset in it


def _random80() -> int:
    """80 random bits from the OS's CSPRNG; under `_id_lock`."""
    pool, offset = _random
    if offset >= len(pool):
        pool, offset = os.urandom(_RANDOM_POOL), 0
        _random[0] = pool
    _random[1] = offset + 10
    return int.from_bytes(pool[offset : offset + 10], "big")


def _forget_random() -> None:
    # A forked child must not hand out its parent's next ids' random bits (the same ids, in the same millisecond).
    _random[:] = [b"", 0]


os.register_at_fork(after_in_child=_forget_random)


def new_event_id(timestamp: float | None = None) -> str:
    """A UUIDv7 (time-ordered, so outbox and store order match recording order); WorkOS asks for UUIDs as keys.

    Within one millisecond, ids of this process still increase: RFC 9562's method 1, a counter in `rand_a`.
    """
    ms = int((time.time() if timestamp is None else timestamp) * 1000) & ((1 << 48) - 1)
    with _id_lock:
        rand = _random80()
        last_ms, counter = _last_id
        if ms == last_ms and counter < 0xFFF:
            counter += 1
        else:
            counter = (rand >> 66) & 0x7FF  # a random start in the lower half leaves room to count up
        _last_id[:] = [ms, counter]
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, at a fifth of the cost
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
