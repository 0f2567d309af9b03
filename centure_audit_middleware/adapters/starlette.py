"""Starlette adapter: `install(app, auditor)`, and the route templates of Starlette and FastAPI scopes.

The audit middleware is placed *outside* Starlette's ServerErrorMiddleware (by wrapping the middleware stack the
app builds), so that the handler for unhandled exceptions still runs inside the request's audit context and the 500
it sends is what gets recorded. The app's lifespan is wrapped to flush the auditor at shutdown.

`route_template(scope)` answers "which route template matched", which Starlette and FastAPI record differently from
version to version (details in its docstring). Nothing here imports Starlette at module level: the core reads route
templates through this module without depending on a web framework.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from ..asgi import AuditMiddleware

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..auditor import Auditor
    from ..client_ip import ClientIPResolver
    from ..types import ASGIApp, Receive, Scope, Send

__all__ = ["PROXY_HEADERS_WARNING", "install", "route_template"]

logger = logging.getLogger("centure_audit_middleware")

_INSTALLED = "centure_audit_auditor"

#: Logged once per process when uvicorn's proxy-headers middleware and the Auditor's trusted proxies would both
#: resolve forwarding headers (`%s`: uvicorn's trusted addresses). Shared with the tests.
PROXY_HEADERS_WARNING: Final = (
    "audit: uvicorn resolves X-Forwarded-For itself (--proxy-headers, on by default; --forwarded-allow-ips=%s) and "
    "the Auditor has trusted proxies too: requests from those proxies reach the Auditor with the client already "
    "taken from the header, so it decides trust on an address that is not the socket peer. Use one of the two: "
    "keep uvicorn's resolution and configure no trusted_proxies/trusted_hops, or run uvicorn with "
    "--no-proxy-headers and keep trusted_proxies"
)

# A route template is looked for this many Mounts deep at most: real apps nest two or three; this only bounds the
# walk over a (pathological) self-including app.
_MAX_DEPTH: Final = 16
# How far up the call stack uvicorn's middleware is looked for: server -> proxy headers -> app is a few frames, plus
# whatever wraps the app (message logger, a user's own ASGI middleware).
_MAX_FRAMES: Final = 64
_PLACEHOLDER = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

_proxy_warning_given = False


def install(app: Starlette, auditor: Auditor) -> Starlette:
    if getattr(app.state, _INSTALLED, None) is not None:
        return app  # installing twice has no double effect
    if app.middleware_stack is not None:
        raise RuntimeError("install the auditor before the app starts serving requests")
    setattr(app.state, _INSTALLED, auditor)

    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        return _FirstCall(app, AuditMiddleware(build_stack(), auditor=auditor), auditor)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    app.router.lifespan_context = _flushing_lifespan(app.router.lifespan_context, auditor)
    return app


class _FirstCall:
    """The app's middleware stack until its first call (the lifespan startup, or else the first request), which checks
    once how the server is set up and then puts the audit middleware in its place: later calls never pass here."""

    def __init__(self, app: Starlette, stack: ASGIApp, auditor: Auditor) -> None:
        self.app = app
        self.stack = stack
        self.auditor = auditor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app.middleware_stack is self:
            self.app.middleware_stack = self.stack
            check_proxy_headers(self.auditor.client_ip_resolver)
        await self.stack(scope, receive, send)


def check_proxy_headers(resolver: ClientIPResolver) -> bool:
    """Warn (once per process) when uvicorn's ProxyHeadersMiddleware runs in front of this call and would rewrite
    `scope["client"]` for peers the Auditor also trusts as proxies; True if it did.

    uvicorn leaves no mark in the scope (it overwrites `client` and keeps the headers), so the middleware is found on
    the call stack, where its `__call__` is awaiting the app, with its `trusted_hosts`.
    """
    global _proxy_warning_given
    if _proxy_warning_given or not resolver.enabled:
        return False
    try:
        middleware = _uvicorn_proxy_headers()
        if middleware is None:
            return False
        always, trusted = _uvicorn_trusted(middleware)
        if not (always or any(resolver.may_trust(entry) for entry in trusted)):
            return False  # uvicorn never rewrites requests from the Auditor's proxies: they reach it untouched
    except Exception as exc:  # a check of the set-up must never break serving
        logger.debug("audit: could not inspect the server's proxy headers: %r", exc)
        return False
    _proxy_warning_given = True
    logger.warning(PROXY_HEADERS_WARNING, "*" if always else ",".join(trusted))
    return True


def _uvicorn_proxy_headers() -> Any:
    module = sys.modules.get("uvicorn.middleware.proxy_headers")
    if module is None:  # not served by uvicorn (or by one that never loaded its proxy-headers middleware)
        return None
    code = module.ProxyHeadersMiddleware.__call__.__code__
    frame = sys._getframe(1)
    for _ in range(_MAX_FRAMES):
        if frame.f_code is code:
            return frame.f_locals.get("self")
        if frame.f_back is None:
            break
        frame = frame.f_back
    return None


def _uvicorn_trusted(middleware: Any) -> tuple[bool, list[str]]:
    """(trusts every peer, trusted addresses and networks as text) of a ProxyHeadersMiddleware."""
    trusted = middleware.trusted_hosts
    if isinstance(trusted, set | frozenset | list | tuple):  # uvicorn 0.30 (our floor) kept a set of strings
        entries = [str(entry) for entry in trusted]
        return "*" in entries or bool(getattr(middleware, "always_trust", False)), entries
    entries = [
        str(entry)
        for group in ("trusted_hosts", "trusted_networks", "trusted_literals")
        for entry in getattr(trusted, group, ())
    ]
    return bool(getattr(trusted, "always_trust", False)), sorted(entries)


# -- route templates ----------------------------------------------------------------------------------------------
def route_template(scope: Scope) -> str | None:
    """The full template of the route that handled `scope` ("/api/v1/items/{item_id}"), or None if none matched.

    Relative to the outermost Starlette or FastAPI app (without the server's root path), with every Mount and every
    `include_router` prefix in it, on each supported version:

    - Starlette >= 1.7 and every FastAPI record the matched route in `scope["route"]`; inside a Mount its path is
      relative to the mount point, whose concrete path Starlette appends to `root_path`.
    - FastAPI >= 0.137 no longer copies the routes of an included router: `scope["route"]` is the router's own
      APIRoute, whose path lacks the `include_router` prefixes. FastAPI keeps the route as included (with the full
      path) in the scope's "fastapi" entry, which is read when it belongs to that same route.
    - Starlette < 1.7 records no route at all (nor does any version for a plain Starlette route in a FastAPI app), and
      a Mount with path parameters leaves only its concrete path: then the matched endpoint is looked up again in the
      app's routes, matching only the routes of that endpoint and the Mounts on the way.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return _look_up(scope)
    fastapi = scope.get("fastapi")
    if type(fastapi) is dict:
        included = fastapi.get("effective_route_context")
        # The entry outlives the routing step that set it (a Mount reached through an included router leaves it
        # behind for the sub-app's routes): it describes this route only if it wraps this very route object.
        if included is not None and getattr(included, "original_route", None) is route:
            full = getattr(included, "path", None)
            if isinstance(full, str) and full:
                template = full
    endpoint = scope.get("endpoint")
    if _is_mount(route):
        if (
            getattr(route, "app", None) is not endpoint
        ):  # a route inside the mount handled the request without recording itself
            return _look_up(scope)
        template = "/{path}"  # the mounted app (static files, a raw ASGI app) serves any path below the mount point
    elif getattr(route, "endpoint", endpoint) is not endpoint:  # left by an outer router: not the one that answered
        return _look_up(scope)
    root_path: str = scope.get("root_path", "")
    mount = root_path[len(scope.get("app_root_path", root_path)) :]
    if not mount:
        return template
    template = mount + template
    params = scope.get("path_params")
    if params and not _names_all(params, template):
        # A parameter of some Mount's path was matched, and the mount's concrete path is all that root_path keeps.
        return _look_up(scope) or template
    return template


def _names_all(params: Mapping[str, Any], template: str) -> bool:
    names = {m.group(1) for m in _PLACEHOLDER.finditer(template)}
    return all(name in names for name in params)


def _is_mount(route: Any) -> bool:
    # A route object of Starlette's means Starlette is imported: look it up rather than import it.
    routing = sys.modules.get("starlette.routing")
    return routing is not None and isinstance(route, routing.Mount)


def _look_up(scope: Scope) -> str | None:
    router = scope.get("router")  # the outermost router that saw the request
    endpoint = scope.get("endpoint")
    routing = sys.modules.get("starlette.routing")
    if router is None or endpoint is None or routing is None:
        return None
    root_path: str = scope.get("app_root_path", scope.get("root_path", ""))
    path: str = scope.get("path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] in ("", "/"):
        path = path[len(root_path) :]
    try:
        return _find(routing, getattr(router, "routes", ()), path, endpoint, _MAX_DEPTH)
    except Exception as exc:  # framework internals read by duck typing: a surprise must not cost the event
        logger.debug("audit: route template lookup failed: %r", exc)
        return None


def _find(routing: Any, routes: Iterable[Any], path: str, endpoint: Any, depth: int) -> str | None:
    for route in routes:
        included = getattr(route, "effective_route_contexts", None)
        if callable(included):
            # FastAPI >= 0.137's included router: its routes as included (prefixed), nested inclusions flattened.
            for context in included():
                found = _match(routing, getattr(context, "starlette_route", None) or context, path, endpoint, depth)
                if found is not None:
                    return found
            continue
        found = _match(routing, route, path, endpoint, depth)
        if found is not None:
            return found
    return None


def _match(routing: Any, route: Any, path: str, endpoint: Any, depth: int) -> str | None:
    if isinstance(route, routing.Mount):
        matched = route.path_regex.match(path)
        if matched is None or depth == 0:
            return None
        inner = _find(routing, route.routes, "/" + matched.group("path"), endpoint, depth - 1)
        if inner is not None:
            return str(route.path) + inner
        return str(route.path) + "/{path}" if route.app is endpoint else None
    if isinstance(route, routing.Host):
        return _find(routing, route.routes, path, endpoint, depth - 1) if depth else None
    if getattr(route, "endpoint", None) is not endpoint:
        return None
    regex = getattr(route, "path_regex", None)
    template = getattr(route, "path", None)
    if regex is None or not isinstance(template, str) or regex.match(path) is None:
        return None
    return template


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
