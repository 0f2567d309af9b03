"""Shared fixtures: an Auditor delivering to a MemorySink through a real outbox in a temporary folder."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from centure_audit_middleware import Actor, AuditEvent, Auditor
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.testing import Exchange, WorkOSEmulator, observe_exchanges

from . import workos_spec
from .reliability_support import ProcessGroup
from .requirements import in_ci

if TYPE_CHECKING:
    from fastapi import FastAPI

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


def fastapi_app_as_alice() -> FastAPI:
    """A FastAPI app whose auth layer (an HTTP middleware) says Alice of `ORG` acts in every request."""
    from fastapi import FastAPI

    from centure_audit_middleware import audit

    app = FastAPI()

    @app.middleware("http")
    async def identify(request, call_next):  # type: ignore[no-untyped-def]
        audit.actor(ALICE)
        audit.organization(ORG)
        return await call_next(request)

    return app


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


# ---------------------------------------------------------------------- CI=true: a service test never skips

#: Markers of tests that need a service CI installs (tests/requirements.py): under CI=true their skip is a failure,
#: however the skip came about (a fixture, a skipif, a helper written later that forgets `requirements.missing`).
REQUIRED_IN_CI = ("postgres", "browser")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        needed = [name for name in REQUIRED_IN_CI if item.get_closest_marker(name) is not None]
        if needed:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            report.outcome = "failed"
            report.longrepr = f"required under CI=true ({', '.join(needed)}), but skipped: {reason}"
    return report


# ---------------------------------------------------------------------- the emulator checked against WorkOS's spec

# Every exchange of every WorkOS emulator in this process, from the start of the session to its end (module-scoped
# emulators included), taken by the test that was running (or, for those in no test, by the session's end).
_SPEC_RECORDER = workos_spec.Recorder()
_SPEC_STACK = ExitStack()
_SPEC_LEFTOVERS: list[workos_spec.Violation] = []


def pytest_configure(config: pytest.Config) -> None:
    _SPEC_STACK.enter_context(observe_exchanges(_SPEC_RECORDER))


def pytest_unconfigure(config: pytest.Config) -> None:
    _SPEC_STACK.close()


def pytest_report_header(config: pytest.Config) -> str:
    # Only the path is checked here: the spec is parsed when the first exchange needs checking.
    path = workos_spec.spec_path()
    if not path.is_file():
        return f"WorkOS OpenAPI oracle: OFF (no spec at {path}; run {workos_spec.FETCH_SCRIPT})"
    return f"WorkOS OpenAPI oracle: @workos/openapi-spec {workos_spec.SPEC_VERSION} at {path}"


def _spec_violations(exchanges: list[Exchange]) -> list[workos_spec.Violation]:
    if not exchanges:
        return []
    try:
        oracle = workos_spec.load_oracle()
    except workos_spec.SpecUnavailable:
        return []  # said in the report header; tests/test_workos_spec.py skips, or fails under CI=true
    return workos_spec.violations(oracle, exchanges)


@pytest.fixture
def workos_spec_recorder() -> workos_spec.Recorder:
    """The session's recorder, for a test that makes violations on purpose and takes them out (`drain()`)."""
    return _SPEC_RECORDER


@pytest.fixture(autouse=True)
def _workos_spec_oracle() -> Iterator[None]:
    """Fails the test if any request or answer of a WorkOS emulator during it disagrees with the spec."""
    yield
    found = _spec_violations(_SPEC_RECORDER.drain())
    if found:
        listing = "\n".join(f"  {violation}" for violation in found[:20])
        more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
        pytest.fail(f"the WorkOS emulator disagrees with WorkOS's OpenAPI spec:\n{listing}{more}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Exchanges outside any test (module or session fixtures being torn down) are checked last."""
    _SPEC_LEFTOVERS.extend(_spec_violations(_SPEC_RECORDER.drain()))
    if _SPEC_LEFTOVERS and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SPEC_LEFTOVERS:
        terminalreporter.section("WorkOS emulator vs. WorkOS's OpenAPI spec (outside tests)", red=True)
        for violation in _SPEC_LEFTOVERS:
            terminalreporter.line(str(violation))
