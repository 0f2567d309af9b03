"""All 24 Centure actions, built with the catalog helpers inside real FastAPI and Flask requests, validated strictly,
delivered through the WorkOS SDK to the emulator, and compared, as received there, with the catalog."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from flask import Flask

from centure_audit_middleware import Auditor, audit, audited
from centure_audit_middleware import catalog as c
from centure_audit_middleware.catalog.schemas import push_schemas, workos_client
from centure_audit_middleware.sinks import WorkOSSink
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import ORG
from .test_catalog import JANE, SAMPLES


@pytest.fixture
def emulator() -> Iterator[WorkOSEmulator]:
    emulator = WorkOSEmulator(organizations=[ORG]).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def auditor(tmp_path: Path, emulator: WorkOSEmulator) -> Iterator[Auditor]:
    auditor = Auditor(
        sinks=[WorkOSSink(api_key=emulator.api_key, base_url=emulator.url)],
        outbox=tmp_path / "outbox.db",
        geoip=False,
        commit_interval=0.01,
        validators=[c.validator(strict=True)],
    )
    yield auditor
    auditor.close(timeout=5)


@pytest.fixture
def with_schemas(emulator: WorkOSEmulator) -> WorkOSEmulator:
    """The catalog's schemas pushed first, so the emulator also checks each event against them, like WorkOS."""
    with workos_client(emulator.api_key, emulator.url) as client:
        results = push_schemas(client)
    assert {r.status for r in results} == {"created"}
    return emulator


def assert_received_as_documented(emulator: WorkOSEmulator) -> None:
    """What the emulator received, field by field, against the catalog and the sample the app built."""
    received = {r.event["action"]: r for r in emulator.events}
    assert sorted(received) == sorted(c.CENTURE_ACTIONS)
    actor_keys = [f.name for f in c.default_catalog().actor.metadata]
    for action, item in received.items():
        spec = c.default_catalog()[action]
        sample = SAMPLES[action]()
        event = item.event
        assert item.organization_id == ORG
        assert [t["type"] for t in event["targets"]] == list(spec.target_types), action
        for target, target_spec in zip(event["targets"], spec.targets, strict=True):
            keys = list(target.get("metadata", {}))
            documented = [f.name for f in target_spec.metadata]
            assert keys == documented or (target_spec.open and set(documented) <= set(keys)), (action, target)
            assert ("name" in target) == target_spec.named or target_spec.open, (action, target)
        assert list(event.get("metadata", {})) == [f.name for f in spec.metadata], action
        assert event["targets"] == [t.to_dict() for t in sample.targets], action
        assert event.get("metadata", {}) == dict(sample.metadata), action
        assert event["actor"] == {"id": JANE.id, "type": "user", "name": "Jane Smith", "metadata": dict(JANE.metadata)}
        assert list(event["actor"]["metadata"]) == actor_keys
        assert item.idempotency_key is not None


# -- FastAPI: @audited(constant) + builder.annotate() --------------------------------------------------------------
def authenticate() -> None:
    audit.actor(JANE)
    audit.organization(ORG)


def fastapi_endpoint(action: str) -> Callable[[], Awaitable[dict[str, str]]]:
    @audited(action)
    async def endpoint() -> dict[str, str]:
        SAMPLES[action]().annotate()
        return {"action": action}

    return endpoint


def test_every_action_round_trips_through_fastapi(auditor: Auditor, with_schemas: WorkOSEmulator) -> None:
    app = FastAPI(dependencies=[Depends(authenticate)])
    for action in c.CENTURE_ACTIONS:
        app.add_api_route(f"/audit/{action}", fastapi_endpoint(action), methods=["POST"])
    auditor.install(app)
    with TestClient(app) as client:
        for action in c.CENTURE_ACTIONS:
            assert client.post(f"/audit/{action}").json() == {"action": action}
    assert auditor.flush(10), auditor.stats()
    assert auditor.stats()["dead_lettered"] == 0
    assert_received_as_documented(with_schemas)


def test_source_as_a_decorator_argument(auditor: Auditor, emulator: WorkOSEmulator) -> None:
    app = FastAPI(dependencies=[Depends(authenticate)])

    @app.get("/organizations/{org_id}/sso")
    @audited(c.SSO_VIEW_SETTINGS, metadata=c.route_source("/organizations/{org_id}/sso"))
    async def sso_settings(org_id: str) -> dict[str, str]:
        audit.target(c.targets.organization(org_id, "Acme"))
        return {}

    auditor.install(app)
    with TestClient(app) as client:
        client.get(f"/organizations/{ORG}/sso")
    assert auditor.flush(10), auditor.stats()
    [received] = emulator.events
    assert received.event["metadata"] == {"source": f"/organizations/{ORG}/sso"}
    assert received.event["targets"] == [
        {"id": ORG, "type": "organization", "name": "Acme", "metadata": {"name": "Acme"}}
    ]


# -- Flask: builder.record() inside the request ----------------------------------------------------------------------


def flask_view(action: str) -> Callable[[], dict[str, str]]:
    def view() -> dict[str, str]:
        SAMPLES[action]().record()  # an ad-hoc event inheriting the request's actor, organization and context
        return {"action": action}

    return view


def test_every_action_round_trips_through_flask(auditor: Auditor, with_schemas: WorkOSEmulator) -> None:
    app = Flask(__name__)
    app.before_request(authenticate)
    for action in c.CENTURE_ACTIONS:
        app.add_url_rule(
            f"/audit/{action}", endpoint=action.replace(".", "_"), view_func=flask_view(action), methods=["POST"]
        )
    auditor.install(app)
    client = app.test_client()
    for action in c.CENTURE_ACTIONS:
        assert client.post(f"/audit/{action}").json == {"action": action}
    assert auditor.flush(10), auditor.stats()
    assert auditor.stats()["dead_lettered"] == 0
    assert_received_as_documented(with_schemas)


# -- what strict validation keeps away from WorkOS -----------------------------------------------------------------
def test_strict_mode_keeps_a_wrong_event_from_workos(auditor: Auditor, emulator: WorkOSEmulator) -> None:
    app = Flask(__name__)
    app.before_request(authenticate)

    @app.post("/keys")
    @audited(c.API_KEY_CREATE)
    def create_key() -> dict[str, str]:
        audit.target(c.targets.api_key("key_1", "deploy", project_id="proj_1", organization_id=ORG))  # no project
        audit.metadata(source="/projects/proj_1/api-keys/new")
        return {}

    auditor.install(app)
    app.test_client().post("/keys")
    assert auditor.flush(10), auditor.stats()
    assert emulator.events == []
    [dead] = auditor.dispatcher.outbox.dead_letters()
    assert dead.reason == "api_key.create: targets[1]: missing required target 'project'"
