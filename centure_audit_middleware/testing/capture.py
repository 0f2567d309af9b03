"""`AuditLog`: the events an app records under test, built synchronously and kept in memory.

In a test, an Auditor delivers nowhere: each event is built where it is handed off (the same build, fitting,
redaction and validation as in production, with that Auditor's configuration) and appended to the log. No thread
starts, no file is written (no outbox, no local store), nothing outlives the test. Two ways in:

- the `audit_log` pytest fixture (the `pytest11` plugin this package registers): every Auditor, the ones that exist
  (a module-level app) and the ones made during the test (an app factory), records into it;
- `Auditor.for_tests()`, for an app factory that wants its own: `auditor.audit_log` is its log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..events import Actor, AuditEvent, EventError, Target

if TYPE_CHECKING:
    from ..auditor import Auditor
    from ..context import PendingEvent, RequestContext

__all__ = ["AuditLog", "active_log"]

_active: AuditLog | None = None


def active_log() -> AuditLog | None:
    """The log of the `audit_log` fixture while a test uses it: Auditors made meanwhile record into it."""
    return _active


class AuditLog:
    """`events` (delivered order), `actions`, `rejected` (events the pipeline refused, with why), and
    `assert_recorded(action, actor=..., targets=...)`."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        #: (action, reason) of events that could not be built (no organization, a validator's refusal)
        self.rejected: list[tuple[str | None, str]] = []
        self._lock = threading.Lock()

    @property
    def actions(self) -> list[str]:
        return [event.action for event in self.events]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.rejected.clear()

    def handoff_for(self, auditor: Auditor) -> Callable[[RequestContext | PendingEvent], None]:
        """What `auditor.handoff` becomes: build now, with `auditor`'s own builder, and keep the result."""
        builder = auditor.dispatcher.builder

        def handoff(item: RequestContext | PendingEvent) -> None:
            try:
                event = builder.build(item)
            except EventError as exc:
                with self._lock:
                    self.rejected.append((_action_of(item), str(exc)))
                return
            with self._lock:
                self.events.append(event)

        return handoff

    @contextmanager
    def capturing(self) -> Iterator[AuditLog]:
        """Every Auditor, existing or made inside the block, records into this log; restored afterwards."""
        from ..auditor import live_auditors

        global _active
        previous, _active = _active, self
        saved = [(auditor, auditor.handoff, auditor.audit_log) for auditor in live_auditors()]
        for auditor, _, _ in saved:
            auditor._record_into(self)
        try:
            yield self
        finally:
            _active = previous
            for auditor, handoff, log in saved:
                auditor.handoff, auditor.audit_log = handoff, log

    def find(
        self,
        action: str,
        *,
        actor: Actor | str | None = None,
        organization: str | None = None,
        targets: Sequence[Target | tuple[str, str]] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[AuditEvent]:
        """The recorded events that match: `actor` an Actor or an actor id; `targets` the (type, id) of every target,
        in order; `metadata` a subset of the event's."""
        wanted_targets = None if targets is None else [_target_key(t) for t in targets]
        actor_id = actor.id if isinstance(actor, Actor) else actor
        return [
            event
            for event in list(self.events)
            if event.action == action
            and (actor_id is None or event.actor.id == actor_id)
            and (organization is None or event.organization_id == organization)
            and (wanted_targets is None or [(t.type, t.id) for t in event.targets] == wanted_targets)
            and (metadata is None or all(event.metadata.get(k, _MISSING) == v for k, v in metadata.items()))
        ]

    def assert_recorded(
        self,
        action: str,
        *,
        actor: Actor | str | None = None,
        organization: str | None = None,
        targets: Sequence[Target | tuple[str, str]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        count: int | None = None,
    ) -> AuditEvent:
        """The matching event (the last, if several), or `AssertionError` listing what was recorded instead.
        `count`: exactly that many must match."""
        found = self.find(action, actor=actor, organization=organization, targets=targets, metadata=metadata)
        if found and (count is None or len(found) == count):
            return found[-1]
        wanted = [f"action={action!r}"]
        if actor is not None:
            wanted.append(f"actor={actor.id if isinstance(actor, Actor) else actor!r}")
        if organization is not None:
            wanted.append(f"organization={organization!r}")
        if targets is not None:
            wanted.append(f"targets={_describe_targets([_target_key(t) for t in targets])}")
        if metadata is not None:
            wanted.append(f"metadata ⊇ {dict(metadata)!r}")
        lines = [
            f"{len(found)} recorded events match {', '.join(wanted)}, expected {count}"
            if found
            else f"no recorded event matches {', '.join(wanted)}",
            f"recorded ({len(self.events)}):" if self.events else "recorded: nothing",
        ]
        lines += [f"  {_describe(event)}" for event in self.events]
        if self.rejected:
            lines.append(f"rejected ({len(self.rejected)}):")
            lines += [f"  {act}: {reason}" for act, reason in self.rejected]
        raise AssertionError("\n".join(lines))


_MISSING = object()


def _target_key(target: Target | tuple[str, str]) -> tuple[str, str]:
    return (target.type, target.id) if isinstance(target, Target) else (target[0], target[1])


def _describe_targets(keys: Sequence[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{kind}:{id}" for kind, id in keys) + "]"


def _describe(event: AuditEvent) -> str:
    targets = _describe_targets([(t.type, t.id) for t in event.targets])
    return f"{event.action}  actor={event.actor.id}  organization={event.organization_id}  targets={targets}"


def _action_of(item: RequestContext | PendingEvent) -> str | None:
    spec = getattr(item, "spec", None)
    return spec.action if spec is not None else getattr(item, "action", None)
