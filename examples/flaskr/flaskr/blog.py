"""Posts: the index (not audited: reading is not an action here), create, update, delete."""

from __future__ import annotations

import sqlite3
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import abort

from centure_audit_middleware import Target, audit, audited

from .auth import login_required
from .db import get_db

bp = Blueprint("blog", __name__)


@bp.route("/")
def index() -> str:
    posts = (
        get_db()
        .execute(
            "SELECT p.id, title, body, created, author_id, username"
            " FROM post p JOIN user u ON p.author_id = u.id"
            " ORDER BY created DESC"
        )
        .fetchall()
    )
    return render_template("blog/index.html", posts=posts)


def get_post(id: int, check_author: bool = True) -> sqlite3.Row:
    post = (
        get_db()
        .execute(
            "SELECT p.id, title, body, created, author_id, username"
            " FROM post p JOIN user u ON p.author_id = u.id"
            " WHERE p.id = ?",
            (id,),
        )
        .fetchone()
    )
    if post is None:
        abort(404, f"Post id {id} doesn't exist.")
    if check_author and post["author_id"] != g.user["id"]:
        abort(403)
    return post  # type: ignore[no-any-return]


def _form() -> tuple[str, str, str | None]:
    title = request.form["title"]
    body = request.form["body"]
    return title, body, None if title else "Title is required."


@bp.route("/create", methods=("GET", "POST"))
@login_required
@audited("post.create")
def create() -> Any:
    if request.method == "POST":
        title, body, error = _form()
        if error is not None:
            flash(error)
            audit.skip()
        else:
            db = get_db()
            cursor = db.execute(
                "INSERT INTO post (title, body, author_id) VALUES (?, ?, ?)", (title, body, g.user["id"])
            )
            db.commit()
            audit.target(Target("post", id=str(cursor.lastrowid), name=title))  # its id exists only now
            return redirect(url_for("blog.index"))
    return render_template("blog/create.html")


@bp.route("/<int:id>/update", methods=("GET", "POST"))
@login_required
@audited("post.update", targets=[Target.from_path("post", "id")])
def update(id: int) -> Any:
    post = get_post(id)
    if request.method == "POST":
        title, body, error = _form()
        if error is not None:
            flash(error)
            audit.skip()
        else:
            db = get_db()
            db.execute("UPDATE post SET title = ?, body = ? WHERE id = ?", (title, body, id))
            db.commit()
            changed = {field: {"from": post[field], "to": new} for field, new in (("title", title), ("body", body))}
            audit.metadata(changes={k: v for k, v in changed.items() if v["from"] != v["to"]})
            return redirect(url_for("blog.index"))
    return render_template("blog/update.html", post=post)


@bp.route("/<int:id>/delete", methods=("POST",))
@login_required
@audited("post.delete", targets=[Target.from_path("post", "id")])
def delete(id: int) -> Any:
    post = get_post(id)
    db = get_db()
    db.execute("DELETE FROM post WHERE id = ?", (id,))
    db.commit()
    audit.metadata(title=post["title"])
    return redirect(url_for("blog.index"))
