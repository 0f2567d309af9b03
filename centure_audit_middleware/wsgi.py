"""The WSGI audit middleware.

The record completes once the app has produced the whole body, so that everything the app annotates on the way
(in the view, and in a streamed body's generator) is in it:

- a body that is already complete when the app returns (a list or tuple, or a response the framework adapter marked
  with `BODY_COMPLETE_KEY`): at once. Waiting for `close()` would lose it wherever nobody calls `close()`, such as
  Werkzeug's test client, which calls it only on a buffered or explicitly closed response;
- a streamed body: when its iterator is exhausted or raises, or on `close()` (the server's, PEP 3333; the client went
  away mid-stream), whichever comes first. Iteration and `close()` run in the request's audit context, so a
  generator can still call `audit.*`.

`write()`-style apps and apps that raise are handled too.

A durable record (`@audited(..., durable=True)`, `audit.record(..., durable=True)`) is completed when the app calls
`start_response`, which then waits until the record is committed; if it can't be, the Auditor's `durable_failure`
policy answers 503 in its place (the app's body is closed unread), or lets it through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

from .annotations import AuditSpec
from .context import OWNER_KEY, RequestContext, _current
from .delivery.durable import UNAVAILABLE_BODY, UNAVAILABLE_HEADERS
from .types import StartResponse, WSGIApp, WSGIEnviron

if TYPE_CHECKING:
    from .auditor import Auditor

__all__ = ["BODY_COMPLETE_KEY", "AuditWSGIMiddleware"]

#: Set to True in the environ by a framework adapter that knows the response it returns has its whole body already
#: (a buffered werkzeug `Response`), though the iterable it hands over is a generator the middleware can't tell apart.
BODY_COMPLETE_KEY: Final = "centure_audit.body_complete"

_SEQUENCES: Final = (list, tuple)  # exact types: a subclass may produce its items lazily


def _discard(data: bytes) -> None:
    """The `write` callable handed to an app whose response was replaced by a 503: its body goes nowhere."""


class _StreamedResponse:
    """Passes a streamed body through chunk by chunk; completes the audit record at its end, failure or `close()`.
    Once `replaced()` (a durable record failed when the app started its response, as late as its first chunk: PEP
    3333 lets it), the app's chunks are dropped and the 503's body goes out instead."""

    __slots__ = ("_complete", "_ctx", "_iterable", "_next", "_replaced", "_unavailable_sent")

    def __init__(
        self,
        iterable: Iterable[bytes],
        ctx: RequestContext,
        complete: Callable[[RequestContext], None],
        replaced: Callable[[], bool],
    ) -> None:
        self._iterable = iterable
        self._ctx = ctx
        self._complete = complete
        self._replaced = replaced
        self._unavailable_sent = False

    def __iter__(self) -> Iterator[bytes]:
        token = _current.set(self._ctx)  # an iterable class may run app code here, even start the response
        try:
            self._next = iter(self._iterable).__next__
        except BaseException:
            self._failed()
            raise
        finally:
            _current.reset(token)
        return self

    def __next__(self) -> bytes:
        ctx = self._ctx
        token = _current.set(ctx)  # the generator runs after the app returned, outside the request's context
        try:
            chunk = self._next() if not self._replaced() else b""
            if self._replaced():
                if self._unavailable_sent:
                    raise StopIteration
                self._unavailable_sent = True
                return UNAVAILABLE_BODY
            return chunk
        except StopIteration:
            if not ctx.finished:
                self._complete(ctx)
            raise
        except BaseException:
            self._failed()
            raise
        finally:
            _current.reset(token)

    def _failed(self) -> None:
        # The status line may be out already, but the response is broken: recorded as the failure it is.
        ctx = self._ctx
        if not ctx.finished:
            if ctx.status < 500:
                ctx.status = 500
            self._complete(ctx)

    def close(self) -> None:
        ctx = self._ctx
        token = _current.set(ctx)  # a generator's `finally` runs here when the server stops early
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            _current.reset(token)
            if not ctx.finished:
                self._complete(ctx)


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

        replaced = False  # a durable record failed: a 503 went out instead of the app's response

        def start_response_wrapper(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal replaced
            try:
                ctx.status = int(status[:3])
            except ValueError:
                ctx.status = 500
            if (ctx.durable or AuditSpec.any_durable) and not ctx.finished:
                auditor = self.auditor
                durable = auditor.durable_commit(ctx)
                if (
                    durable is not None
                    and not durable.wait(auditor.durable_timeout)
                    and auditor.refuses_uncommitted(ctx)
                ):
                    replaced = True
                    start_response("503 Service Unavailable", list(UNAVAILABLE_HEADERS), exc_info)
                    return _discard  # a `write()`-style app's body must not follow the 503's headers
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
        if replaced:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
            return [UNAVAILABLE_BODY]
        # A list or tuple is the whole body: its app has no code left to run. Without a status (start_response never
        # called, a broken app) the record waits for the server to iterate and close, as for a stream.
        if ctx.status and (type(iterable) in _SEQUENCES or BODY_COMPLETE_KEY in environ):
            self.auditor.complete(ctx)
            return iterable
        return _StreamedResponse(iterable, ctx, self.auditor.complete, lambda: replaced)
