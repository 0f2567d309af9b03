"""Flask adapter: `install(app, auditor)` or the extension pattern `CentureAudit(auditor).init_app(app)`.

The WSGI middleware wraps `app.wsgi_app` (Flask's own recommendation, so `app` stays the Flask object). The adapter
tells it what only Flask knows: the matched route (view, template, arguments, methods), and whether the response's
body is complete when Flask returns it (every response but a streamed one), so that the record completes then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..annotations import ROUTE_METHODS_KEY
from ..context import current_request
from ..wsgi import BODY_COMPLETE_KEY, AuditWSGIMiddleware

if TYPE_CHECKING:
    from flask import Flask

    from ..auditor import Auditor
    from ..context import RequestContext

__all__ = ["CentureAudit", "install"]

_EXTENSION = "centure_audit"


def install(app: Flask, auditor: Auditor) -> Flask:
    if _EXTENSION in app.extensions:
        return app  # installing twice has no double effect
    from flask import request
    from werkzeug.exceptions import HTTPException

    app.extensions[_EXTENSION] = auditor
    app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, auditor=auditor)  # type: ignore[method-assign]
    view_functions = app.view_functions
    dispatch_request = app.dispatch_request
    finalize_request = app.finalize_request

    # Flask matches the URL before dispatching, then forgets the request before the WSGI middleware sees the
    # response: note the view, rule and arguments on the audit context on the way in. Wrapping dispatch_request
    # (rather than a before_request hook) costs one call, where Flask's hook machinery costs several.
    def note_route(ctx: RequestContext) -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not three
        rule = req.url_rule
        if rule is not None:
            ctx.route = rule.rule
            ctx.endpoint = view_functions.get(rule.endpoint)
            req.environ[ROUTE_METHODS_KEY] = rule.methods  # a form view's GET is not its POST: see `records`
        ctx.path_params = req.view_args

    def audited_dispatch_request(*args: Any, **kwargs: Any) -> Any:
        ctx = current_request()
        if ctx is not None:
            note_route(ctx)
        return dispatch_request(*args, **kwargs)

    # Every response Flask makes passes here (views, error handlers, before_request short-cuts), and leaves after the
    # after_request hooks. A sequence body is complete then, though werkzeug hands the server a generator over it:
    # say so. An HTTPException (abort(), a routing error, Flask's own 500) would become a response by running it as
    # a WSGI app, whose body then looks streamed: its own response keeps it a list.
    def audited_finalize_request(rv: Any, from_error_handler: bool = False) -> Any:
        if isinstance(rv, HTTPException):
            rv = rv.get_response(request.environ)
        ctx = current_request()
        if ctx is not None and ctx.endpoint is None and ctx.route is None:
            # A before_request hook answered (a rate limit, an auth refusal): the URL was matched all the same, and
            # the endpoint's own annotation, not `RecordAll`'s catch-all, decides whether this request is recorded.
            note_route(ctx)
        response = finalize_request(rv, from_error_handler)
        if getattr(response, "is_sequence", False) and ctx is not None and ctx.environ is not None:
            ctx.environ[BODY_COMPLETE_KEY] = True
        return response

    app.dispatch_request = audited_dispatch_request  # type: ignore[method-assign]
    app.finalize_request = audited_finalize_request  # type: ignore[method-assign]
    return app


class CentureAudit:
    """The Flask extension pattern: `audit_ext = CentureAudit(auditor)`, later `audit_ext.init_app(app)`."""

    def __init__(self, auditor: Auditor, app: Flask | None = None) -> None:
        self.auditor = auditor
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        from ..auditor import _set_default

        _set_default(self.auditor)
        install(app, self.auditor)
