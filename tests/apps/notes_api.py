"""A small FastAPI app as users write them, for the `audit_log` fixture's tests: a module-level Auditor installed at
import, and an app factory that makes its own Auditor each time (the pattern that left threads and files behind)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException

from centure_audit_middleware import Actor, Auditor, Target, audit, audited

ORG = "org_notes"


def identify(x_user: str | None = Header(default=None)) -> None:
    if x_user:
        audit.actor(Actor(x_user, name=x_user.title()))
        audit.organization(ORG)


def create_app(auditor: Auditor | None = None) -> FastAPI:
    app = FastAPI(dependencies=[Depends(identify)])
    notes: dict[str, str] = {}

    @app.post("/notes/{note_id}")
    @audited("note.create", targets=[Target.from_path("note", "note_id")])
    async def create(note_id: str, text: str = "", api_key: str = "") -> dict[str, Any]:
        notes[note_id] = text
        audit.metadata(length=len(text), api_key=api_key)  # a secret, as apps sometimes pass one
        return {"id": note_id}

    @app.get("/notes/{note_id}")
    async def read(note_id: str) -> dict[str, Any]:
        if note_id not in notes:
            raise HTTPException(404)
        return {"id": note_id, "text": notes[note_id]}

    @app.delete("/notes/{note_id}")
    @audited("note.delete", targets=[Target.from_path("note", "note_id")])
    def delete(note_id: str) -> dict[str, Any]:  # a sync view, run in FastAPI's thread pool
        notes.pop(note_id, None)
        return {}

    (auditor or Auditor.from_env()).install(app)
    return app


auditor = Auditor.from_env()  # module-level, as most apps have it: it exists before any test's fixture
app = create_app(auditor)
