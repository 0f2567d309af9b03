"""The pure ASGI audit middleware (never BaseHTTPMiddleware: it would buffer responses and break contextvars).

Per request it creates the `RequestContext`, publishes it in the ContextVar, watches `send` for the status and the
last body chunk, and completes the audit record right after that chunk has been handed to the server. It never
reads `receive`, and websocket and lifespan scopes pass straight through.

A durable record (`@audited(..., durable=True)`, `audit.record(..., durable=True)`) is completed when the response
starts instead, and the response waits, without blocking the event loop, until the record is committed; if it
can't be, the Auditor's `durable_failure` policy answers 503 in its place, or lets it through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .annotations import AuditSpec
from .context import OWNER_KEY, RequestContext, _current, _now
from .delivery.durable import UNAVAILABLE_BODY, UNAVAILABLE_HEADERS
from .types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .auditor import Auditor

__all__ = ["AuditMiddleware"]

_new = object.__new__
_UNAVAILABLE_HEADERS: Final = [(name.encode(), value.encode()) for name, value in UNAVAILABLE_HEADERS]


async def _send_unavailable(send: Send) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": list(_UNAVAILABLE_HEADERS)})
    await send({"type": "http.response.body", "body": UNAVAILABLE_BODY})


class AuditMiddleware:
    """`app = AuditMiddleware(app, auditor=auditor)`, or `app.add_middleware(AuditMiddleware, auditor=...)`."""

    def __init__(self, app: ASGIApp, auditor: Auditor) -> None:
        self.app = app
        self.auditor = auditor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outer = _current.get()
        if outer is not None and scope.get(OWNER_KEY) == id(outer):
            # An outer audit middleware handles this very request: installing twice is harmless. A context that
            # this request doesn't carry the mark of was inherited from another request (see OWNER_KEY): not ours.
            await self.app(scope, receive, send)
            return

        # RequestContext(auditor, scope), without the cost of a Python __init__ call: this runs on every request.
        ctx = _new(RequestContext)
        ctx.auditor = auditor = self.auditor
        ctx.scope = scope
        ctx.started_at = _now()
        scope[OWNER_KEY] = id(ctx)
        complete = auditor.complete
        replaced = False  # a durable record failed and a 503 went out instead: the app's response is dropped

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            kind = message["type"]
            if kind == "http.response.start":
                ctx.status = message["status"]
                if ctx.durable or AuditSpec.any_durable:
                    durable = auditor.durable_commit(ctx)
                    if (
                        durable is not None
                        and not await durable.wait_async(auditor.durable_timeout)
                        and auditor.refuses_uncommitted(ctx)
                    ):
                        replaced = True
                        await _send_unavailable(send)
                        return
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
