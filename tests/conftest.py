"""Shared fixtures: an Auditor delivering to a MemorySink through a real outbox in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from centure_audit_middleware import Actor, AuditEvent, Auditor
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.testing import WorkOSEmulator

from .reliability_support import ProcessGroup

ALICE = Actor("user_alice", name="Alice Example", metadata={"email": "alice@example.com"})
BOB = Actor("user_bob", name="Bob Example")
ORG = "org_01TEST"


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def auditor(tmp_path: Path, sink: MemorySink) -> Iterator[Auditor]:
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "outbox.db", geoip=False, commit_interval=0.01)
    yield auditor
    auditor.close(timeout=5)


def delivered(auditor: Auditor, sink: MemorySink) -> list[AuditEvent]:
    """Everything recorded so far, once the pipeline has delivered it."""
    assert auditor.flush(timeout=10), auditor.stats()
    return list(sink.events)


@pytest.fixture
def procs(tmp_path: Path, workos_emulator: WorkOSEmulator) -> Iterator[ProcessGroup]:
    """Processes a test starts (servers, jobs, relays), killed with their children when it ends; before the
    emulator stops, since fixtures tear down in reverse."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
