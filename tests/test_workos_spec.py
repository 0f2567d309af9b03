"""The oracle that checks the WorkOS emulator against WorkOS's OpenAPI spec (tests/workos_spec.py): it is there,
pinned and intact, and it catches each kind of disagreement it is meant to catch.

Without the spec these tests skip, saying how to fetch it; under CI=true they fail instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from workos import WorkOSClient

from centure_audit_middleware.testing import Exchange, ReceivedRequest, WorkOSEmulator

from . import workos_spec
from .requirements import missing

ORG = "org_01TEST"
SCRIPT = workos_spec.ROOT / workos_spec.FETCH_SCRIPT


@pytest.fixture(scope="module")
def oracle() -> workos_spec.SpecOracle:
    try:
        return workos_spec.load_oracle()
    except workos_spec.SpecUnavailable as exc:
        missing(str(exc))


def event(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": "api_key.create",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "actor": {"id": "user_01", "type": "user", "name": "Ada"},
        "targets": [{"id": "proj_01", "type": "project"}],
        "context": {"location": "203.0.113.7", "user_agent": "Mozilla/5.0"},
    }
    body.update(changes)
    return {"organization_id": ORG, "event": body}


def exchange(
    method: str,
    path: str,
    sent: Any,
    status: int | None,
    answer: Any,
    *,
    fault: str | None = None,
    key: str | None = "sk_test",
) -> Exchange:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    body = b"" if sent is None else json.dumps(sent).encode()
    request = ReceivedRequest(method, path, "", headers, body, 0.0, 0.0, status=status, fault=fault)
    return Exchange(request, status, "application/json", (), b"" if answer is None else json.dumps(answer).encode())


def test_the_pinned_spec_is_there_and_intact() -> None:
    """The cached tarball still has the integrity the fetch script pins (the script checks it when it fetches; this
    catches a cache edited afterwards), and the version the oracle names is the one the script fetches."""
    script = SCRIPT.read_text()
    version = re.search(r"^VERSION=(\S+)$", script, re.MULTILINE)
    integrity = re.search(r'^INTEGRITY="(sha512-[^"]+)"$', script, re.MULTILINE)
    assert version is not None
    assert integrity is not None
    assert version.group(1) == workos_spec.SPEC_VERSION
    tarball = workos_spec.DEFAULT_SPEC.parent / "package.tgz"
    if not tarball.is_file():
        missing(f"no {tarball}: run {workos_spec.FETCH_SCRIPT}")
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    assert f"sha512-{digest}" == integrity.group(1)


# What each rule of the oracle must flag, and what it must let through. Each row: the exchange, then a fragment of
# the violation expected (None: no violation).
CASES = [
    pytest.param(exchange("POST", "/audit_logs/events", event(), 200, {"success": True}), None, id="valid-event"),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(context=None), 200, {"success": True}),
        "did not reject a request the spec rejects",
        id="invalid-event-accepted",
    ),
    pytest.param(
        exchange(
            "POST",
            "/audit_logs/events",
            event(context=None),
            422,
            {"message": "Validation failed.", "errors": [{"code": "required", "field": "event.context"}]},
        ),
        None,
        id="invalid-event-rejected",
    ),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(context=None), 503, {"message": "Unavailable"}, fault="fail_next"),
        "did not reject a request the spec rejects",
        id="invalid-event-answered-5xx",
    ),
    pytest.param(
        exchange(
            "POST",
            "/audit_logs/events",
            event(actor={"id": "u", "type": "user", "name": None}),
            200,
            {"success": True},
        ),
        "did not reject a request the spec rejects",
        id="null-name-accepted",
    ),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(occurred_at="2025-01-01T10:00:00"), 200, {"success": True}),
        "did not reject a request the spec rejects",
        id="timestamp-without-offset-accepted",
    ),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(), 200, {"ok": True}),
        "answer does not match the spec",
        id="wrong-success-body",
    ),
    pytest.param(
        # The emulator's former answer to a reused idempotency key: a 422 without `errors`.
        exchange("POST", "/audit_logs/events", event(), 422, {"message": "reused", "code": "idempotency_key_reused"}),
        "answer does not match the spec",
        id="422-without-errors",
    ),
    pytest.param(
        # The emulator's former answer to an export of an unknown organization: the spec has no 404 there.
        exchange(
            "POST",
            "/audit_logs/exports",
            {"organization_id": "org_x", "range_start": "2025-01-01T00:00:00Z", "range_end": "2025-01-02T00:00:00Z"},
            404,
            {"message": "Organization not found: 'org_x'."},
        ),
        "neither in the spec for this operation nor a documented assumption",
        id="undeclared-404",
    ),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(), 401, {"message": "Unauthorized"}, key="sk_wrong"),
        None,
        id="assumed-401",
    ),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(), 401, {"error": "nope"}),
        "must be JSON with a string `message`",
        id="assumed-401-without-message",
    ),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(), 408, {"message": "Request Timeout"}, fault="fail_next"),
        None,
        id="injected-408",
    ),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(), 408, {"message": "Request Timeout"}),
        "neither in the spec",
        id="uninjected-408",
    ),
    pytest.param(exchange("POST", "/audit_logs/events", event(), 201, {"success": True}), None, id="assumed-event-201"),
    pytest.param(
        exchange("POST", "/audit_logs/events", event(), 201, {}), "the assumed 201", id="assumed-event-201-bad-body"
    ),
    pytest.param(
        exchange("POST", "/audit_logs/nothing", {}, 200, {"success": True}),
        "the spec has no such operation",
        id="unknown-operation-served",
    ),
    pytest.param(
        exchange("POST", "/audit_logs/nothing", {}, 404, {"message": "Not Found"}), None, id="unknown-operation-404"
    ),
    pytest.param(
        exchange(
            "PUT",
            "/organizations/org_01TEST/audit_logs_retention",
            {"retention_period": "3_MONTHS"},
            200,
            {"retention_period_in_days": 90},
        ),
        None,
        id="overlay-retention-period",
    ),
    pytest.param(
        exchange(
            "PUT",
            "/organizations/org_01TEST/audit_logs_retention",
            {"retention_period": "forever"},
            200,
            {"retention_period_in_days": 90},
        ),
        "did not reject a request the spec rejects",
        id="overlay-retention-period-unknown",
    ),
    pytest.param(
        exchange("GET", "/audit_logs/exports/audit_log_export_01", None, 200, {"object": "audit_log_export"}),
        "answer does not match the spec",
        id="export-missing-fields",
    ),
    pytest.param(exchange("GET", "/portal/abc", None, 200, None), None, id="emulator-only-portal-page"),
]


@pytest.mark.parametrize(("case", "expected"), CASES)
def test_the_oracle_rules(oracle: workos_spec.SpecOracle, case: Exchange, expected: str | None) -> None:
    found = [str(violation) for violation in oracle.check(case)]
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1, found
        assert expected in found[0]


def test_a_wrong_answer_of_a_live_emulator_fails_the_test(
    oracle: workos_spec.SpecOracle,
    workos_emulator: WorkOSEmulator,
    workos_client: WorkOSClient,
    workos_spec_recorder: workos_spec.Recorder,
) -> None:
    """End to end: the session's recorder sees what the real SDK sent and what the emulator answered; the conftest
    fails any test with such a violation (this one takes the exchanges out first, to look at them itself)."""
    workos_emulator.fail_next(200, body={"success": "yes"})  # the SDK tolerates it; the spec says boolean
    workos_client.request("post", ("audit_logs", "events"), body=event())
    workos_client.audit_logs.get_organization_audit_logs_retention(ORG)

    found = workos_spec.violations(oracle, workos_spec_recorder.drain())

    assert [(v.method, v.path, v.status) for v in found] == [("POST", "/audit_logs/events", 200)]
    assert "answer does not match the spec" in found[0].problem


def test_the_fetch_script_refuses_a_tarball_that_does_not_match_its_pin(tmp_path: Path) -> None:
    """A copy of the script whose pin is wrong, beside a cache holding the real tarball: the cached copy fails the
    check, the download (if the registry is reachable) fails it too, and no spec is unpacked."""
    tarball = workos_spec.DEFAULT_SPEC.parent / "package.tgz"
    if not tarball.is_file():
        missing(f"no {tarball}: run {workos_spec.FETCH_SCRIPT}")
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "fetch.sh"
    pinned = re.sub(r'^INTEGRITY=".*"$', 'INTEGRITY="sha512-AAAA"', SCRIPT.read_text(), flags=re.MULTILINE)
    script.write_text(pinned)
    cache = tmp_path / ".cache" / "workos-openapi-spec" / workos_spec.SPEC_VERSION
    cache.mkdir(parents=True)
    shutil.copy(tarball, cache / "package.tgz")

    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode != 0, result.stderr
    assert result.stdout == ""
    assert not (cache / "open-api-spec.yaml").exists()
