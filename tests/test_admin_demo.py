"""The page mounted into the demo's FastAPI app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from centure_audit_middleware import Auditor
from centure_audit_middleware.demo.admin import mount_admin
from centure_audit_middleware.demo.apps import ACME, build_fastapi_app
from centure_audit_middleware.sinks import MemorySink, StoreSink
from centure_audit_middleware.store import EventQuery, EventStore, open_store
from centure_audit_middleware.testing import WorkOSEmulator


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with open_store(tmp_path / "audit.db") as store:
        yield store


def test_mount_admin(tmp_path: Path, store: EventStore, workos_emulator: WorkOSEmulator) -> None:
    auditor = Auditor(
        sinks=[MemorySink(), StoreSink(store)], outbox=tmp_path / "outbox.db", geoip=False, commit_interval=0.01
    )
    app = build_fastapi_app()
    path = mount_admin(app, store=store, auditor=auditor, emulator=workos_emulator)
    auditor.install(app)
    assert path == "/admin/audit-logs"
    try:
        with TestClient(app) as client:
            ada = {"Authorization": "Bearer tok_ada"}
            page = client.get(path, headers=ada)
            assert page.status_code == 200 and "View Audit Logs" in page.text and "Acme Robotics" in page.text
            banner = client.get(path, headers={"Authorization": "Bearer tok_linus"})
            assert "Audit Logging is not enabled" in banner.text and "$10 per month" in banner.text
            assert client.get(path, headers={"Authorization": "Bearer tok_grace"}).status_code == 403
            assert client.get(path).status_code == 403

            login = client.get("/admin/demo-login", params={"token": "tok_ada"}, follow_redirects=False)
            assert (login.status_code, login.headers["location"]) == (303, path)
            page = client.get(path)  # the cookie now says who she is
            token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            portal = client.post(f"{path}/portal/audit_logs", data={"csrf_token": token}, follow_redirects=False)
            assert portal.status_code == 303 and portal.headers["location"].startswith(workos_emulator.url)
        assert auditor.flush(timeout=10)
        (recorded,) = store.query(EventQuery(ACME, action="audit_logs.create_management_portal_url")).events
        assert recorded.actor.id == "user_01ADA"
    finally:
        auditor.close(timeout=5)
