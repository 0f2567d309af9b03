from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from flask import Flask, g, session
from flask.testing import FlaskClient
from flaskr import ORGANIZATION
from flaskr.db import get_db

from centure_audit_middleware import Auditor
from centure_audit_middleware.testing import AuditLog

if TYPE_CHECKING:
    from conftest import AuthActions


def test_register(client: FlaskClient, app: Flask, audit_log: AuditLog) -> None:
    assert client.get("/auth/register").status_code == 200
    assert audit_log.events == []  # showing the form is not an action

    response = client.post("/auth/register", data={"username": "a", "password": "a"})
    assert response.headers["Location"] == "/auth/login"

    with app.app_context():
        user = get_db().execute("SELECT * FROM user WHERE username = 'a'").fetchone()
        assert user is not None
    event = audit_log.assert_recorded(
        "user.register", actor=f"user_{user['id']}", organization=ORGANIZATION, targets=[("user", f"user_{user['id']}")]
    )
    assert event.actor.name == "a"
    assert audit_log.actions == ["user.register"]


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("", "", b"Username is required."),
        ("a", "", b"Password is required."),
        ("test", "test", b"already registered"),
    ],
)
def test_register_validate_input(
    client: FlaskClient, username: str, password: str, message: bytes, audit_log: AuditLog, auditor: Auditor
) -> None:
    response = client.post("/auth/register", data={"username": username, "password": password})
    assert message in response.data
    assert audit_log.events == []  # the form came back with an error: nothing happened
    assert auditor.stats()["skipped"] == {}  # and nothing was waiting for an actor either


def test_login(client: FlaskClient, auth: AuthActions, audit_log: AuditLog) -> None:
    assert client.get("/auth/login").status_code == 200
    assert audit_log.events == []

    response = auth.login()
    assert response.headers["Location"] == "/"

    with client:
        client.get("/")
        assert session["user_id"] == 1
        assert g.user["username"] == "test"

    event = audit_log.assert_recorded("session.create", actor="user_1", organization=ORGANIZATION, count=1)
    assert event.actor.name == "test"
    assert audit_log.actions == ["session.create"]  # the index is read, not acted on


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [("a", "test", b"Incorrect username."), ("test", "a", b"Incorrect password.")],
)
def test_login_validate_input(
    auth: AuthActions, username: str, password: str, message: bytes, audit_log: AuditLog
) -> None:
    response = auth.login(username, password)
    assert message in response.data
    assert audit_log.events == []


def test_logout(client: FlaskClient, auth: AuthActions, audit_log: AuditLog, auditor: Auditor) -> None:
    auth.login()

    with client:
        auth.logout()
        assert "user_id" not in session

    assert audit_log.actions == ["session.create", "session.delete"]
    audit_log.assert_recorded("session.delete", actor="user_1")  # who was logged in when the request came
    auth.logout()  # logged out already: no one's action
    assert audit_log.actions == ["session.create", "session.delete"]
    assert auditor.stats()["skipped"] == {"no_actor": 1}
