"""A FastAPI app for the keep-alive tests: audited deletes and uploads, an unaudited endpoint that refuses junk bodies,
and `GET /_events`, which flushes the pipeline and answers what the MemorySink received.

The actor is whoever the `X-User` header names, set by a dependency as a real auth layer would: so an event recorded
with another request's actor shows up as a wrong `actor.id`, and an event not recorded at all as a missing target.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from centure_audit_middleware import Actor, Auditor, Target, audit, audited
from centure_audit_middleware.sinks import MemorySink

__all__ = ["app"]

sink = MemorySink()
auditor = Auditor(sinks=[sink], outbox=os.environ["KEEPALIVE_OUTBOX"], geoip=False, commit_interval=0.01)


def identify(request: Request) -> None:
    user = request.headers.get("x-user")
    if user:
        audit.actor(Actor(user))
        audit.organization("org_keepalive")


app = FastAPI(dependencies=[Depends(identify)])


class Junk(BaseModel):
    n: int


@app.post("/junk")
async def junk(body: Junk) -> dict[str, Any]:
    return {"n": body.n}  # any body that is not {"n": <int>} is answered 422 by FastAPI, before this runs


@app.delete("/api-keys/{key_id}")
@audited("api_key.delete", targets=[Target.from_path("api_key", "key_id")])
async def delete_key(key_id: str) -> dict[str, Any]:
    return {"deleted": key_id}


@app.post("/uploads/{name}")
@audited("file.upload", targets=[Target.from_path("file", "name")])
async def upload(name: str, request: Request) -> dict[str, Any]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    audit.metadata(size=size)
    return {"size": size}


@app.get("/health")
def health() -> dict[str, Any]:
    return {"ok": True}


@app.get("/_events")
def events() -> list[dict[str, Any]]:
    assert auditor.flush(timeout=10), auditor.stats()
    return [
        {"action": e.action, "actor": e.actor.id, "target": e.targets[0].id, "metadata": dict(e.metadata)}
        for e in sink.events
    ]


auditor.install(app)
