"""Test helpers: `AuditLog` (the events an app records under test; the `audit_log` fixture), the WorkOS emulator
(a real HTTP server on loopback for the real `workos` SDK), and their pytest fixtures (`pytest_plugin`, registered
as a `pytest11` plugin). Names are imported on first use, so that the plugin costs a test run nothing."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capture import AuditLog
    from .emulator import (
        EVENTS_PATH,
        EXPORT_CSV_COLUMNS,
        PORTAL_INTENTS,
        Exchange,
        ReceivedEvent,
        ReceivedRequest,
        WorkOSEmulator,
        observe_exchanges,
    )

__all__ = [
    "EVENTS_PATH",
    "EXPORT_CSV_COLUMNS",
    "PORTAL_INTENTS",
    "AuditLog",
    "Exchange",
    "ReceivedEvent",
    "ReceivedRequest",
    "WorkOSEmulator",
    "observe_exchanges",
]

_HOMES = {"AuditLog": ".capture"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES.get(name, ".emulator"), __name__), name)
