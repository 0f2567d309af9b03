"""Under CI=true a missing service fails the run; on a developer's machine it skips and says why.

Each test runs pytest itself, in a subprocess, on one test that needs the service, with the service made
unavailable through its environment variable (no DSN, a Chromium path that does not exist, a spec path that does not
exist), once as a developer and once as CI.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .store_fixtures import POSTGRES_ENV
from .workos_spec import ROOT, SPEC_ENV

pytestmark = pytest.mark.slow

# One test of each kind that needs a service: by fixture (the parametrized store backend), by marker and fixture
# (the PostgreSQL outbox), by fixture alone (README snippets), at module level (the browser module), and the WorkOS
# spec oracle.
POSTGRES_BY_FIXTURE = "tests/test_store.py::test_append_then_get_returns_the_full_event[postgres]"
POSTGRES_BY_MARKER = "tests/test_pg_outbox.py::test_a_postgresql_url_opens_a_postgresql_outbox"
#: the README's snippets that need a database (through the `pg_outbox_url` fixture)
POSTGRES_SNIPPETS = "tests/test_readme.py::test_readme_snippet_runs -k postgres"
BROWSER = "tests/test_admin_browser.py"
SPEC = "tests/test_workos_spec.py::test_the_oracle_rules"
UNAVAILABLE = {
    POSTGRES_BY_FIXTURE: {POSTGRES_ENV: ""},
    POSTGRES_BY_MARKER: {POSTGRES_ENV: ""},
    POSTGRES_SNIPPETS: {POSTGRES_ENV: ""},
    BROWSER: {"CENTURE_AUDIT_TEST_CHROMIUM": "/nonexistent/chromium"},
    SPEC: {SPEC_ENV: "/nonexistent/open-api-spec.yaml"},
}


def run_pytest(target: str, *, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in ("CI", POSTGRES_ENV)}
    env.update(UNAVAILABLE[target])
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", *target.split(), "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("target", list(UNAVAILABLE))
def test_a_developer_gets_a_skip_with_its_reason(target: str) -> None:
    result = run_pytest(target, ci=False)
    output = result.stdout + result.stderr
    assert result.returncode in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), output
    assert "skipped" in output
    assert " failed" not in output
    assert "error" not in output.lower()
    assert "SKIPPED" in output  # -ra lists each skip with its reason


@pytest.mark.parametrize("target", list(UNAVAILABLE))
def test_ci_fails_loudly(target: str) -> None:
    result = run_pytest(target, ci=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "required under CI=true" in output, output
    assert " passed" not in output.splitlines()[-1]


@pytest.mark.skipif(os.geteuid() != 0, reason="scripts/test-services.sh starts PostgreSQL only as root")
@pytest.mark.parametrize("ci", [False, True], ids=["developer", "ci"])
def test_make_unit_stops_under_ci_when_postgresql_does_not_start(ci: bool) -> None:
    """`make unit` takes its DSN from scripts/test-services.sh: under CI=true a server that fails to start stops
    the run there (it used to be `|| true`, and 82 PostgreSQL tests skipped in silence)."""
    env = {name: value for name, value in os.environ.items() if name not in ("CI", POSTGRES_ENV)}
    env["CENTURE_TEST_PG_DB"] = "Not-A-Valid-Name"  # refused by scripts/postgres-test-server.sh before it starts
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        ["scripts/test-services.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if ci:
        assert result.returncode == 1, result.stderr
        assert "CI=true, but the PostgreSQL test server did not start" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == ""  # no DSN: the PostgreSQL tests skip, and say why
        assert "the PostgreSQL tests will be skipped" in result.stderr
