"""`Relay`: delivers what apps committed to an outbox, from a process of its own (`centure-audit relay`).

The apps run with `Auditor(delivery="relay")`: they only build events and commit them, so the senders (the WorkOS
SDK's HTTP calls, the store's inserts) never share the apps' GIL. Any number of relays may be started on one
outbox: the one holding the outbox's sender lock sends, the others stand by and take over within
`standby_interval` when it dies, handing back at once the leases it left.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..sinks.base import Sink
from .builder import EventBuilder
from .dispatcher import Dispatcher, DispatcherConfig, sink_rate_limits
from .policy import RetryPolicy
from .redact import Redactor

__all__ = ["Relay"]


class Relay:
    """`Relay(sinks, outbox)`: `start()`, then `close()` to stop (leases and the sender lock are handed back)."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        outbox: str | os.PathLike[str],
        *,
        retry: RetryPolicy | None = None,
        rate_limits: Mapping[str, tuple[int, float] | None] | None = None,
        lease: float = 60.0,
        probe_interval: float = 30.0,
        standby_interval: float = 0.5,
        builder: EventBuilder | None = None,
    ) -> None:
        if not sinks:
            raise ValueError("a relay needs at least one sink")
        self.sinks = list(sinks)
        self.dispatcher = Dispatcher(
            self.sinks,
            # Completes what apps in relay mode captured (fit, enrich, validate): the apps' own configuration,
            # e.g. `Auditor.from_env().dispatcher.builder`; without one, fitting only, no enrichment.
            builder or EventBuilder(Redactor(())),
            DispatcherConfig(
                outbox_path=os.fspath(outbox),
                retry=retry or RetryPolicy(),
                rate_limits=sink_rate_limits(self.sinks, rate_limits),
                lease=lease,
                probe_interval=probe_interval,
                standby_interval=standby_interval,
                delivery="sender",
            ),
        )

    @classmethod
    def for_auditor(cls, auditor: Any, outbox: str | os.PathLike[str], **kwargs: Any) -> Relay:
        """A relay that delivers to `auditor`'s sinks and completes events with its configuration (redaction,
        validators, geolocation, user agents), as the apps that share that configuration would."""
        config = auditor.dispatcher.config
        return cls(
            auditor.sinks,
            outbox,
            retry=config.retry,
            rate_limits={**{s.name: None for s in auditor.sinks}, **config.rate_limits},
            lease=config.lease,
            probe_interval=config.probe_interval,
            builder=auditor.dispatcher.builder,
            **kwargs,
        )

    @property
    def sending(self) -> bool:
        """Whether this relay sends now: it holds the file outbox's sender lock (the others stand by), or the outbox
        is on PostgreSQL, where every relay sends."""
        lock = self.dispatcher._sender_lock
        return lock is None or lock.held

    def start(self) -> None:
        self.dispatcher.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the outbox owes nothing to any sink (while this relay, or another, sends)."""
        return self.dispatcher.flush(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what it can within `timeout`, then stop; what is left stays in the outbox for the next sender."""
        return self.dispatcher.close(timeout)

    def stats(self) -> dict[str, Any]:
        return self.dispatcher.stats()
