"""Flask adapter: `install(app, auditor)` or the extension pattern `CentureAudit(auditor).init_app(app)`.

The WSGI middleware wraps `app.wsgi_app` (Flask's own recommendation, so `app` stays the Flask object). Flask
clears its request before the WSGI middleware sees the response, so a `before_request` hook notes the matched
view function, URL rule and view arguments on the audit context while they exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

    @app.before_request
    def _note_route() -> None:
        ctx = current_request()
        if ctx is not None:
            rule = request.url_rule
            if rule is not None:
                ctx.route = rule.rule
                ctx.endpoint = view_functions.get(rule.endpoint)
            ctx.path_params = request.view_args

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
