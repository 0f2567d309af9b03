"""Checking built events against the catalog, in the dispatcher: `Auditor(validators=[catalog.validator()])`.

An event whose action is in the catalog is checked for: its targets (each required one present, no undocumented
ones, documented order), each target's, the event's and the actor's metadata (required keys present, values of the
documented type, a documented constant respected, strings within the stated maximum and WorkOS's 500, no unknown
keys unless the docs' list is marked open), and the actor's type. Actions the catalog doesn't know pass untouched.

Unknown keys: the library's own enrichment keys (``geo_*``, ``http_status``) are never unknown, because the
pipeline adds them after the app built the event. Everything else not in the catalog is reported: an undocumented
key is how a typo ("sorce") or a secret slips into the trail.

Default mode logs each violation (logger ``centure_audit_middleware.catalog``, once per action and reason per
minute, so a hot endpoint can't flood the log) and delivers the event: a slightly-off record beats no record.
`strict=True` raises `EventError` with every violation, so the dispatcher dead-letters the event with that reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..events import MAX_METADATA_VALUE_LENGTH, AuditEvent, EventError, Target
from .changes import text_length
from .model import ActionSpec, Catalog, FieldSpec, default_catalog

__all__ = [
    "RESERVED_METADATA_KEYS",
    "RESERVED_METADATA_PREFIXES",
    "CatalogValidator",
    "Violation",
    "check",
    "validator",
]

logger = logging.getLogger("centure_audit_middleware.catalog")

#: Event metadata keys the pipeline itself adds (recorded failures, GeoIP enrichment): never "unknown".
RESERVED_METADATA_KEYS: Final = frozenset({"http_status"})
RESERVED_METADATA_PREFIXES: Final = ("geo_",)
LOG_INTERVAL: Final = 60.0
# Distinct (action, reason) pairs remembered for rate limiting; past this the oldest are forgotten (bounded memory
# even if an app invents a new metadata key per request).
_MAX_REMEMBERED: Final = 4096

_TYPE_CHECKS: Final[Mapping[str, Callable[[Any], bool]]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
}
_ARTICLE: Final = {"string": "a string", "boolean": "a boolean", "number": "a number", "integer": "an integer"}


@dataclass(frozen=True, slots=True)
class Violation:
    """One way an event differs from its catalog entry. `str(v)` is the reason: "action: where: detail"."""

    action: str
    #: missing_target, unexpected_target, target_order, missing_field, unknown_field, wrong_type, wrong_value,
    #: too_long, actor_type
    code: str
    #: "targets[1]", "metadata.source", "targets[0](api_key).metadata.project_id", "actor.metadata.email", ...
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.action}: {self.where}: {self.detail}"


def check(event: AuditEvent, catalog: Catalog | None = None) -> list[Violation]:
    """Every way `event` differs from its catalog entry; empty when it matches or its action isn't catalogued."""
    catalog = catalog if catalog is not None else default_catalog()
    spec = catalog.get(event.action)
    if spec is None:
        return []
    out: list[Violation] = []
    _check_targets(spec, event.targets, out)
    _check_fields(spec.action, "metadata", spec.metadata, event.metadata, spec.open, out, reserved=True)
    actor = catalog.actor_for(spec)
    if actor.type is not None and event.actor.type != actor.type:
        out.append(
            Violation(spec.action, "actor_type", "actor.type", f"must be {actor.type!r}, got {event.actor.type!r}")
        )
    _check_fields(spec.action, "actor.metadata", actor.metadata, event.actor.metadata, actor.open, out)
    return out


def _check_targets(spec: ActionSpec, targets: Sequence[Target], out: list[Violation]) -> None:
    action = spec.action
    documented = spec.target_types
    known: list[tuple[int, Target]] = []
    for index, target in enumerate(targets):
        if target.type in documented:
            known.append((index, target))
        else:
            out.append(
                Violation(
                    action,
                    "unexpected_target",
                    f"targets[{index}]",
                    f"target type {target.type!r} is not documented for this action (expected {_names(documented)})",
                )
            )
    # Pair each documented target with the first unused event target of its type, whatever the order, so a
    # misplaced target is reported as misplaced rather than as missing plus unexpected.
    unused = list(known)
    paired: list[int] = []
    for position, target_spec in enumerate(spec.targets):
        match = next((item for item in unused if item[1].type == target_spec.type), None)
        if match is None:
            if target_spec.required:
                out.append(
                    Violation(
                        action,
                        "missing_target",
                        f"targets[{position}]",
                        f"missing required target {target_spec.type!r}",
                    )
                )
            continue
        unused.remove(match)
        index, target = match
        paired.append(index)
        where = f"targets[{index}]({target.type}).metadata"
        _check_fields(action, where, target_spec.metadata, target.metadata, target_spec.open, out)
    for index, target in unused:
        out.append(
            Violation(
                action, "unexpected_target", f"targets[{index}]", f"target {target.type!r} appears too many times"
            )
        )
    if paired != sorted(paired):
        got = [targets[i].type for i in sorted(paired)]
        expected = [t for t in documented if t in got]
        out.append(
            Violation(
                action, "target_order", "targets", f"out of order: expected {_names(expected)}, got {_names(got)}"
            )
        )


def _check_fields(
    action: str,
    where: str,
    fields: Sequence[FieldSpec],
    values: Mapping[str, Any],
    open: bool,
    out: list[Violation],
    *,
    reserved: bool = False,
) -> None:
    for item in fields:
        path = f"{where}.{item.name}"
        if item.name not in values:
            if item.required:
                out.append(Violation(action, "missing_field", path, "missing required field"))
            continue
        value = values[item.name]
        if not _TYPE_CHECKS[item.type](value):
            out.append(
                Violation(action, "wrong_type", path, f"must be {_ARTICLE[item.type]}, got {type(value).__name__}")
            )
            continue
        if item.const is not None and value != item.const:
            out.append(Violation(action, "wrong_value", path, f"must be {item.const!r}, got {_preview(value)}"))
        limit = item.limit
        if limit is not None and isinstance(value, str) and text_length(value) > limit:
            detail = f"{text_length(value)} characters, at most {limit} allowed"
            out.append(Violation(action, "too_long", path, detail))
    documented = {item.name for item in fields}
    for key, value in values.items():
        if key in documented:
            continue
        if isinstance(value, str) and text_length(value) > MAX_METADATA_VALUE_LENGTH:
            # WorkOS counts like JavaScript; such a value would make WorkOS refuse the whole event.
            detail = f"{text_length(value)} characters, at most {MAX_METADATA_VALUE_LENGTH} allowed"
            out.append(Violation(action, "too_long", f"{where}.{key}", detail))
        if open or (reserved and (key in RESERVED_METADATA_KEYS or key.startswith(RESERVED_METADATA_PREFIXES))):
            continue
        expected = ", ".join(sorted(documented)) or "none"
        out.append(Violation(action, "unknown_field", f"{where}.{key}", f"unknown key (documented: {expected})"))


def _names(types: Sequence[str]) -> str:
    return "[" + ", ".join(types) + "]"


def _preview(value: object) -> str:
    # Enough to recognise the mistake in a log line, never a whole (possibly sensitive) value.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class CatalogValidator:
    """The callable `validator()` returns (an `Auditor` validator: takes the built event, may raise `EventError`)."""

    def __init__(self, strict: bool = False, catalog: Catalog | None = None, *, log_interval: float = LOG_INTERVAL):
        self.strict = strict
        self._catalog = catalog
        self.log_interval = log_interval
        self._logged: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    @property
    def catalog(self) -> Catalog:
        # Resolved per call, not at construction, so actions registered after the Auditor was built count too.
        return self._catalog if self._catalog is not None else default_catalog()

    def __call__(self, event: AuditEvent) -> None:
        violations = check(event, self.catalog)
        if not violations:
            return
        if self.strict:
            raise EventError("; ".join(map(str, violations)))
        for violation in violations:
            if self._should_log(violation):
                logger.warning("audit event %s does not match the catalog (delivered anyway): %s", event.id, violation)

    def _should_log(self, violation: Violation) -> bool:
        key = (violation.action, violation.code, violation.where)
        now = time.monotonic()
        with self._lock:
            last = self._logged.get(key)
            if last is not None and now - last < self.log_interval:
                return False
            if len(self._logged) >= _MAX_REMEMBERED:
                self._logged.pop(next(iter(self._logged)))
            self._logged.pop(key, None)  # re-insert at the end: the dict stays ordered by last log time
            self._logged[key] = now
            return True


def validator(strict: bool = False, catalog: Catalog | None = None) -> Callable[[AuditEvent], None]:
    """A validator for `Auditor(validators=[...])` checking events against `catalog` (default: `default_catalog()`).

    ``strict=False`` logs violations and delivers; ``strict=True`` dead-letters the event with the reasons.
    """
    return CatalogValidator(strict, catalog)
