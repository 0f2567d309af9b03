"""The WSGI audit middleware.

Completion is the response iterable's `close()` (PEP 3333 servers always call it), so a streamed body is recorded
only after its last chunk. `write()`-style apps and apps that raise are handled too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .context import OWNER_KEY, RequestContext, _current
from .types import StartResponse, WSGIApp, WSGIEnviron

if TYPE_CHECKING:
    from .auditor import Auditor

__all__ = ["AuditWSGIMiddleware"]


class _ClosingResponse:
    """Passes iteration straight to the app's iterable; completes the audit record on `close()`."""

    __slots__ = ("_complete", "_ctx", "_iterable")

    def __init__(self, iterable: Iterable[bytes], ctx: RequestContext, complete: Any) -> None:
        self._iterable = iterable
        self._ctx = ctx
        self._complete = complete

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._iterable)

    def close(self) -> None:
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            if not self._ctx.finished:
                self._complete(self._ctx)


class AuditWSGIMiddleware:
    """`app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, auditor=auditor)` (the Flask adapter does this for you)."""

    def __init__(self, app: WSGIApp, auditor: Auditor) -> None:
        self.app = app
        self.auditor = auditor

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        outer = _current.get()
        if outer is not None and environ.get(OWNER_KEY) == id(outer):  # an outer audit middleware handles it
            return self.app(environ, start_response)

        ctx = RequestContext(self.auditor, environ=environ)
        environ[OWNER_KEY] = id(ctx)

        def start_response_wrapper(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                ctx.status = int(status[:3])
            except ValueError:
                ctx.status = 500
            return start_response(status, headers, exc_info)

        token = _current.set(ctx)
        try:
            iterable = self.app(environ, start_response_wrapper)
        except BaseException:
            if ctx.status < 500:
                ctx.status = 500
            self.auditor.complete(ctx)
            raise
        finally:
            _current.reset(token)
        return _ClosingResponse(iterable, ctx, self.auditor.complete)
