"""Test helpers: the WorkOS emulator (a real HTTP server on loopback for the real `workos` SDK) and its pytest
fixtures (`centure_audit_middleware.testing.pytest_plugin`)."""

from __future__ import annotations

from .emulator import EVENTS_PATH, EXPORT_CSV_COLUMNS, PORTAL_INTENTS, ReceivedEvent, ReceivedRequest, WorkOSEmulator

__all__ = [
    "EVENTS_PATH",
    "EXPORT_CSV_COLUMNS",
    "PORTAL_INTENTS",
    "ReceivedEvent",
    "ReceivedRequest",
    "WorkOSEmulator",
]
