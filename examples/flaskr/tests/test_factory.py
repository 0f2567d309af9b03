from __future__ import annotations

from flaskr import create_app

from centure_audit_middleware.testing import AuditLog


def test_config(audit_log: AuditLog) -> None:
    assert not create_app().testing
    app = create_app({"TESTING": True})
    assert app.testing
    assert app.test_client().get("/auth/login").status_code == 200
    assert audit_log.events == []
