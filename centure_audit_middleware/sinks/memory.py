"""An in-memory sink for tests and demos."""

from __future__ import annotations

import threading

from ..events import AuditEvent
from .base import Sink

__all__ = ["MemorySink"]


class MemorySink(Sink):
    """Keeps every delivered event in `events`, in delivery order."""

    name = "memory"
    inline = True

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.events: list[AuditEvent] = []
        self._lock = threading.Lock()

    def send(self, event: AuditEvent) -> None:
        with self._lock:
            self.events.append(event)

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
