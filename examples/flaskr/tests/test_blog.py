from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flaskr.db import get_db

from centure_audit_middleware import Auditor
from centure_audit_middleware.testing import AuditLog

if TYPE_CHECKING:
    from conftest import AuthActions


def test_index(client: FlaskClient, auth: AuthActions, audit_log: AuditLog) -> None:
    response = client.get("/")
    assert b"Log In" in response.data
    assert b"Register" in response.data

    auth.login()
    response = client.get("/")
    assert b"Log Out" in response.data
    assert b"test title" in response.data
    assert b"by test on 2018-01-01" in response.data
    assert b"test\nbody" in response.data
    assert b'href="/1/update"' in response.data
    assert audit_log.actions == ["session.create"]


@pytest.mark.parametrize("path", ["/create", "/1/update", "/1/delete"])
def test_login_required(client: FlaskClient, path: str, audit_log: AuditLog, auditor: Auditor) -> None:
    response = client.post(path)
    assert response.headers["Location"] == "/auth/login"
    assert client.get("/create").headers["Location"] == "/auth/login"
    # A redirect to the login page is no one's action: not recorded, not a dead letter, counted once (the GET only
    # shows a form and doesn't count).
    assert audit_log.events == []
    assert auditor.stats()["skipped"] == {"no_actor": 1}


def test_author_required(app: Flask, client: FlaskClient, auth: AuthActions, audit_log: AuditLog) -> None:
    # change the post author to another user
    with app.app_context():
        db = get_db()
        db.execute("UPDATE post SET author_id = 2 WHERE id = 1")
        db.commit()

    auth.login()
    # current user can't modify other user's post
    assert client.post("/1/update").status_code == 403
    assert client.post("/1/delete").status_code == 403
    # current user doesn't see edit link
    assert b'href="/1/update"' not in client.get("/").data
    assert audit_log.actions == ["session.create"]  # refused actions didn't happen


@pytest.mark.parametrize("path", ["/2/update", "/2/delete"])
def test_exists_required(client: FlaskClient, auth: AuthActions, path: str, audit_log: AuditLog) -> None:
    auth.login()
    assert client.post(path).status_code == 404
    assert audit_log.actions == ["session.create"]


def test_create(client: FlaskClient, auth: AuthActions, app: Flask, audit_log: AuditLog) -> None:
    auth.login()
    assert client.get("/create").status_code == 200
    assert audit_log.actions == ["session.create"]  # opening the form records nothing
    client.post("/create", data={"title": "created", "body": ""})

    with app.app_context():
        db = get_db()
        count = db.execute("SELECT COUNT(id) FROM post").fetchone()[0]
        assert count == 2
    event = audit_log.assert_recorded("post.create", actor="user_1", targets=[("post", "2")])
    assert event.targets[0].name == "created"
    assert audit_log.actions == ["session.create", "post.create"]


def test_update(client: FlaskClient, auth: AuthActions, app: Flask, audit_log: AuditLog) -> None:
    auth.login()
    assert client.get("/1/update").status_code == 200
    assert audit_log.actions == ["session.create"]  # opening the edit form records nothing
    client.post("/1/update", data={"title": "updated", "body": "test\nbody"})

    with app.app_context():
        db = get_db()
        post = db.execute("SELECT * FROM post WHERE id = 1").fetchone()
        assert post["title"] == "updated"
    event = audit_log.assert_recorded("post.update", actor="user_1", targets=[("post", "1")])
    assert json.loads(event.metadata["changes"]) == {"title": {"from": "test title", "to": "updated"}}
    assert audit_log.actions == ["session.create", "post.update"]


@pytest.mark.parametrize("path", ["/create", "/1/update"])
def test_create_update_validate(client: FlaskClient, auth: AuthActions, path: str, audit_log: AuditLog) -> None:
    auth.login()
    response = client.post(path, data={"title": "", "body": ""})
    assert b"Title is required." in response.data
    assert audit_log.actions == ["session.create"]


def test_delete(client: FlaskClient, auth: AuthActions, app: Flask, audit_log: AuditLog) -> None:
    auth.login()
    response = client.post("/1/delete")
    assert response.headers["Location"] == "/"

    with app.app_context():
        db = get_db()
        post = db.execute("SELECT * FROM post WHERE id = 1").fetchone()
        assert post is None
    audit_log.assert_recorded("post.delete", actor="user_1", targets=[("post", "1")], metadata={"title": "test title"})
    assert audit_log.actions == ["session.create", "post.delete"]
