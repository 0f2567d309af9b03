"""pytest fixtures for the WorkOS emulator.

Enable with `pytest_plugins = ["centure_audit_middleware.testing.pytest_plugin"]` in the root `conftest.py` (or
`-p centure_audit_middleware.testing.pytest_plugin`). Fixtures:

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

from .emulator import WorkOSEmulator

if TYPE_CHECKING:
    from workos import WorkOSClient

__all__ = ["workos_client", "workos_emulator", "workos_emulator_factory"]

EmulatorFactory = Callable[..., WorkOSEmulator]


@pytest.fixture
def workos_emulator_factory() -> Iterator[EmulatorFactory]:
    started: list[WorkOSEmulator] = []

    def factory(**kwargs: Any) -> WorkOSEmulator:
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
