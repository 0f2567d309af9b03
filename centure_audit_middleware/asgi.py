"""The pure ASGI audit middleware (never BaseHTTPMiddleware: it would buffer responses and break contextvars).

Per request it creates the `RequestContext`, publishes it in the ContextVar, watches `send` for the status and the
last body chunk, and completes the audit record right after that chunk has been handed to the server. It never
reads `receive`, and websocket and lifespan scopes pass straight through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .context import RequestContext, _current, _now
from .types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .auditor import Auditor

__all__ = ["AuditMiddleware"]

_new = object.__new__


class AuditMiddleware:
    """`app = AuditMiddleware(app, auditor=auditor)`, or `app.add_middleware(AuditMiddleware, auditor=...)`."""

    def __init__(self, app: ASGIApp, auditor: Auditor) -> None:
        self.app = app
        self.auditor = auditor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A context already set means an outer audit middleware handles this request: installing twice is harmless.
        if scope["type"] != "http" or _current.get() is not None:
            await self.app(scope, receive, send)
            return

        # RequestContext(auditor, scope), without the cost of a Python __init__ call: this runs on every request.
        ctx = _new(RequestContext)
        ctx.auditor = auditor = self.auditor
        ctx.scope = scope
        ctx.started_at = _now()
        complete = auditor.complete

        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                ctx.status = message["status"]
            elif (kind == "http.response.body" and not message.get("more_body", False)) or (
                kind == "http.response.pathsend"
            ):
                await send(message)
                complete(ctx)  # after the last chunk reached the server: the client is never kept waiting
                return
            await send(message)

        token = _current.set(ctx)
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            if not ctx.finished:
                if ctx.status < 500:
                    ctx.status = 500
                complete(ctx)
            raise
        finally:
            _current.reset(token)
        if not ctx.finished:  # the app returned without finishing a response (client gone, or a bug)
            complete(ctx)
