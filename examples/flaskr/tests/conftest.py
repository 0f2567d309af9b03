"""Fixtures in the Flask tutorial's shape (an app per test on a temporary database, its test client, a CLI runner,
and `auth` to log in), plus the one line that makes the audit trail testable: every test uses `audit_log`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flaskr import create_app
from flaskr.db import get_db, init_db
from werkzeug.security import generate_password_hash
from werkzeug.test import TestResponse

from centure_audit_middleware import Auditor
from centure_audit_middleware.testing import AuditLog

# Two users and one post, as the tutorial's data.sql has them. A cheap hash: tests log in often.
_HASH = "pbkdf2:sha256:1000"
DATA = [
    ("INSERT INTO user (username, password) VALUES (?, ?)", ("test", generate_password_hash("test", _HASH))),
    ("INSERT INTO user (username, password) VALUES (?, ?)", ("other", generate_password_hash("other", _HASH))),
    (
        "INSERT INTO post (title, body, author_id, created) VALUES (?, ?, ?, ?)",
        ("test title", "test\nbody", 1, "2018-01-01 00:00:00"),
    ),
]


@pytest.fixture(autouse=True)
def _audit_in_memory(audit_log: AuditLog) -> AuditLog:
    """Every Auditor the app factory makes records into the test's `audit_log`: nothing is delivered, no thread
    starts, no outbox is written next to the app."""
    return audit_log


@pytest.fixture
def app() -> Iterator[Flask]:
    db_fd, db_path = tempfile.mkstemp()
    app = create_app({"TESTING": True, "DATABASE": db_path})
    with app.app_context():
        init_db()
        db = get_db()
        for sql, values in DATA:
            db.execute(sql, values)
        db.commit()
    yield app
    os.close(db_fd)
    os.unlink(db_path)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def auditor(app: Flask) -> Auditor:
    """The app's Auditor (for `stats()`: requests skipped for want of an actor are counted there)."""
    installed: Auditor = app.extensions["centure_audit"]
    return installed


class AuthActions:
    def __init__(self, client: FlaskClient) -> None:
        self._client = client

    def login(self, username: str = "test", password: str = "test") -> TestResponse:
        return self._client.post("/auth/login", data={"username": username, "password": password})

    def logout(self) -> TestResponse:
        return self._client.get("/auth/logout")


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)
