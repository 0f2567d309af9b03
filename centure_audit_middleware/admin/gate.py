"""Deliver only what organizations pay for: a sink wrapper that holds back events of organizations without an active
Audit Logging add-on.

    gate = EntitlementGate(entitlements, policy="store_only")
    auditor = Auditor(sinks=gate.apply([WorkOSSink(), StoreSink(store)]))
    gate.stats()   # {"checked": ..., "skipped": ..., ...}

Why a sink wrapper and not a validator: a validator runs once per event, before every sink, and a failure
dead-letters the event everywhere; the add-on decides per *destination* (WorkOS is the paid product, the local store
is ours), so the decision belongs next to each sink.

Why "skip" and not `RejectEvent`: a rejected event is dead-lettered, which means "an operator must look at this".
Events of an organization that never subscribed are the normal case, not an incident: dead-lettering them would bury
real failures under thousands of expected ones and make the dead-letter count useless as an alarm. A skipped event
is acknowledged for that sink (the outbox forgets it there) and counted here. Under "store_only" the local store
still has every event, so nothing is lost. When the answer is unknown (billing provider down, nothing cached) the
event is neither skipped nor sent: `RetryLater`, so the outbox keeps it until the answer is known.

Policies:
- ``"store_only"`` (default): `apply` gates every sink except the local ones (`StoreSink`, `MemorySink`,
  `JsonlSink`): unentitled organizations' events are kept locally but never reach WorkOS.
- ``"drop"``: `apply` gates every sink: unentitled organizations' events go nowhere (counted).
- ``"deliver"``: nothing is held back; events of unentitled organizations are only counted (to size the gap before
  turning enforcement on).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, Literal, TypedDict, get_args

from ..events import AuditEvent
from ..sinks.base import RetryLater, Sink
from .entitlements import Entitlements

__all__ = ["NOT_ENTITLED", "EntitledSink", "EntitlementGate", "GatePolicy", "GateStats", "is_local_sink"]

GatePolicy = Literal["drop", "store_only", "deliver"]
NOT_ENTITLED: Final = "organization has no active Audit Logging add-on"
#: How long an event waits before the entitlement is asked again after a lookup failure.
LOOKUP_RETRY_SECONDS: Final = 30.0


def is_local_sink(sink: Sink) -> bool:
    """The sinks that keep our own record (store, file, memory), as opposed to delivering to WorkOS."""
    from ..sinks.jsonl import JsonlSink
    from ..sinks.memory import MemorySink
    from ..sinks.store import StoreSink

    inner = sink.inner if isinstance(sink, EntitledSink) else sink
    return isinstance(inner, StoreSink | MemorySink | JsonlSink)


class GateStats(TypedDict):
    """`EntitlementGate.stats()`: one count per decision (an event sent to two gated sinks is decided twice)."""

    checked: int
    entitled: int
    #: held back (policies "store_only" and "drop")
    skipped: int
    #: let through by policy "deliver"
    passed_unentitled: int
    #: answer unknown: the event was left in the outbox for a later attempt
    lookup_failures: int
    skipped_by_sink: dict[str, int]
    policy: GatePolicy


class EntitlementGate:
    """The policy and the counters shared by every `EntitledSink` it made. Thread-safe."""

    def __init__(self, entitlements: Entitlements, policy: GatePolicy = "store_only") -> None:
        if policy not in get_args(GatePolicy):
            raise ValueError(f"policy must be one of {', '.join(get_args(GatePolicy))}, got {policy!r}")
        self.entitlements = entitlements
        self.policy: GatePolicy = policy
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._skipped_by_sink: Counter[str] = Counter()

    def wrap(self, sink: Sink) -> EntitledSink:
        """`sink`, holding back events of unentitled organizations (unless the policy is "deliver")."""
        return EntitledSink(sink, self)

    def apply(self, sinks: Iterable[Sink]) -> list[Sink]:
        """`sinks` with the policy's gating applied: see the module documentation."""
        out: list[Sink] = []
        for sink in sinks:
            gated = self.policy != "store_only" or not is_local_sink(sink)
            out.append(self.wrap(sink) if gated else sink)
        return out

    def allows(self, event: AuditEvent, sink_name: str = "") -> bool:
        """Whether `event` may go to the sink; counts the decision. `RetryLater` when the answer is unknown."""
        try:
            entitled = self.entitlements.is_active(event.organization_id)
        except Exception as exc:
            self._count("lookup_failures")
            # Never the event's content: only which lookup failed and why.
            raise RetryLater(
                f"entitlement lookup failed: {type(exc).__name__}", retry_after=LOOKUP_RETRY_SECONDS
            ) from None
        if entitled:
            self._count("entitled")
            return True
        if self.policy == "deliver":
            self._count("passed_unentitled")
            return True
        with self._lock:
            self._counts["skipped"] += 1
            self._skipped_by_sink[sink_name] += 1
        return False

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def stats(self) -> GateStats:
        """The decisions made so far; see `GateStats`."""
        with self._lock:
            counts = dict(self._counts)
            by_sink = dict(self._skipped_by_sink)
        return GateStats(
            checked=sum(counts.values()),
            entitled=counts.get("entitled", 0),
            skipped=counts.get("skipped", 0),
            passed_unentitled=counts.get("passed_unentitled", 0),
            lookup_failures=counts.get("lookup_failures", 0),
            skipped_by_sink=by_sink,
            policy=self.policy,
        )


class EntitledSink(Sink):
    """`inner`, minus the events the gate holds back (acknowledged without sending, counted by the gate)."""

    def __init__(self, inner: Sink, gate: EntitlementGate) -> None:
        self.inner = inner
        self.gate = gate
        # The outbox keys delivery state by sink name, and the Auditor reads the rate limit and concurrency from the
        # sink it is given: the wrapper must look like the sink it wraps.
        self.name = inner.name
        self.concurrency = inner.concurrency
        self.default_rate_limit = getattr(inner, "default_rate_limit", None)

    def send(self, event: AuditEvent) -> None:
        if self.gate.allows(event, self.name):
            self.inner.send(event)

    def send_many(self, events: Sequence[AuditEvent]) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = [None] * len(events)
        allowed: list[int] = []
        for i, event in enumerate(events):
            try:
                if self.gate.allows(event, self.name):
                    allowed.append(i)
            except RetryLater as exc:
                outcomes[i] = exc
        if allowed:
            # One call for the allowed ones keeps a store's batch in one transaction.
            for i, outcome in zip(allowed, self.inner.send_many([events[i] for i in allowed]), strict=True):
                outcomes[i] = outcome
        return outcomes

    def close(self) -> None:
        self.inner.close()
