"""Starlette adapter: `install(app, auditor)`.

The audit middleware is placed *outside* Starlette's ServerErrorMiddleware (by wrapping the middleware stack the
app builds), so that the handler for unhandled exceptions still runs inside the request's audit context and the 500
it sends is what gets recorded. The app's lifespan is wrapped to flush the auditor at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from ..asgi import AuditMiddleware

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..auditor import Auditor

__all__ = ["install"]

_INSTALLED = "centure_audit_auditor"


def install(app: Starlette, auditor: Auditor) -> Starlette:
    if getattr(app.state, _INSTALLED, None) is not None:
        return app  # installing twice has no double effect
    if app.middleware_stack is not None:
        raise RuntimeError("install the auditor before the app starts serving requests")
    setattr(app.state, _INSTALLED, auditor)

    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        return AuditMiddleware(build_stack(), auditor=auditor)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    app.router.lifespan_context = _flushing_lifespan(app.router.lifespan_context, auditor)
    return app


def _flushing_lifespan(
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]], auditor: Auditor
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    @asynccontextmanager
    async def flushing(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            yield state
        # Close, not just flush: uvicorn re-raises SIGTERM after its graceful shutdown, so atexit never runs and
        # this is the last chance to hand back outbox leases. In a worker thread: it must not block the loop.
        await asyncio.get_running_loop().run_in_executor(None, partial(auditor.close, keep_sinks_open=True))

    return flushing
