"""pytest fixtures: `audit_log` for the events an app records under test, and the WorkOS emulator.

Installing the package registers this plugin (the `pytest11` entry point): its fixtures are there in every test
suite, and do nothing until a test asks for one (the module imports nothing heavy). Fixtures:

- `audit_log`: an `AuditLog`. While the test runs, every Auditor (those that exist, such as a module-level app's,
  and those made during the test, such as an app factory's) builds each event where it is handed off, with its own
  configuration, and keeps it in the log instead of delivering it: `audit_log.events`, `audit_log.actions`,
  `audit_log.assert_recorded("post.create", actor="user_1", targets=[("post", "1")])`. No thread, no file.

- `workos_emulator`: a started `WorkOSEmulator` (organization `org_01TEST`), stopped after the test.
- `workos_emulator_factory`: `factory(**kwargs) -> WorkOSEmulator` for custom ones (clock, organizations, ...);
  every emulator it made is stopped after the test.
- `workos_client`: a `workos.WorkOSClient` on `workos_emulator` with `max_retries=0` (the SDK's own retries would
  hide what the code under test does) and a 5 s timeout, closed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from workos import WorkOSClient

    from .capture import AuditLog
    from .emulator import WorkOSEmulator

__all__ = ["audit_log", "workos_client", "workos_emulator", "workos_emulator_factory"]


@pytest.fixture
def audit_log() -> Iterator[AuditLog]:
    from .capture import AuditLog

    with AuditLog().capturing() as log:
        yield log


EmulatorFactory = Callable[..., "WorkOSEmulator"]


@pytest.fixture
def workos_emulator_factory() -> Iterator[EmulatorFactory]:
    started: list[WorkOSEmulator] = []

    def factory(**kwargs: Any) -> WorkOSEmulator:
        from .emulator import WorkOSEmulator

        emulator = WorkOSEmulator(**kwargs).start()
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


@pytest.fixture
def workos_emulator(workos_emulator_factory: EmulatorFactory) -> WorkOSEmulator:
    return workos_emulator_factory()


@pytest.fixture
def workos_client(workos_emulator: WorkOSEmulator) -> Iterator[WorkOSClient]:
    from workos import WorkOSClient

    with WorkOSClient(
        api_key=workos_emulator.api_key, base_url=workos_emulator.url, max_retries=0, request_timeout=5
    ) as client:
        yield client
