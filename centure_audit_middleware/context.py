"""The per-request record, the ContextVar that holds it, and the `audit` facade.

One mutable `RequestContext` per request, created by the middleware and visible to everything that runs in the
request's context: endpoints (async, or sync in FastAPI's thread pool, which copies the context), dependencies,
exception handlers and background tasks. It is mutable on purpose: a copied context shares the same object, so a
sync endpoint's `audit.target()` is seen by the middleware.

The request path only stores raw values here. The client IP, user agent and geolocation are *lazy*: computed on
first read (the app pays only for what it reads) and otherwise by the dispatcher thread.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

from .events import Actor, GeoInfo, Target, UserAgentInfo

if TYPE_CHECKING:
    from .annotations import AuditSpec
    from .auditor import Auditor
    from .types import Scope, WSGIEnviron

__all__ = ["Audit", "NoRequestError", "PendingEvent", "RequestContext", "audit", "current_request"]

_UNSET: Final[Any] = object()
_now = time.time

#: The scope (ASGI) or environ (WSGI) key under which a middleware notes `id()` of the context it created. A context
#: is this request's only if the request carries its mark: servers may run a request inside a copy of another
#: request's contextvars (uvicorn does, on a keep-alive connection after a body above its flow-control mark), and
#: such an inherited context must never be taken over. An id, not the context itself: a scope that referred to the
#: context which refers to the scope would be a reference cycle per request, left to the garbage collector. The id
#: can't be reused while the context is alive, and it is alive while any context variable holds it.
OWNER_KEY: Final = "centure_audit.context"


class NoRequestError(RuntimeError):
    """An `audit.*` call that needs a request ran outside one (no audit middleware in this context)."""


class RequestContext:
    """Everything the audit layer knows about one HTTP request. Created by the middlewares, never by apps.

    Deliberately not slotted: the request path sets only the three attributes it must, and every other field reads
    its class-level default until something (an `audit.*` call, the adapter, completion) sets it.
    """

    status: int = 0
    actor: Actor | None = None
    organization_id: str | None = None
    targets: list[Target] | None = None
    metadata: dict[str, Any] | None = None
    skipped: bool = False
    finished: bool = False
    #: an `audit.record(..., durable=True)` of this request: its response waits for the commit
    durable: bool = False
    #: the driver connection of the app's transaction this request's events are written in (`audit.bind`), or None
    bound: Any = None
    #: what `audit.bind` was given (a connection, a Session), to tell whether its transaction is still open for a
    #: later `record()`; None after `await audit.abind`, whose later `record()`s wait in `pending` for the next one
    bound_to: Any = None
    spec: AuditSpec | None = None
    endpoint: Any = None
    route: str | None = None
    path_params: Mapping[str, Any] | None = None
    result: Any = _UNSET
    pending: list[PendingEvent] | None = None
    scope: Scope | None = None
    environ: WSGIEnviron | None = None
    _client_ip: Any = _UNSET
    _user_agent: Any = _UNSET
    _request_id: Any = _UNSET
    _user_agent_info: Any = _UNSET
    _geo: Any = _UNSET

    def __init__(self, auditor: Auditor, scope: Scope | None = None, environ: WSGIEnviron | None = None) -> None:
        self.auditor = auditor
        self.scope = scope
        self.environ = environ
        self.started_at = _now()

    @property
    def method(self) -> str:
        if self.scope is not None:
            return str(self.scope.get("method", "GET"))
        return str((self.environ or {}).get("REQUEST_METHOD", "GET"))

    @property
    def path(self) -> str:
        if self.scope is not None:
            return str(self.scope.get("path", ""))
        return str((self.environ or {}).get("PATH_INFO", ""))

    @property
    def peer(self) -> str | None:
        """The socket peer's address as the server reported it (kept beside the resolved client IP)."""
        if self.scope is not None:
            client = self.scope.get("client")
            return str(client[0]) if client else None
        peer = (self.environ or {}).get("REMOTE_ADDR")
        return peer if isinstance(peer, str) and peer else None

    # -- raw request data -------------------------------------------------------------------------------------
    def header(self, name: str) -> str | None:
        """One request header, decoded as Latin-1 like HTTP/1.1 says; several lines joined with ", "."""
        if self.scope is not None:
            wanted = name.lower().encode("latin-1")
            values = [v for k, v in self.scope.get("headers", ()) if k == wanted]
            if not values:
                return None
            return b", ".join(values).decode("latin-1")
        if self.environ is not None:
            value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
            return value if isinstance(value, str) else None
        return None

    def route_template(self) -> str | None:
        """The matched route's template ("/projects/{project_id}"), or None when nothing matched."""
        if self.route is None and self.scope is not None:
            # Starlette and FastAPI record the matched route differently from version to version (FastAPI >= 0.137
            # leaves included routers' prefixes out of scope["route"]; Starlette < 1.7 records no route): the adapter
            # knows how to read each. Imported here: the adapter imports the ASGI middleware, which imports us.
            from .adapters.starlette import route_template

            self.route = route_template(self.scope)
        return self.route

    def params(self) -> Mapping[str, Any]:
        """The matched route's path parameters."""
        if self.path_params is None and self.scope is not None:
            self.path_params = self.scope.get("path_params")
        return self.path_params or {}

    @property
    def has_result(self) -> bool:
        return self.result is not _UNSET

    # -- lazy derived values ----------------------------------------------------------------------------------
    @property
    def client_ip(self) -> str | None:
        """The client address, resolved through the configured trusted proxies (the raw peer stays in `peer`)."""
        if self._client_ip is _UNSET:
            resolver = self.auditor.client_ip_resolver
            forwarded = self.header(resolver.header_name.decode("latin-1")) if resolver.enabled else None
            self._client_ip = resolver.resolve(self.peer, forwarded)
        ip: str | None = self._client_ip
        return ip

    @property
    def user_agent(self) -> str | None:
        """The raw User-Agent header (never parsed here)."""
        if self._user_agent is _UNSET:
            self._read_event_headers()
        ua: str | None = self._user_agent
        return ua

    @property
    def request_id(self) -> str | None:
        """The X-Request-ID header, as a proxy or the app set it."""
        if self._request_id is _UNSET:
            self._read_event_headers()
        request_id: str | None = self._request_id
        return request_id

    def _read_event_headers(self) -> None:
        # Every event reads these two: one pass over an ASGI scope's header list rather than one per header.
        if self.scope is None:
            self._user_agent, self._request_id = self.header("user-agent"), self.header("x-request-id")
            return
        agents: list[bytes] = []
        ids: list[bytes] = []
        for name, value in self.scope.get("headers", ()):
            if name == b"user-agent":
                agents.append(value)
            elif name == b"x-request-id":
                ids.append(value)
        self._user_agent = b", ".join(agents).decode("latin-1") if agents else None
        self._request_id = b", ".join(ids).decode("latin-1") if ids else None

    @property
    def user_agent_info(self) -> UserAgentInfo | None:
        """The parsed user agent, computed on first read."""
        if self._user_agent_info is _UNSET:
            self._user_agent_info = self.auditor.parse_user_agent(self.user_agent)
        info: UserAgentInfo | None = self._user_agent_info
        return info

    @property
    def geo(self) -> GeoInfo | None:
        """The client's location from the GeoIP database, computed on first read."""
        if self._geo is _UNSET:
            self._geo = self.auditor.locate(self.client_ip)
        geo: GeoInfo | None = self._geo
        return geo

    def __repr__(self) -> str:
        return f"<RequestContext {self.method} {self.path} status={self.status}>"


class PendingEvent:
    """What the request path hands to the dispatcher: raw values and references, nothing computed.

    The dispatcher turns it into an `AuditEvent` (id, validation, enrichment). Fields left as None are filled from
    `request` when there is one.
    """

    __slots__ = (
        "action",
        "actor",
        "metadata",
        "occurred_at",
        "organization_id",
        "request",
        "spec",
        "targets",
        "version",
    )

    def __init__(
        self,
        action: str,
        *,
        request: RequestContext | None = None,
        spec: AuditSpec | None = None,
        actor: Actor | None = None,
        organization_id: str | None = None,
        targets: Iterable[Target] | None = None,
        metadata: Mapping[str, Any] | None = None,
        occurred_at: float | dt.datetime | None = None,
        version: int | None = None,
    ) -> None:
        self.action = action
        self.request = request
        self.spec = spec
        self.actor = actor
        self.organization_id = organization_id
        self.targets = list(targets) if targets is not None else None
        self.metadata = metadata
        self.occurred_at = _now() if occurred_at is None else occurred_at
        self.version = version

    def __repr__(self) -> str:
        return f"<PendingEvent {self.action}>"


_current: ContextVar[RequestContext | None] = ContextVar("centure_audit_request", default=None)


def current_request() -> RequestContext | None:
    """The request being handled in this context, or None outside a request."""
    return _current.get()


def _require() -> RequestContext:
    ctx = _current.get()
    if ctx is None:
        raise NoRequestError(
            "no audited request in this context: install the audit middleware (auditor.install(app)), "
            "or use audit.record(action, actor=..., organization=...) outside requests"
        )
    return ctx


def _require_open() -> RequestContext:
    """The current request, while its event can still change: annotating a finished one would be lost silently."""
    ctx = _require()
    if ctx.finished:
        raise NoRequestError(
            f"{ctx!r} is complete and its event already recorded (this code runs after the response, e.g. in a "
            "background task): use audit.record(action, ...) for a further event"
        )
    return ctx


class Audit:
    """The imperative API: `from centure_audit_middleware import audit`.

    Inside a request every call annotates that request's event. Outside one, only `record()` with an explicit
    actor and organization works; the rest raise `NoRequestError`.
    """

    __slots__ = ()

    def actor(self, actor: Actor) -> None:
        """Who is acting in this request; typically called once by the app's auth layer."""
        ctx = _current.get()
        if ctx is None or ctx.finished or not isinstance(actor, Actor):  # one test on the fast path, reasons below
            if not isinstance(actor, Actor):
                raise TypeError(f"audit.actor() takes an Actor, not {type(actor).__name__}")
            ctx = _require_open()
        ctx.actor = actor

    def organization(self, organization_id: str) -> None:
        """The WorkOS organization this request acts for."""
        ctx = _current.get()
        if ctx is None or ctx.finished or not organization_id or not isinstance(organization_id, str):
            if not isinstance(organization_id, str) or not organization_id:
                raise TypeError(f"audit.organization() takes a non-empty organization id, not {organization_id!r}")
            ctx = _require_open()
        ctx.organization_id = organization_id

    def target(self, *targets: Target) -> None:
        """Add targets known only inside the handler (after those declared on the route)."""
        for target in targets:
            if not isinstance(target, Target):
                raise TypeError(f"audit.target() takes Target objects, not {type(target).__name__}")
        ctx = _require_open()
        if ctx.targets is None:
            ctx.targets = list(targets)
        else:
            ctx.targets.extend(targets)

    def metadata(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Add event metadata (validated and coerced to WorkOS rules off the request path)."""
        ctx = _require_open()
        if ctx.metadata is None:
            ctx.metadata = {}
        if values:
            ctx.metadata.update(values)
        ctx.metadata.update(kwargs)

    def skip(self) -> None:
        """Record nothing for this request's route event (ad-hoc `record()` calls still count)."""
        _require_open().skipped = True

    def bind(self, transaction: Any) -> None:
        """Write this request's audit events in `transaction` (a psycopg connection, a SQLAlchemy Session): they
        commit if and only if it commits. Call it once the change is made, before the commit: the request's own
        event, as annotated so far, and its `record()`s so far are written now, later `record()`s as they come
        while it is open. Needs the outbox on PostgreSQL in the app's database (see
        `centure_audit_middleware.transactional`)."""
        ctx = _require_open()
        ctx.auditor.bind(ctx, transaction)

    async def abind(self, transaction: Any) -> None:
        """`bind` for an async connection or session (psycopg's `AsyncConnection`, SQLAlchemy's `AsyncSession`):
        the request's own event and its `record()`s so far are written now; await it again after later
        `record()`s (a `record()` can't await its write)."""
        ctx = _require_open()
        await ctx.auditor.abind(ctx, transaction)

    def record(
        self,
        action: str,
        *,
        actor: Actor | None = None,
        organization: str | None = None,
        targets: Iterable[Target] = (),
        metadata: Mapping[str, Any] | None = None,
        occurred_at: dt.datetime | None = None,
        version: int | None = None,
        durable: bool = False,
        transaction: Any = None,
    ) -> None:
        """Record an ad-hoc event. In a request it inherits actor, organization and context; outside it needs both.

        `durable=True`: in a request, its response waits until the request's events are committed; elsewhere (a job,
        a background task) this call returns once the event is committed, and raises `DurabilityError` if it could
        not be (with the Auditor's `durable_failure="continue"`, it logs instead).

        `transaction=`: write it in that database transaction (outside a request; in one, see `bind`)."""
        if not isinstance(action, str) or not action:
            raise TypeError(f"audit.record() needs an action name, not {action!r}")
        if occurred_at is not None and (not isinstance(occurred_at, dt.datetime) or occurred_at.utcoffset() is None):
            raise ValueError("occurred_at must be a timezone-aware datetime")
        ctx = _current.get()
        pending = PendingEvent(
            action,
            request=ctx,
            actor=actor,
            organization_id=organization,
            targets=targets,
            metadata=dict(metadata) if metadata else None,
            occurred_at=occurred_at if occurred_at is not None else time.time(),
            version=version,
        )
        if transaction is not None:  # this one event in that transaction (the request's own event is not bound)
            from .auditor import default_auditor
            from .transactional import dbapi_connection

            auditor = ctx.auditor if ctx is not None else default_auditor()
            auditor.write_in(dbapi_connection(transaction), [pending])
            return
        if ctx is not None:
            if ctx.bound_to is not None and not ctx.finished:  # after audit.bind(): written now, while it is open
                from .transactional import still_open

                if still_open(ctx.bound_to, ctx.bound):
                    ctx.auditor.write_in(ctx.bound, [pending])
                    return
                # Its transaction ended (the connection may be another request's by now): recorded the usual way.
            if ctx.finished:  # e.g. a background task: the request's own event is already out
                if durable:
                    ctx.auditor.record_durably([pending])
                else:
                    ctx.auditor.handoff(pending)
                return
            if durable:
                ctx.durable = True
            if ctx.pending is None:
                ctx.pending = [pending]
            else:
                ctx.pending.append(pending)
            return
        if actor is None or organization is None:
            raise NoRequestError("audit.record() outside a request needs both actor= and organization=")
        from .auditor import default_auditor

        if durable:
            default_auditor().record_durably([pending])
        else:
            default_auditor().handoff(pending)

    @property
    def request(self) -> RequestContext:
        """The current request's record (client_ip, user_agent, geo, ...); raises outside a request."""
        return _require()

    @property
    def active(self) -> bool:
        """True inside a request handled by the audit middleware whose event can still be annotated."""
        ctx = _current.get()
        return ctx is not None and not ctx.finished


audit: Final = Audit()
