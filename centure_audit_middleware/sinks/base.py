"""The sink interface: where delivered events go, and how a sink says what went wrong."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from ..events import AuditEvent

__all__ = ["PauseDelivery", "RejectEvent", "RetryLater", "Sink", "SinkError"]


class SinkError(Exception):
    """Base of the outcomes a sink reports by raising; anything else a sink raises counts as `RetryLater`."""


class RetryLater(SinkError):
    """A transient failure (timeout, connection error, 408/429/5xx): try again, not before `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RejectEvent(SinkError):
    """This event can never be accepted (400/404/413/422): dead-letter it with `reason`, go on with the others."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PauseDelivery(SinkError):
    """The sink refuses everyone (401/403, key revoked): keep every event and stop sending until it recovers."""


class Sink(ABC):
    """Receives validated, redacted, enriched events, in the dispatcher's threads, never on the request path.

    `name` is stable across restarts: the outbox keys each event's delivery state by it.
    """

    name: str = "sink"
    #: how many `send` calls the dispatcher may run at once for this sink
    concurrency: int = 1
    #: Delivered by the committer in the same round that commits the event (a store or a file on this machine:
    #: cheap, and a failure falls back to the outbox and a sender's retries), instead of by a sender claiming it
    #: from the outbox. Costs an inline sink nothing of the outbox: no row, no claim, no second JSON round trip.
    inline: bool = False

    @abstractmethod
    def send(self, event: AuditEvent) -> None:
        """Deliver one event or raise a `SinkError` saying why not."""

    def send_many(self, events: Sequence[AuditEvent]) -> list[BaseException | None]:
        """Deliver several events; returns one outcome per event (None for delivered). Override to batch."""
        outcomes: list[BaseException | None] = []
        for event in events:
            try:
                self.send(event)
            except Exception as exc:  # the dispatcher classifies; one bad event must not sink the batch
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    def send_encoded(self, events: Sequence[AuditEvent], bodies: Sequence[str]) -> list[BaseException | None]:
        """`send_many`, given each event's JSON (`event.to_json()`) too: a sink that writes JSON uses it instead
        of encoding the event again. Override it for that; by default the same as `send_many(events)`."""
        return self.send_many(events)

    def joined_writer(self, outbox: object) -> Callable[[Any, Sequence[AuditEvent], Sequence[str]], None] | None:
        """For an inline sink whose storage is the outbox's own database: a function writing a group through the
        outbox's connection, inside the transaction that commits the group's outbox rows, so that the two commit
        together or not at all. None (the default): delivered on its own, after the outbox commit."""
        return None

    def idle(self) -> None:
        """A moment for deferred work (the store's text index), kept short: called by the committer for an inline
        sink in a round that left nothing waiting, else by the sink's sender when it found nothing to send. Must not
        raise."""

    def close(self) -> None:
        """Release resources; called by `Auditor.close()`, possibly more than once: must be idempotent."""
