"""centure-audit-middleware: audit logging for FastAPI, Starlette and Flask apps, delivered to WorkOS.

auditor = Auditor.from_env()
auditor.install(app)

@app.post("/projects/{project_id}/api-keys")
@audited("api_key.create", targets=[Target.from_path("project", "project_id")])
async def create_key(project_id: str): ...
"""

from __future__ import annotations

from .annotations import AuditSpec, RouteMap, audited
from .asgi import AuditMiddleware
from .auditor import Auditor
from .catchall import RecordAll
from .context import NoRequestError, RequestContext, audit, current_request
from .events import Actor, AuditEvent, EventContext, EventError, GeoInfo, MetadataError, Target, UserAgentInfo
from .wsgi import AuditWSGIMiddleware

__all__ = [
    "Actor",
    "AuditEvent",
    "AuditMiddleware",
    "AuditSpec",
    "AuditWSGIMiddleware",
    "Auditor",
    "EventContext",
    "EventError",
    "GeoInfo",
    "MetadataError",
    "NoRequestError",
    "RecordAll",
    "RequestContext",
    "RouteMap",
    "Target",
    "UserAgentInfo",
    "audit",
    "audited",
    "current_request",
]

__version__ = "0.1.0"
