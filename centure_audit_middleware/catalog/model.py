"""The catalog's data model: what an audit action looks like, and the JSON format it is stored in.

A `Catalog` maps action names to `ActionSpec`s: category, description, targets in order (type, required, whether
it carries a name, its metadata fields), event metadata fields, and the actor's metadata fields. The Centure
catalog ships as package data (`centure.json`); apps register their own actions the same way, as `ActionSpec`
objects, dicts or JSON files in the same format.

The format is compact on purpose, so the file reads like the docs' tables. A field is ``"string"`` (optional),
``"string!"`` (required), or an object when it says more::

    {"type": "string", "required": true, "max_length": 50, "overflow": "error", "const": "x", "inferred": true}

`inferred` marks a target or field the docs do not show (the name is this catalog's choice); `open` on an action's
metadata or on a target means the docs' list is incomplete, so keys beyond it are not reported as unknown.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Literal, TypeAlias, cast, get_args

from ..events import MAX_METADATA_KEYS, MAX_METADATA_VALUE_LENGTH, MetadataValue

__all__ = [
    "FORMAT_VERSION",
    "ActionSpec",
    "ActorSpec",
    "Catalog",
    "CatalogError",
    "FieldSpec",
    "FieldType",
    "Overflow",
    "TargetSpec",
    "default_catalog",
    "register",
]

FORMAT_VERSION: Final = 1
FieldType: TypeAlias = Literal["string", "boolean", "number", "integer"]
#: What producers do with a longer value: cut it (``changes``), or never send one (a stated maximum).
Overflow: TypeAlias = Literal["truncate", "error"]

_FIELD_TYPES: Final = frozenset(get_args(FieldType))
_OVERFLOWS: Final = frozenset(get_args(Overflow))
# WorkOS's rule for metadata keys (DESIGN §6); a catalog that breaks it could never be delivered.
_KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,40}")
_ACTION: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+")
_PACKAGED: Final = "centure.json"


class CatalogError(ValueError):
    """A catalog document or spec that does not follow the format; the message says where."""


def _check_key(name: str, where: str) -> str:
    if not isinstance(name, str) or not _KEY.fullmatch(name):
        raise CatalogError(f"{where}: {name!r} is not a WorkOS metadata key (letters, digits, _ and -, 1-40)")
    return name


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One metadata field: event, actor or target metadata."""

    name: str
    type: FieldType = "string"
    required: bool = False
    #: a limit stated by the docs (in characters); every string is also bound by WorkOS's 500
    max_length: int | None = None
    overflow: Overflow = "error"
    #: the only value the docs allow (e.g. ``metadata.source`` = "project_settings")
    const: MetadataValue | None = None
    inferred: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        _check_key(self.name, "field")
        if self.type not in _FIELD_TYPES:
            raise CatalogError(f"field {self.name!r}: type {self.type!r} is not one of {sorted(_FIELD_TYPES)}")
        if self.overflow not in _OVERFLOWS:
            raise CatalogError(f"field {self.name!r}: overflow {self.overflow!r} is not one of {sorted(_OVERFLOWS)}")
        if self.max_length is not None and not 0 < self.max_length <= MAX_METADATA_VALUE_LENGTH:
            raise CatalogError(f"field {self.name!r}: max_length must be 1-{MAX_METADATA_VALUE_LENGTH}")

    @property
    def limit(self) -> int | None:
        """The longest string this field may hold: the stated maximum, else WorkOS's limit (strings only)."""
        if self.type != "string":
            return None
        return self.max_length if self.max_length is not None else MAX_METADATA_VALUE_LENGTH

    @classmethod
    def parse(cls, name: str, value: Any, where: str) -> FieldSpec:
        where = f"{where}.{name}"
        if isinstance(value, str):
            required = value.endswith("!")
            return cls(_check_key(name, where), cast(FieldType, _type(value.removesuffix("!"), where)), required)
        if not isinstance(value, Mapping):
            raise CatalogError(f"{where}: a field is a type string or an object, not {type(value).__name__}")
        _only(value, {"type", "required", "max_length", "overflow", "const", "inferred", "description"}, where)
        try:
            return cls(
                name=_check_key(name, where),
                type=cast(FieldType, _type(value.get("type", "string"), where)),
                required=_bool(value, "required", where),
                max_length=value.get("max_length"),
                overflow=value.get("overflow", "error"),
                const=value.get("const"),
                inferred=_bool(value, "inferred", where),
                description=value.get("description", ""),
            )
        except CatalogError as exc:
            raise CatalogError(f"{where}: {exc}") from None

    def dump(self) -> str | dict[str, Any]:
        """The compact form: a type string when nothing else is set."""
        extra: dict[str, Any] = {}
        if self.max_length is not None:
            extra["max_length"] = self.max_length
            extra["overflow"] = self.overflow
        if self.const is not None:
            extra["const"] = self.const
        if self.inferred:
            extra["inferred"] = True
        if self.description:
            extra["description"] = self.description
        if not extra:
            return self.type + ("!" if self.required else "")
        return {"type": self.type, "required": self.required, **extra}


def _type(value: Any, where: str) -> str:
    if value not in _FIELD_TYPES:
        raise CatalogError(f"{where}: type {value!r} is not one of {sorted(_FIELD_TYPES)}")
    return cast(str, value)


def _bool(data: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise CatalogError(f"{where}: {key} must be true or false, not {value!r}")
    return value


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    # Unknown keys are typos ("requried") that would otherwise be ignored silently.
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _fields(data: Any, where: str) -> tuple[FieldSpec, ...]:
    if data is None:
        return ()
    if not isinstance(data, Mapping):
        raise CatalogError(f"{where}: metadata is an object of fields, not {type(data).__name__}")
    if len(data) > MAX_METADATA_KEYS:
        raise CatalogError(f"{where}: {len(data)} fields; WorkOS allows at most {MAX_METADATA_KEYS}")
    return tuple(FieldSpec.parse(name, value, where) for name, value in data.items())


def _dump_fields(fields: Iterable[FieldSpec]) -> dict[str, Any]:
    return {f.name: f.dump() for f in fields}


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One target of an action, at its position in the documented order."""

    type: str
    required: bool = True
    #: whether the docs show a `name` on this target (some show only the id)
    named: bool = True
    metadata: tuple[FieldSpec, ...] = ()
    #: the docs do not list this target's fields: nothing is trimmed or reported as unknown
    open: bool = False
    inferred: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise CatalogError(f"a target type must be a non-empty string, not {self.type!r}")

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.metadata if f.name == name), None)

    @classmethod
    def parse(cls, data: Any, where: str) -> TargetSpec:
        if isinstance(data, str):
            return cls(data)
        if not isinstance(data, Mapping):
            raise CatalogError(f"{where}: a target is a type string or an object, not {type(data).__name__}")
        _only(data, {"type", "required", "named", "metadata", "open", "inferred"}, where)
        where = f"{where}({data.get('type')})"
        return cls(
            type=data.get("type", ""),
            required=_bool(data, "required", where, True),
            named=_bool(data, "named", where, True),
            metadata=_fields(data.get("metadata"), f"{where}.metadata"),
            open=_bool(data, "open", where),
            inferred=_bool(data, "inferred", where),
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if not self.required:
            out["required"] = False
        if not self.named:
            out["named"] = False
        if self.metadata:
            out["metadata"] = _dump_fields(self.metadata)
        if self.open:
            out["open"] = True
        if self.inferred:
            out["inferred"] = True
        return out


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """The actor every event of an action carries: its type (None: any) and metadata fields."""

    type: str | None = "user"
    metadata: tuple[FieldSpec, ...] = ()
    open: bool = False

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.metadata if f.name == name), None)

    @classmethod
    def parse(cls, data: Any, where: str) -> ActorSpec:
        if not isinstance(data, Mapping):
            raise CatalogError(f"{where}: the actor is an object, not {type(data).__name__}")
        _only(data, {"type", "metadata", "open"}, where)
        return cls(
            type=data.get("type"),
            metadata=_fields(data.get("metadata"), f"{where}.metadata"),
            open=_bool(data, "open", where),
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "metadata": _dump_fields(self.metadata)}
        if self.open:
            out["open"] = True
        return out


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One audit action: `ActionSpec("invoice.pay", "billing", targets=(TargetSpec("invoice"),), ...)`."""

    action: str
    category: str
    description: str = ""
    targets: tuple[TargetSpec, ...] = ()
    metadata: tuple[FieldSpec, ...] = ()
    #: the docs' metadata list is incomplete: keys beyond it are not reported as unknown
    open: bool = False
    #: None: the catalog's actor
    actor: ActorSpec | None = None
    coverage: Literal["complete", "partial"] = "complete"
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.action, str) or not _ACTION.fullmatch(self.action):
            raise CatalogError(f"action {self.action!r} is not of the form resource.verb (letters, digits, _ and -)")
        if not isinstance(self.category, str) or not self.category:
            raise CatalogError(f"{self.action}: category must be a non-empty string")
        for fields, where in [(self.metadata, "metadata"), *((t.metadata, f"target {t.type}") for t in self.targets)]:
            names = [f.name for f in fields]
            if len(names) != len(set(names)):
                raise CatalogError(f"{self.action}: {where} lists a field twice")

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.metadata if f.name == name), None)

    @property
    def target_types(self) -> tuple[str, ...]:
        return tuple(t.type for t in self.targets)

    @property
    def inferred(self) -> bool:
        """True when any target or field of this action is this catalog's inference rather than documented."""
        return any(t.inferred or any(f.inferred for f in t.metadata) for t in self.targets) or any(
            f.inferred for f in self.metadata
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], action: str | None = None) -> ActionSpec:
        """From the JSON form; `action` is the key it is stored under (else `data["action"]`)."""
        if not isinstance(data, Mapping):
            raise CatalogError(f"{action}: an action is an object, not {type(data).__name__}")
        name = action if action is not None else data.get("action")
        where = str(name)
        _only(
            data,
            {"action", "category", "description", "targets", "metadata", "open", "actor", "coverage", "notes"},
            where,
        )
        targets = data.get("targets") or []
        if not isinstance(targets, list):
            raise CatalogError(f"{where}: targets is a list")
        notes = data.get("notes") or []
        coverage = data.get("coverage", "complete")
        if coverage not in ("complete", "partial"):
            raise CatalogError(f"{where}: coverage is 'complete' or 'partial', not {coverage!r}")
        return cls(
            action=cast(str, name),
            category=data.get("category", ""),
            description=data.get("description", ""),
            targets=tuple(TargetSpec.parse(t, f"{where}.targets[{i}]") for i, t in enumerate(targets)),
            metadata=_fields(data.get("metadata"), f"{where}.metadata"),
            open=_bool(data, "open", where),
            actor=ActorSpec.parse(data["actor"], f"{where}.actor") if data.get("actor") is not None else None,
            coverage=coverage,
            notes=tuple(str(n) for n in notes),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, without the action name (the key it is stored under)."""
        out: dict[str, Any] = {"category": self.category, "description": self.description}
        if self.coverage != "complete":
            out["coverage"] = self.coverage
        out["targets"] = [t.dump() for t in self.targets]
        out["metadata"] = _dump_fields(self.metadata)
        if self.open:
            out["open"] = True
        if self.actor is not None:
            out["actor"] = self.actor.dump()
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class Catalog:
    """A set of audit actions. `Catalog.centure()` is the packaged Centure catalog; `default_catalog()` the one
    the helpers and validators use unless told otherwise (apps add their own actions to it with `register`).

    Registration is thread-safe; lookups read a dict and take no lock (the validator runs in the dispatcher).
    """

    def __init__(
        self,
        actions: Iterable[ActionSpec] = (),
        *,
        actor: ActorSpec | None = None,
        categories: Mapping[str, str] | None = None,
        name: str = "custom",
        source: str = "",
        notes: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.source = source
        self.notes = tuple(notes)
        self.actor = actor if actor is not None else ActorSpec(type=None, open=True)
        self._categories: dict[str, str] = dict(categories or {})
        self._actions: dict[str, ActionSpec] = {}
        self._lock = threading.Lock()
        for spec in actions:
            self.register(spec)

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Catalog:
        """A catalog from a document in the package's format (`centure.json`)."""
        if not isinstance(document, Mapping):
            raise CatalogError(f"a catalog document is an object, not {type(document).__name__}")
        _only(document, {"format", "name", "source", "notes", "categories", "actor", "actions"}, "catalog")
        if document.get("format", FORMAT_VERSION) != FORMAT_VERSION:
            raise CatalogError(
                f"catalog format {document.get('format')!r} is not supported (expected {FORMAT_VERSION})"
            )
        actor = document.get("actor")
        catalog = cls(
            actor=ActorSpec.parse(actor, "catalog.actor") if actor is not None else None,
            categories=document.get("categories") or {},
            name=document.get("name", "custom"),
            source=document.get("source", ""),
            notes=document.get("notes") or (),
        )
        catalog.register_document(document)
        return catalog

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Catalog:
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))

    @classmethod
    def centure(cls) -> Catalog:
        """A fresh copy of the packaged Centure catalog (read from package data, never from elsewhere)."""
        text = resources.files(__package__).joinpath(_PACKAGED).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def copy(self) -> Catalog:
        return Catalog(
            self._actions.values(),
            actor=self.actor,
            categories=self._categories,
            name=self.name,
            source=self.source,
            notes=self.notes,
        )

    # -- registration ------------------------------------------------------------------------------------------
    def register(self, spec: ActionSpec | Mapping[str, Any], *, replace: bool = False) -> ActionSpec:
        """Add an action (an `ActionSpec`, or its JSON form with an ``"action"`` key). Registering a name that
        exists is an error unless `replace=True`, so two modules cannot silently disagree on one action."""
        if not isinstance(spec, ActionSpec):
            spec = ActionSpec.from_dict(spec)
        with self._lock:
            if spec.action in self._actions and not replace and self._actions[spec.action] != spec:
                raise CatalogError(f"{spec.action} is already in the catalog (pass replace=True to redefine it)")
            self._categories.setdefault(spec.category, spec.category.replace("_", " ").title())
            # Copy-on-write: readers in other threads never see a dict being resized.
            self._actions = {**self._actions, spec.action: spec}
        return spec

    def register_document(self, document: Mapping[str, Any], *, replace: bool = False) -> list[ActionSpec]:
        """Add every action of a document in the package's format (its categories too)."""
        actions = document.get("actions") or {}
        if not isinstance(actions, Mapping):
            raise CatalogError("catalog.actions is an object keyed by action name")
        categories = document.get("categories") or {}
        if not isinstance(categories, Mapping):
            raise CatalogError("catalog.categories is an object of id: title")
        with self._lock:
            for key, title in categories.items():
                self._categories.setdefault(str(key), str(title))
        return [self.register(ActionSpec.from_dict(body, name), replace=replace) for name, body in actions.items()]

    def register_file(self, path: str | os.PathLike[str], *, replace: bool = False) -> list[ActionSpec]:
        with open(path, encoding="utf-8") as file:
            return self.register_document(json.load(file), replace=replace)

    # -- lookup ------------------------------------------------------------------------------------------------
    def get(self, action: str) -> ActionSpec | None:
        return self._actions.get(action)

    def __getitem__(self, action: str) -> ActionSpec:
        spec = self._actions.get(action)
        if spec is None:
            raise KeyError(action)
        return spec

    def __contains__(self, action: object) -> bool:
        return action in self._actions

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(self._actions.values())

    def __len__(self) -> int:
        return len(self._actions)

    def actor_for(self, spec: ActionSpec) -> ActorSpec:
        return spec.actor if spec.actor is not None else self.actor

    @property
    def categories(self) -> Mapping[str, str]:
        """Category id -> title, in catalog order."""
        return dict(self._categories)

    def by_category(self) -> dict[str, list[ActionSpec]]:
        """Actions grouped by category, categories in catalog order, actions in registration order."""
        groups: dict[str, list[ActionSpec]] = {key: [] for key in self._categories}
        for spec in self._actions.values():
            groups.setdefault(spec.category, []).append(spec)
        return {key: specs for key, specs in groups.items() if specs}

    def to_dict(self) -> dict[str, Any]:
        """The document form (`Catalog.from_dict(c.to_dict())` is equivalent to `c`)."""
        out: dict[str, Any] = {"format": FORMAT_VERSION, "name": self.name}
        if self.source:
            out["source"] = self.source
        if self.notes:
            out["notes"] = list(self.notes)
        out["categories"] = dict(self._categories)
        out["actor"] = self.actor.dump()
        out["actions"] = {spec.action: spec.to_dict() for spec in self._actions.values()}
        return out

    def __repr__(self) -> str:
        return f"<Catalog {self.name!r}: {len(self)} actions>"


_default: Catalog | None = None
_default_lock = threading.Lock()


def default_catalog() -> Catalog:
    """The process-wide catalog: the Centure actions plus whatever the app registered."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Catalog.centure()
    return _default


def register(spec: ActionSpec | Mapping[str, Any], *, replace: bool = False) -> ActionSpec:
    """Add an app's own action to the default catalog (see `Catalog.register`)."""
    return default_catalog().register(spec, replace=replace)
