"""Two small apps in the shape of Centure's dashboard API, audited the way the README tells users to.

Authentication is a bearer token that names a demo user; the auth layer (a FastAPI dependency, a Flask
`before_request` hook) tells the audit layer who acts and for which organization, once per request.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Final

from .. import Actor, Target, audit, audited

__all__ = ["ORGANIZATIONS", "USERS", "DemoUser", "build_fastapi_app", "build_flask_app"]

ACME: Final = "org_01CENTUREACME"
GLOBEX: Final = "org_01CENTUREGLOBEX"
ORGANIZATIONS: Final = {ACME: "Acme Robotics", GLOBEX: "Globex Labs"}


@dataclass(frozen=True, slots=True)
class DemoUser:
    id: str
    first_name: str
    last_name: str
    email: str
    organization_id: str
    impersonator_email: str = ""
    impersonator_reason: str = ""

    def actor(self) -> Actor:
        # Centure's standard actor metadata: empty strings when nobody impersonates.
        return Actor(
            self.id,
            name=f"{self.first_name} {self.last_name}",
            metadata={
                "first_name": self.first_name,
                "last_name": self.last_name,
                "email": self.email,
                "impersonator_email": self.impersonator_email,
                "impersonator_reason": self.impersonator_reason,
            },
        )


USERS: Final = {
    "tok_ada": DemoUser("user_01ADA", "Ada", "Lovelace", "ada@acme.example", ACME),
    "tok_grace": DemoUser("user_01GRACE", "Grace", "Hopper", "grace@acme.example", ACME),
    "tok_linus": DemoUser("user_01LINUS", "Linus", "Torvalds", "linus@globex.example", GLOBEX),
    "tok_support": DemoUser(
        "user_01MARGARET",
        "Margaret",
        "Hamilton",
        "margaret@globex.example",
        GLOBEX,
        impersonator_email="support@centure.example",
        impersonator_reason="Ticket #4521: customer asked for help with MCP proxy setup",
    ),
}

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):04d}"


def _user_for(authorization: str | None) -> DemoUser | None:
    token = (authorization or "").removeprefix("Bearer ").strip()
    return USERS.get(token)


def build_fastapi_app() -> Any:
    from fastapi import Depends, FastAPI, Header, HTTPException

    def authenticate(authorization: str | None = Header(default=None)) -> DemoUser:
        user = _user_for(authorization)
        if user is None:
            raise HTTPException(status_code=401, detail="unknown token")
        audit.actor(user.actor())
        audit.organization(user.organization_id)
        return user

    app = FastAPI(title="Centure demo (FastAPI)", dependencies=[Depends(authenticate)])

    @app.post("/projects/{project_id}/api-keys", status_code=201)
    @audited("api_key.create", targets=[Target.from_result("api_key", id="id", name="name")])
    async def create_api_key(project_id: str, body: dict[str, str], dry_run: bool = False) -> dict[str, str]:
        name = body.get("name", "default")
        if dry_run:
            audit.skip()  # a dry run validates the form and creates nothing: nothing happened to audit
            return {"id": "", "name": name, "project_id": project_id}
        audit.target(Target("project", id=project_id, name=body.get("project_name")))
        audit.metadata(source=f"/projects/{project_id}/api-keys/new", environment="production")
        return {"id": _new_id("key"), "name": name, "project_id": project_id}

    @app.patch("/projects/{project_id}/mcp-proxies/{proxy_id}/status")
    @audited(
        "mcp_proxy.update_status",
        targets=[Target.from_path("project", "project_id"), Target.from_path("mcp_proxy", "proxy_id")],
    )
    def update_mcp_proxy_status(project_id: str, proxy_id: str, body: dict[str, str]) -> dict[str, str]:
        # A sync endpoint: FastAPI runs it in its thread pool; the audit context follows it there.
        audit.metadata(
            source=f"/projects/{project_id}/mcp-proxies/{proxy_id}",
            changes=f'{{"status": {{"from": "active", "to": "{body.get("status", "paused")}"}}}}',
        )
        return {"id": proxy_id, "status": body.get("status", "paused")}

    @app.get("/projects/{project_id}")
    async def read_project(project_id: str) -> dict[str, str]:
        return {"id": project_id}  # not audited: reads are not in the catalog

    return app


def build_flask_app() -> Any:
    from flask import Flask, jsonify, redirect, request

    app = Flask("centure_demo_flask")

    @app.before_request
    def authenticate() -> Any:
        # Flask's login_required pattern: a visitor who isn't signed in is sent to the login page (a 302, not an
        # error), so such requests complete without an actor.
        if request.endpoint == "login":
            return None
        user = _user_for(request.headers.get("Authorization"))
        if user is None:
            return redirect("/login")
        audit.actor(user.actor())
        audit.organization(user.organization_id)
        return None

    @app.get("/login")
    def login() -> Any:
        return "Sign in with a demo token (Authorization: Bearer tok_ada).", 200, {"Content-Type": "text/plain"}

    # The form pattern: GET lists the projects (and shows the form), POST creates one. Only POST is recorded.
    @app.route("/projects", methods=("GET", "POST"))
    @audited("project.create", targets=[Target.from_result("project", id="id", name="name")])
    def create_project() -> Any:
        if request.method == "GET":
            return jsonify(projects=[])
        body = request.get_json(silent=True) or {}
        audit.metadata(source="/projects/new", name=body.get("name", ""))
        return jsonify(id=_new_id("proj"), name=body.get("name", "")), 201

    @app.post("/projects/<project_id>/members")
    @audited("project_membership.create", targets=[Target.from_path("project", "project_id")])
    def add_member(project_id: str) -> Any:
        body = request.get_json(silent=True) or {}
        audit.target(Target("user", id=body.get("user_id", "user_unknown")))
        audit.metadata(source=f"/projects/{project_id}/members", role=body.get("role", "member"))
        return jsonify(ok=True), 201

    return app
