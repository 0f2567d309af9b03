"""A Starlette app for the proxy-header tests: `GET /whoami` answers the client IP and the peer the audit layer sees.

Environment: PROXY_APP_OUTBOX (the outbox file) and PROXY_APP_TRUSTED (the Auditor's trusted proxies, separated by
commas; empty or unset: none).
"""

from __future__ import annotations

import logging
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from centure_audit_middleware import Auditor, audit
from centure_audit_middleware.sinks import MemorySink

__all__ = ["app"]

# The test reads the audit layer's warnings from the server's output.
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

trusted = [entry for entry in os.environ.get("PROXY_APP_TRUSTED", "").split(",") if entry]
auditor = Auditor(sinks=[MemorySink()], outbox=os.environ["PROXY_APP_OUTBOX"], geoip=False, trusted_proxies=trusted)


async def whoami(request: Request) -> Response:
    return JSONResponse({"client_ip": audit.request.client_ip, "peer": audit.request.peer})


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/whoami", whoami), Route("/health", health)])
auditor.install(app)
