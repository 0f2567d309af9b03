"""Registration, login and logout; `login_required`; and the auth layer that names the actor of every request."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from centure_audit_middleware import Actor, Target, audit, audited

from .db import get_db

bp = Blueprint("auth", __name__, url_prefix="/auth")

F = TypeVar("F", bound=Callable[..., Any])


def user_actor(user: sqlite3.Row) -> Actor:
    return Actor(f"user_{user['id']}", name=user["username"])


def login_required(view: F) -> F:
    # functools.wraps copies the view's attributes, `@audited`'s spec among them: the wrapper Flask registers is
    # still the audited endpoint.
    @functools.wraps(view)
    def wrapped_view(**kwargs: Any) -> Any:
        if g.user is None:
            return redirect(url_for("auth.login"))
        return view(**kwargs)

    return wrapped_view  # type: ignore[return-value]


@bp.before_app_request
def load_logged_in_user() -> None:
    """The auth layer: who acts in this request, for which organization. A visitor who is not logged in is no
    one: requests they make are not recorded (an audited one is counted as skipped{no_actor})."""
    user_id = session.get("user_id")
    g.user = None if user_id is None else get_db().execute("SELECT * FROM user WHERE id = ?", (user_id,)).fetchone()
    audit.organization(current_app.config["AUDIT_ORGANIZATION"])
    if g.user is not None:
        audit.actor(user_actor(g.user))


@bp.route("/register", methods=("GET", "POST"))
@audited("user.register")  # a form view: its GET only shows the form and is not recorded
def register() -> Any:
    if request.method == "POST":
        username = request.form["username"]
        password = request.form["password"]
        db = get_db()
        error = None
        if not username:
            error = "Username is required."
        elif not password:
            error = "Password is required."
        if error is None:
            try:
                cursor = db.execute(
                    "INSERT INTO user (username, password) VALUES (?, ?)",
                    (username, generate_password_hash(password)),
                )
                db.commit()
            except db.IntegrityError:
                error = f"User {username} is already registered."
            else:
                # Nobody was logged in: the new user is the actor of their own registration, and its target.
                user = Actor(f"user_{cursor.lastrowid}", name=username)
                audit.actor(user)
                audit.target(Target("user", id=user.id, name=username))
                return redirect(url_for("auth.login"))
        flash(error)
        audit.skip()  # the form is shown again with the error (a 200): nothing happened
    return render_template("auth/register.html")


@bp.route("/login", methods=("GET", "POST"))
@audited("session.create")
def login() -> Any:
    if request.method == "POST":
        username = request.form["username"]
        password = request.form["password"]
        user = get_db().execute("SELECT * FROM user WHERE username = ?", (username,)).fetchone()
        error = None
        if user is None:
            error = "Incorrect username."
        elif not check_password_hash(user["password"], password):
            error = "Incorrect password."
        if error is None:
            session.clear()
            session["user_id"] = user["id"]
            audit.actor(user_actor(user))  # the request started anonymous: it acts for this user from now on
            return redirect(url_for("index"))
        flash(error)
        audit.skip()
    return render_template("auth/login.html")


@bp.route("/logout")
@audited("session.delete")  # a GET-only view: its GET is the action, and recorded
def logout() -> Any:
    session.clear()
    return redirect(url_for("index"))
