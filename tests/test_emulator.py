"""The WorkOS emulator, driven by the real `workos` SDK over HTTP on loopback.

These tests pin both sides of the contract the WorkOS sink relies on: what the emulator answers (shaped like the
real API, DESIGN.md §6) and which SDK exception each answer becomes. Every SDK client uses `max_retries=0`, so each
call is exactly one HTTP request.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from workos import (
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    NotFoundError,
    RateLimitExceededError,
    ServerError,
    UnprocessableEntityError,
    WorkOSClient,
)
from workos._errors import APIError, WorkOSConnectionError, WorkOSError, WorkOSTimeoutError
from workos.audit_logs import RetentionPeriod, RetentionPeriodInDays
from workos.audit_logs.models import (
    AuditLogEvent,
    AuditLogEventActor,
    AuditLogEventContext,
    AuditLogSchemaActor,
    AuditLogSchemaTarget,
)

from centure_audit_middleware.commands import emulator as emulator_command
from centure_audit_middleware.testing import EXPORT_CSV_COLUMNS, WorkOSEmulator

if TYPE_CHECKING:
    from centure_audit_middleware.testing.pytest_plugin import EmulatorFactory


ORG = "org_01TEST"


class FakeClock:
    """The emulator's injectable clock, moved by hand to age idempotency keys and links without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_event(**changes: Any) -> AuditLogEvent:
    event = AuditLogEvent(
        action="api_key.create",
        occurred_at=datetime.now(UTC),
        actor=AuditLogEventActor(id="user_01", type="user", name="Ada", metadata={"email": "ada@example.com"}),
        targets=[AuditLogEventActor(id="proj_01", type="project", name="Apollo")],
        context=AuditLogEventContext(location="203.0.113.7", user_agent="Mozilla/5.0"),
        metadata={"source": "/projects/proj_01/api-keys/new"},
    )
    return dataclasses.replace(event, **changes)


def raw_event(**changes: Any) -> dict[str, Any]:
    """The JSON body the SDK would send, for payloads the SDK's types cannot express."""
    event = make_event().to_dict()
    event.update(changes)
    return {"organization_id": ORG, "event": event}


@contextmanager
def sdk(emulator: WorkOSEmulator, *, api_key: str | None = None) -> Iterator[WorkOSClient]:
    with WorkOSClient(
        api_key=api_key or emulator.api_key, base_url=emulator.url, max_retries=0, request_timeout=5
    ) as client:
        yield client


def errors_of(error: APIError) -> list[dict[str, Any]]:
    """The `errors` array of an error body (the SDK types it as Any | None)."""
    assert isinstance(error.errors, list)
    return error.errors


def post_event(client: WorkOSClient, body: dict[str, Any], key: str | None = None) -> Any:
    return client.request("post", ("audit_logs", "events"), body=body, idempotency_key=key)


# ---------------------------------------------------------------------- create_event


def test_create_event_is_accepted_and_recorded(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    response = workos_client.audit_logs.create_event(organization_id=ORG, event=make_event(), idempotency_key="evt_1")

    assert response.success is True
    [received] = workos_emulator.events
    assert received.organization_id == ORG
    assert received.idempotency_key == "evt_1"
    assert received.id.startswith("audit_log_event_")
    assert received.event["action"] == "api_key.create"
    assert received.event["occurred_at"].endswith("Z")  # the SDK sends UTC with a Z
    assert received.event["context"] == {"location": "203.0.113.7", "user_agent": "Mozilla/5.0"}
    [request] = workos_emulator.requests
    assert (request.method, request.path, request.status) == ("POST", "/audit_logs/events", 200)
    assert request.header("Idempotency-Key") == "evt_1"
    assert request.header("authorization") == f"Bearer {workos_emulator.api_key}"
    assert workos_emulator.count_by_key() == {"evt_1": 1}


def test_url_works_with_and_without_trailing_slash(workos_emulator: WorkOSEmulator) -> None:
    assert workos_emulator.url == f"http://127.0.0.1:{workos_emulator.port}/"
    with WorkOSClient(api_key=workos_emulator.api_key, base_url=workos_emulator.url.rstrip("/"), max_retries=0) as c:
        c.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert len(workos_emulator.events) == 1


def test_event_success_status_is_configurable(workos_emulator_factory: EmulatorFactory) -> None:
    emulator = workos_emulator_factory(event_success_status=201)
    with sdk(emulator) as client:
        assert client.audit_logs.create_event(organization_id=ORG, event=make_event()).success is True
    assert emulator.requests[0].status == 201


def test_replay_with_the_same_key_is_not_a_new_commit(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient
) -> None:
    event = make_event()
    for _ in range(3):
        assert workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k").success

    assert len(workos_emulator.events) == 1
    assert workos_emulator.count_by_key() == {"k": 1}
    assert [r.replayed for r in workos_emulator.requests] == [False, True, True]
    assert workos_emulator.duplicate_events() == []


def test_the_same_key_with_a_different_body_is_rejected(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient
) -> None:
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event(), idempotency_key="k")
    with pytest.raises(UnprocessableEntityError) as caught:
        workos_client.audit_logs.create_event(
            organization_id=ORG, event=make_event(action="project.create"), idempotency_key="k"
        )
    assert caught.value.code == "idempotency_key_reused"
    assert workos_emulator.count_by_key() == {"k": 1}


def test_key_order_does_not_make_a_body_different(workos_emulator: WorkOSEmulator) -> None:
    body = raw_event()
    reordered = {"event": dict(reversed(list(body["event"].items()))), "organization_id": ORG}
    with sdk(workos_emulator) as client:
        post_event(client, body, "k")
        post_event(client, reordered, "k")
    assert workos_emulator.count_by_key() == {"k": 1}


def test_keys_expire_after_24_hours_on_the_emulator_clock(workos_emulator_factory: EmulatorFactory) -> None:
    clock = FakeClock()
    emulator = workos_emulator_factory(clock=clock)
    event = make_event()
    with sdk(emulator) as client:
        client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
        clock.advance(24 * 3600 - 1)
        client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
        assert emulator.count_by_key() == {"k": 1}
        clock.advance(1)
        client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    # The real API would "generate a new response": the event is stored twice.
    assert emulator.count_by_key() == {"k": 2}
    assert len(emulator.duplicate_events()) == 1


def test_the_sdk_sends_a_fresh_key_per_call_when_none_is_given(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient
) -> None:
    event = make_event()
    workos_client.audit_logs.create_event(organization_id=ORG, event=event)
    workos_client.audit_logs.create_event(organization_id=ORG, event=event)
    keys = [r.header("idempotency-key") for r in workos_emulator.requests]
    assert len(set(keys)) == 2
    assert None not in keys
    # Hence the sink must pass the event id: without it, a retry is a duplicate.
    assert len(workos_emulator.duplicate_events()) == 1


# ---------------------------------------------------------------------- validation and error mapping


@pytest.mark.parametrize(
    ("metadata_location", "metadata", "instance_path"),
    [
        pytest.param("event", {f"k{i}": i for i in range(51)}, "/metadata", id="51-keys"),
        pytest.param("event", {"user.email": "a"}, "/metadata", id="key-with-dot"),
        pytest.param("event", {"a b": "a"}, "/metadata", id="key-with-space"),
        pytest.param("event", {"k" * 41: "a"}, "/metadata", id="key-41-chars"),
        pytest.param("event", {"source": "x" * 501}, "/metadata/source", id="value-501-chars"),
        pytest.param("event", {"emoji": "😀" * 251}, "/metadata/emoji", id="value-502-utf16-units"),
        pytest.param("event", {"nested": {"a": 1}}, "/metadata/nested", id="value-object"),
        pytest.param("event", {"list": [1]}, "/metadata/list", id="value-array"),
        pytest.param("event", {"none": None}, "/metadata/none", id="value-null"),
        pytest.param("actor", {"x.y": "a"}, "/actor/metadata", id="actor-key"),
        pytest.param("target", {"v": "x" * 501}, "/targets/0/metadata/v", id="target-value"),
    ],
)
def test_metadata_rules_answer_400(
    workos_emulator: WorkOSEmulator, metadata_location: str, metadata: dict[str, Any], instance_path: str
) -> None:
    body = raw_event()
    owner = {"event": body["event"], "actor": body["event"]["actor"], "target": body["event"]["targets"][0]}
    owner[metadata_location]["metadata"] = metadata
    with sdk(workos_emulator) as client, pytest.raises(BadRequestError) as caught:
        post_event(client, body)
    assert caught.value.code == "invalid_audit_log_event"
    assert instance_path in [error["instancePath"] for error in errors_of(caught.value)]
    assert workos_emulator.events == []


def test_metadata_at_the_limits_is_accepted(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    metadata: dict[str, str | float | bool] = {f"k{i}": i for i in range(47)}
    metadata["k" * 40] = "😀" * 250  # 500 UTF-16 units
    metadata["ascii"] = "x" * 500
    metadata["flag-and_dash"] = False
    assert len(metadata) == 50
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event(metadata=metadata))
    assert len(workos_emulator.events) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"action": None}, "event.action", id="action-missing"),
        pytest.param({"action": 3}, "event.action", id="action-not-string"),
        pytest.param({"occurred_at": "yesterday"}, "event.occurred_at", id="occurred-at-not-iso"),
        pytest.param({"occurred_at": 1700000000}, "event.occurred_at", id="occurred-at-number"),
        pytest.param({"actor": {"type": "user"}}, "event.actor.id", id="actor-without-id"),
        pytest.param({"targets": {"id": "x", "type": "y"}}, "event.targets", id="targets-not-array"),
        pytest.param({"targets": [{"id": "x"}]}, "event.targets.0.type", id="target-without-type"),
        pytest.param({"context": {"user_agent": "x"}}, "event.context.location", id="location-missing"),
        pytest.param({"context": None}, "event.context", id="context-missing"),
        pytest.param({"version": "1"}, "event.version", id="version-not-integer"),
    ],
)
def test_dto_checks_answer_422(workos_emulator: WorkOSEmulator, changes: dict[str, Any], field: str) -> None:
    with sdk(workos_emulator) as client, pytest.raises(UnprocessableEntityError) as caught:
        post_event(client, raw_event(**changes))
    assert caught.value.message == "Validation failed."
    assert field in [error["field"] for error in errors_of(caught.value)]
    assert all(set(error) == {"code", "field"} for error in errors_of(caught.value))


def test_unknown_organization_is_404(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        workos_client.audit_logs.create_event(organization_id="org_missing", event=make_event())
    assert "Organization not found" in caught.value.message
    assert caught.value.code == "entity_not_found"
    workos_emulator.add_organization("org_missing")
    workos_client.audit_logs.create_event(organization_id="org_missing", event=make_event())


def test_wrong_or_revoked_key_is_401(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    with sdk(workos_emulator, api_key="sk_test_wrong") as wrong, pytest.raises(AuthenticationError):
        wrong.audit_logs.create_event(organization_id=ORG, event=make_event())
    workos_emulator.revoke_key()
    with pytest.raises(AuthenticationError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert caught.value.status_code == 401
    workos_emulator.restore_key()
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert [r.status for r in workos_emulator.requests] == [401, 401, 200]


def test_body_over_the_limit_is_413(workos_emulator_factory: EmulatorFactory) -> None:
    emulator = workos_emulator_factory(max_body_bytes=4096)
    with sdk(emulator) as client:
        with pytest.raises(APIError) as caught:
            client.audit_logs.create_event(
                organization_id=ORG, event=make_event(metadata={f"k{i}": "x" * 400 for i in range(12)})
            )
        # 413 has no dedicated SDK class: a bare APIError (not BadRequestError, not ServerError).
        assert type(caught.value) is APIError
        assert caught.value.status_code == 413
        # The body was drained, so the kept-alive connection still works.
        client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert len(emulator.events) == 1


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        pytest.param(400, BadRequestError, id="400"),
        pytest.param(401, AuthenticationError, id="401"),
        pytest.param(403, AuthorizationError, id="403"),
        pytest.param(404, NotFoundError, id="404"),
        pytest.param(422, UnprocessableEntityError, id="422"),
        pytest.param(429, RateLimitExceededError, id="429"),
        pytest.param(500, ServerError, id="500"),
        pytest.param(502, ServerError, id="502"),
        pytest.param(503, ServerError, id="503"),
        pytest.param(504, ServerError, id="504"),
    ],
)
def test_injected_statuses_map_to_sdk_exceptions(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient, status: int, exception: type[APIError]
) -> None:
    event = make_event()  # the same body on every attempt, as a retry must send
    workos_emulator.fail_next(status)
    with pytest.raises(exception) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    assert caught.value.status_code == status
    assert caught.value.request_id  # the emulator sends X-Request-ID like the real API
    # An injected failure commits nothing, and the key stays usable.
    assert workos_emulator.events == []
    workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    assert workos_emulator.count_by_key() == {"k": 1}
    assert [r.fault for r in workos_emulator.requests] == ["fail_next", None]


def test_408_is_a_plain_api_error(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.fail_next(408)
    with pytest.raises(APIError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert type(caught.value) is APIError
    assert caught.value.status_code == 408


def test_fail_next_counts_and_custom_bodies(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.fail_next(503, count=2, body={"message": "maintenance", "code": "down"})
    for _ in range(2):
        with pytest.raises(ServerError) as caught:
            workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
        assert (caught.value.message, caught.value.code) == ("maintenance", "down")
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())


def test_fail_next_only_matches_its_path(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.fail_next(500, path="/portal/generate_link")
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    with pytest.raises(ServerError):
        workos_client.admin_portal.generate_link(organization=ORG, intent="audit_logs")


def test_retry_after_in_seconds(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.fail_next(429, retry_after="7")
    with pytest.raises(RateLimitExceededError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert caught.value.retry_after == 7.0
    assert caught.value.code == "rate_limit_exceeded"


def test_retry_after_as_http_date(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.fail_next(429, retry_after=formatdate(time.time() + 30, usegmt=True))
    with pytest.raises(RateLimitExceededError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert caught.value.retry_after is not None
    assert 28 <= caught.value.retry_after <= 30


def test_retry_after_on_503_is_only_a_header(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.fail_next(503, retry_after="5")
    with pytest.raises(ServerError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    # ServerError has no retry_after attribute: read the header from the response.
    assert caught.value.response is not None
    assert caught.value.response.headers["Retry-After"] == "5"


def test_rate_limit_window(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.set_rate_limit(3, window_seconds=60)
    for _ in range(3):
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    with pytest.raises(RateLimitExceededError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert caught.value.retry_after is not None
    assert 1 <= caught.value.retry_after <= 60
    workos_emulator.set_rate_limit(None)
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())


def test_failure_rate_flaps_and_is_reproducible(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    def run() -> list[bool]:
        outcomes = []
        for _ in range(40):
            try:
                workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
                outcomes.append(True)
            except ServerError:
                outcomes.append(False)
        return outcomes

    workos_emulator.set_failure_rate(0.5, seed=7)
    first = run()
    workos_emulator.set_failure_rate(0.5, seed=7)
    assert run() == first
    assert 8 <= first.count(False) <= 32
    assert {r.status for r in workos_emulator.requests} == {200, 503}
    workos_emulator.set_failure_rate(0.0)
    assert all(run())


def test_unknown_route_is_404(workos_client: WorkOSClient) -> None:
    with pytest.raises(NotFoundError):
        workos_client.request("get", ("audit_logs", "nothing"))


def test_invalid_json_is_400(workos_emulator: WorkOSEmulator) -> None:
    headers = {"Authorization": f"Bearer {workos_emulator.api_key}", "Content-Type": "application/json"}
    with httpx.Client() as http:
        response = http.post(f"{workos_emulator.url}audit_logs/events", content=b"{not json", headers=headers)
        nan = http.post(f"{workos_emulator.url}audit_logs/events", content=b'{"x": NaN}', headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert nan.status_code == 400


# ---------------------------------------------------------------------- timeouts, resets, stalls, outages


def test_latency_delays_every_answer(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.set_latency(0.2)
    started = time.monotonic()
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert time.monotonic() - started >= 0.2


def test_a_client_timeout_during_latency_may_still_commit(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient
) -> None:
    event = make_event()  # the same body on every attempt, as a retry must send
    workos_emulator.set_latency(0.3)
    with pytest.raises(WorkOSTimeoutError):
        workos_client.audit_logs.create_event(
            organization_id=ORG, event=event, idempotency_key="k", request_options={"timeout": 0.1}
        )
    # The server does not know the client left: the event lands anyway, and only the key saves the retry.
    assert workos_emulator.wait_for_events(1, timeout=2)
    workos_emulator.set_latency(0)
    workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    assert workos_emulator.count_by_key() == {"k": 1}


def test_connection_reset_before_commit(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    event = make_event()  # the same body on every attempt, as a retry must send
    workos_emulator.reset_connections(1)
    with pytest.raises(WorkOSError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    # A reset is neither an APIError nor WorkOSConnectionError (that one is only for failing to connect).
    assert type(caught.value) is WorkOSError
    assert "Network error" in str(caught.value)
    assert workos_emulator.events == []
    workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    assert [(r.status, r.fault) for r in workos_emulator.requests] == [(None, "reset"), (200, None)]
    assert workos_emulator.count_by_key() == {"k": 1}


def test_connection_reset_after_commit_then_retry_replays(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient
) -> None:
    event = make_event()  # the same body on every attempt, as a retry must send
    workos_emulator.reset_connections(1, after_commit=True)
    with pytest.raises(WorkOSError):
        workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    assert len(workos_emulator.events) == 1
    workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    assert workos_emulator.count_by_key() == {"k": 1}
    assert workos_emulator.requests[-1].replayed


def test_commit_then_stall(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    workos_emulator.commit_then_stall(1.5)
    event = make_event()
    started = time.monotonic()
    with pytest.raises(WorkOSTimeoutError):
        workos_client.audit_logs.create_event(
            organization_id=ORG, event=event, idempotency_key="k", request_options={"timeout": 0.2}
        )
    assert time.monotonic() - started < 1.0
    assert len(workos_emulator.events) == 1  # committed before the stall
    # The retry arrives while the first request still stalls, and replays at once.
    workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    assert workos_emulator.count_by_key() == {"k": 1}
    assert [(r.fault, r.replayed) for r in workos_emulator.requests] == [("stall", False), (None, True)]


def test_endpoint_down_refuses_then_recovers_on_the_same_port(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient
) -> None:
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())  # a pooled keep-alive connection
    url = workos_emulator.url
    workos_emulator.set_down(True)
    with pytest.raises(WorkOSConnectionError):
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    workos_emulator.set_down(False)
    assert workos_emulator.url == url
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert len(workos_emulator.events) == 2


def test_endpoint_blackhole_times_out_then_heals(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    event = make_event()  # the same body on every attempt, as a retry must send
    workos_emulator.set_down(True, mode="blackhole")
    with pytest.raises(WorkOSTimeoutError):
        workos_client.audit_logs.create_event(
            organization_id=ORG, event=event, idempotency_key="k", request_options={"timeout": 0.2}
        )
    workos_emulator.set_down(False)
    workos_client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
    assert workos_emulator.count_by_key() == {"k": 1}


def test_concurrent_attempts_with_one_key_commit_once(workos_emulator: WorkOSEmulator) -> None:
    event = make_event()
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def attempt() -> None:
        try:
            with sdk(workos_emulator) as client:
                barrier.wait()
                client.audit_logs.create_event(organization_id=ORG, event=event, idempotency_key="k")
        except BaseException as error:  # surfaced below: an exception in a thread would be lost
            failures.append(error)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert workos_emulator.count_by_key() == {"k": 1}
    assert sum(r.replayed for r in workos_emulator.requests) == 7


def test_many_clients_in_parallel(workos_emulator: WorkOSEmulator) -> None:
    def send(worker: int) -> None:
        with sdk(workos_emulator) as client:
            for i in range(50):
                client.audit_logs.create_event(organization_id=ORG, event=make_event(), idempotency_key=f"{worker}-{i}")

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert workos_emulator.wait_for_events(200, timeout=1)
    assert set(workos_emulator.count_by_key().values()) == {1}
    assert len(workos_emulator.count_by_key()) == 200


# ---------------------------------------------------------------------- exports


def test_export_create_poll_download(workos_emulator_factory: EmulatorFactory) -> None:
    emulator = workos_emulator_factory(export_polls_until_ready=2)
    now = datetime.now(UTC)
    with sdk(emulator) as client:
        client.audit_logs.create_event(organization_id=ORG, event=make_event(occurred_at=now - timedelta(hours=2)))
        client.audit_logs.create_event(
            organization_id=ORG, event=make_event(action="project.create", occurred_at=now - timedelta(hours=1))
        )
        client.audit_logs.create_event(organization_id=ORG, event=make_event(occurred_at=now - timedelta(days=3)))

        export = client.audit_logs.create_export(
            organization_id=ORG, range_start=now - timedelta(days=1), range_end=now, actions=["api_key.create"]
        )
        assert (export.object, export.state.value, export.url) == ("audit_log_export", "pending", None)
        assert export.id.startswith("audit_log_export_")
        assert client.audit_logs.get_export(export.id).state.value == "pending"
        ready = client.audit_logs.get_export(export.id)
        assert ready.state.value == "ready"
        assert ready.url is not None
        assert ready.url.startswith(emulator.url)
        again = client.audit_logs.get_export(export.id)
        assert again.url != ready.url  # each fetch mints a fresh URL

    with httpx.Client() as http:
        download = http.get(ready.url)  # presigned: no API key
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert tuple(rows[0]) == EXPORT_CSV_COLUMNS
    assert [(row["action"], row["actor_id"], row["location"]) for row in rows] == [
        ("api_key.create", "user_01", "203.0.113.7")
    ]
    assert rows[0]["targets"].startswith('[{"id":"proj_01"')


def test_export_filters(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    now = datetime.now(UTC)
    bob = AuditLogEventActor(id="user_02", type="user", name="Bob")
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event(actor=bob, targets=[]))

    def rows(**filters: Any) -> list[str]:
        export = workos_client.audit_logs.create_export(
            organization_id=ORG, range_start=now - timedelta(hours=1), range_end=now + timedelta(hours=1), **filters
        )
        url = workos_client.audit_logs.get_export(export.id).url
        assert url is not None
        with httpx.Client() as http:
            return [row["actor_id"] for row in csv.DictReader(io.StringIO(http.get(url).text))]

    assert sorted(rows()) == ["user_01", "user_02"]
    assert rows(actor_names=["Bob"]) == ["user_02"]
    assert rows(actor_ids=["user_01"]) == ["user_01"]
    assert rows(targets=["project"]) == ["user_01"]


def test_export_errors(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    """The spec declares only 201 and 400 for POST /audit_logs/exports: an unknown organization and invalid
    parameters are 400s too (the latter in NestJS's `{message: [...], error}` shape the spec gives)."""
    now = datetime.now(UTC)
    with pytest.raises(BadRequestError) as missing:
        workos_client.audit_logs.create_export(organization_id="org_missing", range_start=now, range_end=now)
    assert missing.value.code == "entity_not_found"
    with pytest.raises(BadRequestError) as caught:
        workos_client.audit_logs.create_export(
            organization_id=ORG, range_start=now - timedelta(days=100), range_end=now
        )
    assert caught.value.code == "invalid_date_range_exception"
    with pytest.raises(BadRequestError) as invalid:
        workos_client.audit_logs.create_export(organization_id=ORG, range_start="soon", range_end=now)
    assert invalid.value.code == "invalid_request_parameters"
    assert "range_start" in invalid.value.message
    with pytest.raises(NotFoundError):
        workos_client.audit_logs.get_export("audit_log_export_missing")


def test_export_url_expires_after_10_minutes(workos_emulator_factory: EmulatorFactory) -> None:
    clock = FakeClock()
    emulator = workos_emulator_factory(clock=clock)
    now = datetime.now(UTC)
    with sdk(emulator) as client:
        export = client.audit_logs.create_export(organization_id=ORG, range_start=now, range_end=now)
        url = client.audit_logs.get_export(export.id).url
    assert url is not None
    clock.advance(601)
    with httpx.Client() as http:
        assert http.get(url).status_code == 403


# ---------------------------------------------------------------------- actions and schemas


def test_schema_versions(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    targets = [AuditLogSchemaTarget(type="project")]
    actor = AuditLogSchemaActor(metadata={"type": "object", "properties": {"email": {"type": "string"}}})
    first = workos_client.audit_logs.create_schema("api_key.create", targets=targets, actor=actor)
    same = workos_client.audit_logs.create_schema("api_key.create", targets=targets, actor=actor)
    assert (first.version, same.version) == (1, 1)
    assert first.object == "audit_log_schema"
    assert first.actor == actor
    changed = workos_client.audit_logs.create_schema(
        "api_key.create", targets=[*targets, AuditLogSchemaTarget(type="api_key")], actor=actor
    )
    assert changed.version == 2

    [action] = workos_client.audit_logs.list_actions().data
    assert (action.name, action.schema.version) == ("api_key.create", 2)
    versions = [s.version for s in workos_client.audit_logs.list_action_schemas("api_key.create").data]
    assert versions == [2, 1]  # newest first: the API's default order is desc
    with pytest.raises(NotFoundError):
        workos_client.audit_logs.list_action_schemas("nothing.here")
    with pytest.raises(UnprocessableEntityError):
        workos_client.audit_logs.create_schema("api_key.create", targets=[])


def test_actions_paginate(workos_client: WorkOSClient) -> None:
    for name in ("a.one", "a.two", "a.three"):
        workos_client.audit_logs.create_schema(name, targets=[AuditLogSchemaTarget(type="t")])
    page = workos_client.audit_logs.list_actions(limit=2, order="asc")
    assert [a.name for a in page.data] == ["a.one", "a.two"]
    assert page.has_more()
    assert [a.name for a in page.auto_paging_iter()] == ["a.one", "a.two", "a.three"]
    with pytest.raises(UnprocessableEntityError):
        workos_client.audit_logs.list_actions(limit=500)


def test_events_are_validated_against_the_action_schema(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient
) -> None:
    workos_client.audit_logs.create_schema(
        "api_key.create",
        targets=[AuditLogSchemaTarget(type="project")],
        metadata={"type": "object", "properties": {"source": {"type": "string"}}, "required": ["source"]},
    )
    workos_client.audit_logs.create_event(organization_id=ORG, event=make_event())

    with pytest.raises(BadRequestError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event(targets=[]))
    assert errors_of(caught.value)[0]["instancePath"] == "/targets"
    with pytest.raises(BadRequestError) as caught:
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event(metadata={"source": 3}))
    assert errors_of(caught.value)[0]["instancePath"] == "/metadata/source"
    with pytest.raises(BadRequestError):
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event(metadata={}))
    with pytest.raises(BadRequestError):
        workos_client.audit_logs.create_event(organization_id=ORG, event=make_event(version=9))
    assert len(workos_emulator.events) == 1


# ---------------------------------------------------------------------- admin portal and retention


def test_portal_link(workos_emulator: WorkOSEmulator, workos_client: WorkOSClient) -> None:
    link = workos_client.admin_portal.generate_link(organization=ORG, intent="log_streams").link
    assert link.startswith(f"{workos_emulator.url}portal/")
    assert link.endswith("?intent=log_streams")
    assert workos_emulator.requests[-1].status == 201
    with httpx.Client() as http:
        page = http.get(link)
    assert page.status_code == 200
    assert "log_streams" in page.text
    assert ORG in page.text


def test_portal_link_errors_and_expiry(workos_emulator_factory: EmulatorFactory) -> None:
    clock = FakeClock()
    emulator = workos_emulator_factory(clock=clock)
    with sdk(emulator) as client:
        with pytest.raises(UnprocessableEntityError):
            client.admin_portal.generate_link(organization=ORG, intent="billing")
        with pytest.raises(UnprocessableEntityError):
            client.admin_portal.generate_link(organization=ORG)
        with pytest.raises(NotFoundError):
            client.admin_portal.generate_link(organization="org_missing", intent="audit_logs")
        link = client.admin_portal.generate_link(organization=ORG, intent="audit_logs").link
    clock.advance(5 * 60)
    with httpx.Client() as http:
        assert http.get(link).status_code == 404


def test_retention(workos_client: WorkOSClient) -> None:
    audit_logs = workos_client.audit_logs
    assert audit_logs.get_organization_audit_logs_retention(ORG).retention_period_in_days is None
    updated = audit_logs.update_organization_audit_logs_retention(ORG, retention=RetentionPeriodInDays(365))
    assert updated.retention_period_in_days == 365
    assert audit_logs.get_organization_audit_logs_retention(ORG).retention_period_in_days == 365
    by_period = audit_logs.update_organization_audit_logs_retention(ORG, retention=RetentionPeriod("3_MONTHS"))
    assert by_period.retention_period_in_days == 90
    for days in (30, 330, 3650):
        audit_logs.update_organization_audit_logs_retention(ORG, retention=RetentionPeriodInDays(days))
    for days in (0, 45, 360, 400, 4015):
        with pytest.raises(UnprocessableEntityError):
            audit_logs.update_organization_audit_logs_retention(ORG, retention=RetentionPeriodInDays(days))
    with pytest.raises(NotFoundError):
        audit_logs.get_organization_audit_logs_retention("org_missing")


# ---------------------------------------------------------------------- lifecycle, inspection, CLI


def test_reset_forgets_everything_but_the_organizations(
    workos_emulator: WorkOSEmulator, workos_client: WorkOSClient
) -> None:
    workos_emulator.add_organization("org_02")
    workos_client.audit_logs.create_event(organization_id="org_02", event=make_event(), idempotency_key="k")
    workos_emulator.set_latency(5)
    workos_emulator.fail_next(500)
    workos_emulator.reset()
    assert (workos_emulator.events, workos_emulator.requests, workos_emulator.count_by_key()) == ([], [], {})
    workos_client.audit_logs.create_event(organization_id="org_02", event=make_event(), idempotency_key="k")
    assert workos_emulator.count_by_key() == {"k": 1}


def test_bounded_request_log(workos_emulator_factory: EmulatorFactory) -> None:
    emulator = workos_emulator_factory(max_requests_recorded=2)
    silent = workos_emulator_factory(max_requests_recorded=0)
    for target in (emulator, silent):
        with sdk(target) as client:
            for _ in range(3):
                client.audit_logs.create_event(organization_id=ORG, event=make_event())
    assert len(emulator.requests) == 2
    assert silent.requests == []
    assert len(silent.events) == 3


def test_wait_for_events_times_out(workos_emulator: WorkOSEmulator) -> None:
    assert workos_emulator.wait_for_events(1, timeout=0.05) is False


def test_stop_is_idempotent_and_the_emulator_restarts_on_its_port() -> None:
    emulator = WorkOSEmulator(organizations=[ORG, "org_02"])
    with pytest.raises(RuntimeError):
        _ = emulator.url
    with emulator:
        port = emulator.port
        assert emulator.organizations == {ORG, "org_02"}
    emulator.stop()
    with emulator, sdk(emulator) as client:
        assert emulator.port == port
        client.audit_logs.create_event(organization_id=ORG, event=make_event())


def test_stop_does_not_wait_out_a_stall(workos_emulator_factory: EmulatorFactory) -> None:
    emulator = workos_emulator_factory()
    emulator.commit_then_stall(30)
    with sdk(emulator) as client, pytest.raises(WorkOSTimeoutError):
        client.audit_logs.create_event(organization_id=ORG, event=make_event(), request_options={"timeout": 0.1})
    started = time.monotonic()
    emulator.stop()
    assert time.monotonic() - started < 1


def test_cli_command_serves_until_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    emulator_command.register(parser.add_subparsers())
    args = parser.parse_args(["emulator", "--port", "0", "--org", "org_a", "--org", "org_b", "--api-key", "sk_cli"])
    assert args.handler is emulator_command.run
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(emulator_command.run(args, stop=stop)))
    thread.start()
    try:
        output = ""
        deadline = time.monotonic() + 5
        while "WORKOS_BASE_URL=" not in output and time.monotonic() < deadline:
            time.sleep(0.01)
            output += capsys.readouterr().out
        url = output.split("WORKOS_BASE_URL=")[1].split()[0]
        with WorkOSClient(api_key="sk_cli", base_url=url, max_retries=0) as client:
            client.audit_logs.create_event(organization_id="org_b", event=make_event(), idempotency_key="cli")
            with pytest.raises(NotFoundError):
                client.audit_logs.create_event(organization_id=ORG, event=make_event())
    finally:
        stop.set()
        thread.join()
    assert result == [0]
    assert "org_b api_key.create actor=user_01 key=cli" in capsys.readouterr().out
