"""Where events go: `MemorySink`, `StoreSink`, `JsonlSink`, `WorkOSSink`, or your own `Sink` subclass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import PauseDelivery, RejectEvent, RetryLater, Sink, SinkError
from .memory import MemorySink

if TYPE_CHECKING:
    from .jsonl import JsonlSink
    from .store import StoreSink
    from .workos import WorkOSSink

__all__ = [
    "JsonlSink",
    "MemorySink",
    "PauseDelivery",
    "RejectEvent",
    "RetryLater",
    "Sink",
    "SinkError",
    "StoreSink",
    "WorkOSSink",
]

_LAZY = {"JsonlSink": ".jsonl", "StoreSink": ".store", "WorkOSSink": ".workos"}


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import centure_audit_middleware` does not load the workos SDK or a database.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
