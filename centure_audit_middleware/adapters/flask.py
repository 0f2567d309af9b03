"""Flask adapter: `install(app, auditor)` or the extension pattern `CentureAudit(auditor).init_app(app)`.

The WSGI middleware wraps `app.wsgi_app` (Flask's own recommendation, so `app` stays the Flask object).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..context import current_request
from ..wsgi import AuditWSGIMiddleware

if TYPE_CHECKING:
    from flask import Flask

    from ..auditor import Auditor

__all__ = ["CentureAudit", "install"]

_EXTENSION = "centure_audit"


def install(app: Flask, auditor: Auditor) -> Flask:
    if _EXTENSION in app.extensions:
        return app  # installing twice has no double effect
    from flask import request

    app.extensions[_EXTENSION] = auditor
    app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, auditor=auditor)  # type: ignore[method-assign]
    view_functions = app.view_functions
    dispatch_request = app.dispatch_request

    # Flask matches the URL before dispatching, then forgets the request before the WSGI middleware sees the
    # response: note the view, rule and arguments on the audit context on the way in. Wrapping dispatch_request
    # (rather than a before_request hook) costs one call, where Flask's hook machinery costs several.
    def audited_dispatch_request(*args: Any, **kwargs: Any) -> Any:
        ctx = current_request()
        if ctx is not None:
            req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not three
            rule = req.url_rule
            if rule is not None:
                ctx.route = rule.rule
                ctx.endpoint = view_functions.get(rule.endpoint)
            ctx.path_params = req.view_args
        return dispatch_request(*args, **kwargs)

    app.dispatch_request = audited_dispatch_request  # type: ignore[method-assign]
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
