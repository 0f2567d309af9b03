"""What differs between the two adapters: mounting at the root, async hooks, body limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.testclient import TestClient
from workos import WorkOSClient

from centure_audit_middleware import Actor, Auditor
from centure_audit_middleware.admin import StaticEntitlements, workos_client_factory
from centure_audit_middleware.admin.flask import audit_logs_blueprint
from centure_audit_middleware.admin.starlette import audit_logs_router
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import delivered

ORG = "org_01TEST"
SECRET_KEY = "frameworks-test-secret-key-0123"
#: What every admin response carries (`views._SECURITY_HEADERS`), spelled out so the test can't drift with it.
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "pragma": "no-cache",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def security_headers(headers: Any) -> dict[str, str | None]:
    return {name: headers.get(name) for name in SECURITY_HEADERS}


async def is_admin(request: Request) -> bool:
    return request.headers.get("x-role") == "admin"  # an async hook: awaited by the router


async def organization(request: Request) -> str:
    return ORG


async def actor(request: Request) -> Actor:
    return Actor("user_async", name="Async Admin")


@pytest.fixture
def starlette_client(auditor: Auditor, workos_client: WorkOSClient) -> Iterator[TestClient]:
    router = audit_logs_router(
        is_admin=is_admin,
        organization=organization,
        actor=actor,
        entitlements=StaticEntitlements({ORG}),
        secret_key=SECRET_KEY,
        workos=workos_client,
        auditor=auditor,
    )
    app = Starlette(routes=list(router.routes))  # at the app's root: the page is /audit-logs
    auditor.install(app)
    with TestClient(app) as client:
        yield client


def test_starlette_at_the_root_with_async_hooks(
    starlette_client: TestClient, workos_emulator: WorkOSEmulator, auditor: Auditor, sink: MemorySink
) -> None:
    admin = {"x-role": "admin"}
    assert starlette_client.get("/audit-logs").status_code == 403
    page = starlette_client.get("/audit-logs", headers=admin)
    assert page.status_code == 200
    assert "Path=/audit-logs;" in page.headers["set-cookie"]
    assert 'action="/audit-logs/portal/log_streams"' in page.text
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = starlette_client.post(
        "/audit-logs/portal/log_streams", data={"csrf_token": token}, headers=admin, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"].startswith(workos_emulator.url)
    (recorded,) = delivered(auditor, sink)
    assert (recorded.action, recorded.actor.id) == ("log_streams.create_management_portal_url", "user_async")
    assert recorded.metadata["source"] == "/audit-logs"


def test_oversized_posts_are_refused_before_they_are_read(starlette_client: TestClient) -> None:
    big = {"csrf_token": "x" * (70 * 1024)}
    response = starlette_client.post("/audit-logs/subscribe", data=big, headers={"x-role": "admin"})
    assert response.status_code == 413 and response.headers["cache-control"] == "no-store"
    webhook = starlette_client.post("/audit-logs/billing/stripe-webhook", content=b"x" * (2 * 1024 * 1024))
    assert webhook.status_code == 413


def test_flask_refuses_oversized_posts_and_serves_at_the_root() -> None:
    app = Flask(__name__)
    hooks: dict[str, Any] = {
        "is_admin": lambda request: request.headers.get("x-role") == "admin",
        "organization": lambda request: ORG,
    }
    app.register_blueprint(
        audit_logs_blueprint(
            **hooks,
            entitlements=StaticEntitlements(),
            secret_key=SECRET_KEY,
            workos=workos_client_factory("sk_test_never_used", "http://127.0.0.1:9"),
        )
    )
    client = app.test_client()
    page = client.get("/audit-logs", headers={"x-role": "admin"})
    assert page.status_code == 200 and "Path=/audit-logs;" in page.headers["Set-Cookie"]
    big = client.post("/audit-logs/subscribe", data={"csrf_token": "x" * (70 * 1024)}, headers={"x-role": "admin"})
    assert big.status_code == 413
    assert client.post("/audit-logs/billing/stripe-webhook", data=b"{}").status_code == 404  # no webhook receiver


def test_starlette_413_carries_the_security_headers(starlette_client: TestClient) -> None:
    admin = {"x-role": "admin"}
    assert security_headers(starlette_client.get("/audit-logs", headers=admin).headers) == SECURITY_HEADERS
    big = starlette_client.post("/audit-logs/subscribe", data={"csrf_token": "x" * (70 * 1024)}, headers=admin)
    assert big.status_code == 413
    assert security_headers(big.headers) == SECURITY_HEADERS
    webhook = starlette_client.post("/audit-logs/billing/stripe-webhook", content=b"x" * (2 * 1024 * 1024))
    assert webhook.status_code == 413
    assert security_headers(webhook.headers) == SECURITY_HEADERS


def test_flask_413_carries_the_security_headers() -> None:
    app = Flask(__name__)
    app.register_blueprint(
        audit_logs_blueprint(
            is_admin=lambda request: True,
            organization=lambda request: ORG,
            entitlements=StaticEntitlements(),
            secret_key=SECRET_KEY,
            workos=workos_client_factory("sk_test_never_used", "http://127.0.0.1:9"),
        )
    )
    client = app.test_client()
    assert security_headers(client.get("/audit-logs").headers) == SECURITY_HEADERS
    big = client.post("/audit-logs/subscribe", data={"csrf_token": "x" * (70 * 1024)})
    assert big.status_code == 413
    assert security_headers(big.headers) == SECURITY_HEADERS
    webhook = client.post("/audit-logs/billing/stripe-webhook", data=b"x" * (2 * 1024 * 1024))
    assert webhook.status_code == 413
    assert security_headers(webhook.headers) == SECURITY_HEADERS
