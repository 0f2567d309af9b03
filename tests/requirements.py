"""What the suite needs from the machine, and what happens when it is missing: a skip that says why on a
developer's machine, a failure under CI=true.

CI runs as root and installs PostgreSQL and Chromium (scripts/install-services.sh) and fetches the WorkOS OpenAPI
spec (scripts/fetch-workos-openapi-spec.sh). If any of that silently failed, a skip would turn dozens of tests into
a green run that tested nothing; so in CI "not available" is an error, reported with the reason.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

CI_ENV = "CI"


def in_ci() -> bool:
    """CI=true (what GitHub Actions, GitLab and the project's own .ci/run set), or CI=1."""
    return os.environ.get(CI_ENV, "").strip().lower() in ("true", "1")


def missing(reason: str, *, module_level: bool = False) -> NoReturn:
    """Skip with `reason`; under CI=true, fail with it instead (at module level: a collection error)."""
    if in_ci():
        pytest.fail(f"required under CI=true, but unavailable: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def require(available: bool, reason: str, *, module_level: bool = False) -> None:
    """`missing(reason)` unless `available`."""
    if not available:
        missing(reason, module_level=module_level)


def require_module(name: str, reason: str | None = None) -> ModuleType:
    """`pytest.importorskip` that fails under CI=true; for use at a test module's top level."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{reason or f'the {name} package is not installed'} ({exc})", module_level=True)
