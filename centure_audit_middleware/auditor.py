"""`Auditor`: the configuration and the one object an app holds (resolvers, sinks, dispatcher)."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .annotations import AuditSpec, RouteMap, spec_of
from .catchall import RecordAll
from .client_ip import ClientIPResolver, HeaderFamily
from .context import NoRequestError, PendingEvent, RequestContext
from .delivery.builder import EventBuilder, Validator
from .delivery.dispatcher import Dispatcher, DispatcherConfig, sink_rate_limits
from .delivery.durable import DurabilityError, Durable
from .delivery.location import is_postgres_url
from .delivery.policy import RetryPolicy
from .delivery.redact import DEFAULT_REDACT_PATTERNS, Redactor
from .events import Actor, AuditEvent, GeoInfo, UserAgentInfo
from .sinks.base import Sink

if TYPE_CHECKING:
    from .enrich.geo import GeoLocator
    from .enrich.useragent import UserAgentParser
    from .testing.capture import AuditLog

__all__ = ["Auditor", "default_auditor"]

logger = logging.getLogger("centure_audit_middleware")

ActorResolver = Callable[[RequestContext], Actor | None]
OrganizationResolver = Callable[[RequestContext], str | None]

_default: weakref.ref[Auditor] | None = None

#: WorkOS allows 6,000 requests per 60 s per IP (DESIGN §6).
WORKOS_RATE_LIMIT = (6000, 60.0)


_live: weakref.WeakSet[Auditor] = weakref.WeakSet()
_held: list[Auditor] = []


def _before_fork() -> None:
    # The warm-up thread holds _enrich_lock for ~0.3 s after install(); a child forked then (gunicorn --preload)
    # would inherit it held, and block forever on its first enriched event. Wait for it, and hold it across fork().
    _held[:] = list(_live)
    for auditor in _held:
        auditor._enrich_lock.acquire()


def _after_fork_in_parent() -> None:
    for auditor in _held:
        auditor._enrich_lock.release()
    _held.clear()


def _after_fork_in_child() -> None:
    for auditor in _held:
        auditor._enrich_lock = threading.Lock()
    _held.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


def _outbox_location(outbox: str | os.PathLike[str] | None) -> str:
    """A ``postgresql://`` URL as it is; a file made absolute from the start (a later chdir, by a test or a daemon,
    must not move the outbox)."""
    location = os.fspath(outbox or os.environ.get("CENTURE_AUDIT_OUTBOX") or "audit-outbox.db")
    return location if is_postgres_url(location) else os.path.abspath(location)


def live_auditors() -> list[Auditor]:
    """Every Auditor of this process that is still referenced (what the `audit_log` fixture redirects)."""
    return list(_live)


class _NoSink(Sink):
    """The sink of `Auditor.for_tests()`: never sent anything, since its events go to the test's log."""

    name = "none"

    def send(self, event: AuditEvent) -> None:  # pragma: no cover - handoff never reaches the dispatcher
        raise RuntimeError("Auditor.for_tests() delivers nowhere")


#: `Auditor.stats()` in a test (the `audit_log` fixture, `Auditor.for_tests()`), besides "recorded" and "skipped"
_TEST_STATS: dict[str, Any] = {
    "spooled": 0,
    "spilled": 0,
    "queued": 0,
    "sent": 0,
    "retried": 0,
    "dead_lettered": 0,
    "outbox_depth": 0,
    "outbox_dead": 0,
    "oldest_age": None,
}


def default_auditor() -> Auditor:
    """The auditor `audit.record()` uses outside a request: the last one created or installed."""
    auditor = _default() if _default is not None else None
    if auditor is None:
        raise NoRequestError("audit.record() outside a request needs an Auditor: create one (or auditor.install(app))")
    return auditor


def _set_default(auditor: Auditor) -> None:
    global _default
    _default = weakref.ref(auditor)


class Auditor:
    """Captures, annotates and delivers audit events for one app.

    Explicit construction: ``Auditor(sinks=[WorkOSSink(...), StoreSink()], actor=..., organization=...,
    trusted_proxies=["10.0.0.0/8"])``; from the environment: ``Auditor.from_env()``.

    ``anonymous_actor=``: the actor of requests that name none (e.g. ``Actor("anonymous", type="anonymous")``, or a
    callable of the request); without it they are not recorded, and counted as ``stats()["skipped"]["no_actor"]``.

    ``record_all=RecordAll(prefixes=["/api/"])``: also record every request under those prefixes (or by actors of
    chosen types, e.g. API keys) that no ``@audited`` or ``RouteMap`` entry claims, as ``api.request`` events
    (`centure_audit_middleware.catchall`).

    ``delivery="relay"``: this process only commits events to the outbox (for every sink); ``centure-audit relay``,
    another process, delivers them. With the default, ``"in-process"``, the app's own threads deliver, one process
    at a time per outbox (the outbox's sender lock).
    """

    def __init__(
        self,
        sinks: Sequence[Sink] | None = None,
        *,
        actor: ActorResolver | None = None,
        organization: OrganizationResolver | None = None,
        trusted_proxies: Iterable[str] = (),
        trusted_hops: int | None = None,
        forwarded_header: HeaderFamily = "x-forwarded-for",
        routes: RouteMap | Mapping[str, str | AuditSpec] | None = None,
        record_failures: bool = False,
        redact: Iterable[str] = DEFAULT_REDACT_PATTERNS,
        geoip: str | os.PathLike[str] | GeoLocator | bool | None = None,
        user_agents: bool | UserAgentParser = True,
        geo_metadata: bool = True,
        validators: Sequence[Validator] = (),
        outbox: str | os.PathLike[str] | None = None,
        commit_interval: float = 0.05,
        max_queue: int = 100_000,
        retry: RetryPolicy | None = None,
        rate_limits: Mapping[str, tuple[int, float] | None] | None = None,
        probe_interval: float = 30.0,
        lease: float = 60.0,
        flush_timeout: float = 5.0,
        delivery: Literal["in-process", "relay"] = "in-process",
        anonymous_actor: Actor | ActorResolver | None = None,
        durable_timeout: float = 5.0,
        durable_failure: Literal["503", "continue"] = "503",
        record_all: RecordAll | None = None,
    ) -> None:
        from .testing.capture import active_log

        log = active_log()  # under the `audit_log` fixture: record into it, deliver nowhere
        if sinks is None and log is None:
            from .sinks.store import StoreSink

            sinks = [StoreSink()]
        self.sinks = list(sinks or ())
        if not self.sinks and log is None:
            raise ValueError("an Auditor needs at least one sink (WORKOS_API_KEY unset and CENTURE_AUDIT_STORE=off?)")
        #: the log this Auditor records into in a test (`Auditor.for_tests()`, the `audit_log` fixture), else None
        self.audit_log: AuditLog | None = None
        self.actor_resolver = actor
        self.organization_resolver = organization
        #: who acts when a request names no one (an Actor, or a callable of the request); None: not recorded
        self.anonymous_actor = anonymous_actor
        if record_all is not None and not isinstance(record_all, RecordAll):
            raise TypeError(f"record_all takes a RecordAll(...), not {type(record_all).__name__}")
        #: the catch-all for requests no annotation claims (`RecordAll`), or None
        self.record_all = record_all
        self._skipped: Counter[str] = Counter()
        self._handed_to_log = 0  # events handed to a test's log (`stats()["recorded"]` in a test)
        self._warned_routes: set[str] = set()
        self._skip_lock = threading.Lock()
        self._has_resolvers = actor is not None or organization is not None
        self.client_ip_resolver = ClientIPResolver(trusted_proxies, trusted_hops=trusted_hops, header=forwarded_header)
        self.routes = routes if isinstance(routes, RouteMap) else RouteMap(routes)
        self.record_failures = record_failures
        self.flush_timeout = flush_timeout
        if durable_failure not in ("503", "continue"):
            raise ValueError(f"durable_failure must be '503' or 'continue', not {durable_failure!r}")
        #: how long a durable response waits for its commit, and what happens when it can't be had
        self.durable_timeout = durable_timeout
        self.durable_failure = durable_failure
        self._geoip_option = geoip
        self._user_agents_option = user_agents
        self._geo: GeoLocator | None = None
        self._ua: UserAgentParser | None = None
        self._enrich_lock = threading.Lock()
        _live.add(self)  # for the fork hooks below
        self._enrich_ready = False

        builder = EventBuilder(
            Redactor(redact), validators, geo_metadata=self._geo_metadata if geo_metadata else None, enricher=self
        )
        self.dispatcher = Dispatcher(
            self.sinks,
            builder,
            DispatcherConfig(
                outbox_path=_outbox_location(outbox),
                commit_interval=commit_interval,
                max_queue=max_queue,
                retry=retry or RetryPolicy(),
                rate_limits=sink_rate_limits(self.sinks, rate_limits),
                probe_interval=probe_interval,
                # How long a claimed delivery is this process's: after a crash, others resend it once it expires.
                # Keep it above the sink's timeout x (batch / concurrency); sends that would outlast it aren't started.
                lease=lease,
                delivery=delivery,
            ),
        )
        self.handoff: Callable[[RequestContext | PendingEvent], None] = self.dispatcher.submit
        if log is not None:
            self._record_into(log)
        _set_default(self)
        ref = weakref.ref(self)

        def at_exit() -> None:
            auditor = ref()
            if auditor is not None:
                auditor._at_exit()

        atexit.register(at_exit)

    @classmethod
    def for_tests(cls, **settings: Any) -> Auditor:
        """An Auditor for an app's tests: every event is built where it is handed off, with the same build,
        redaction and validation as in production, and kept in `auditor.audit_log` (`.events`, `.actions`,
        `.assert_recorded(...)`). No thread, no file, nothing outlives the test. `settings` as for `Auditor()`
        (sinks are ignored: nothing is delivered)."""
        from .testing.capture import AuditLog, active_log

        log = active_log() or AuditLog()
        auditor = cls(sinks=settings.pop("sinks", None) or [_NoSink()], **settings)
        auditor._record_into(log)
        return auditor

    def _record_into(self, log: AuditLog) -> None:
        handoff = log.handoff_for(self)

        def record(item: RequestContext | PendingEvent) -> None:
            self._handed_to_log += 1
            handoff(item)

        self.handoff = record
        self.audit_log = log

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Auditor:
        """Configure from environment variables (the README has the table). With `WORKOS_API_KEY`: WorkOS and
        the local store; without it: the local store only."""
        from .config import settings_from_env

        return cls(**{**settings_from_env(os.environ if environ is None else environ), **overrides})

    @property
    def routes(self) -> RouteMap:
        """Audit specs by method and route template, for endpoints that can't be decorated."""
        return self._route_map

    @routes.setter
    def routes(self, routes: RouteMap) -> None:
        self._route_map = routes
        self._routes = routes or None  # testing a falsy RouteMap costs a Python call per request; None doesn't

    # -- install -------------------------------------------------------------------------------------------------
    def install(self, app: Any) -> Any:
        """Install into a FastAPI, Starlette or Flask app (detected); returns the app."""
        from .adapters import detect

        _set_default(self)
        installed = detect(app).install(app, self)
        if self.audit_log is not None:
            return installed  # a test: nothing to deliver, no thread to start, enrichers loaded on first use
        # Start delivering now: a backlog left by an earlier run (crash, outage) must not wait for a new event.
        self.dispatcher.start()
        # Load the GeoIP database and compile the user-agent patterns (~0.3 s) now, in the background, so that
        # no request pays for them.
        threading.Thread(target=self._load_enrichers, name="centure-audit-warm-up", daemon=True).start()
        return installed

    # -- the request path ----------------------------------------------------------------------------------------
    def complete(self, ctx: RequestContext) -> None:
        """Called by the middlewares once the response is complete: decide, then hand off. Never raises."""
        if ctx.finished:  # completed already, when its response started (a durable record)
            return
        ctx.finished = True
        if ctx.bound is not None:  # audit.bind(): every event of the request went into the app's transaction
            if ctx.pending:  # recorded after `await audit.abind()`, or once the bound transaction had ended
                logger.error(
                    "audit: %d event(s) recorded after await audit.abind(), or after the bound transaction ended, "
                    "were not written in it: recorded now, outside it (bind again after the last audit.record())",
                    len(ctx.pending),
                )
                for late in ctx.pending:
                    self.handoff(late)
            return
        try:
            for item in self._decide(ctx, self._spec(ctx)):
                self.handoff(item)
        except Exception as exc:  # the request path must never fail because of auditing
            logger.error("audit: could not complete %r: %r", ctx, exc)

    def _spec(self, ctx: RequestContext) -> AuditSpec | None:
        """The spec that claims this request: the endpoint's, the route map's, or the catch-all's."""
        spec = ctx.spec
        if spec is None:
            scope = ctx.scope
            endpoint = scope.get("endpoint") if scope is not None else ctx.endpoint
            if endpoint is not None:
                spec = getattr(endpoint, "__centure_audit__", None)  # SPEC_ATTRIBUTE, as a constant: hot path
                if spec is None and isinstance(endpoint, type):
                    spec = spec_of(endpoint, ctx.method)
            if spec is None and self._routes is not None:
                spec = self._routes.lookup(ctx.method, ctx.route_template())
            if spec is None and self.record_all is not None and not ctx.skipped:
                spec = self.record_all.claim(ctx, self._resolve_identity if self._has_resolvers else None)
        return spec

    def _decide(self, ctx: RequestContext, spec: AuditSpec | None) -> list[RequestContext | PendingEvent]:
        """What this request hands off: its own event (if a spec claims it and the policy records it) and what it
        recorded with `audit.record`; actor-less ones are counted as skipped."""
        items: list[RequestContext | PendingEvent] = []
        pending = ctx.pending
        if (
            spec is not None
            and not ctx.skipped
            and spec.records_request(ctx)
            and (ctx.status < 400 or (self.record_failures if spec.record_failures is None else spec.record_failures))
        ):
            ctx.spec = spec
            if self._has_resolvers:
                self._resolve_identity(ctx)
            if ctx.actor is not None or self._anonymous(ctx):
                items.append(ctx)
            else:
                self._skip_no_actor(ctx, spec.action)
        if pending:
            if self._has_resolvers:
                self._resolve_identity(ctx)
            for item in pending:
                if item.actor is not None or ctx.actor is not None or self._anonymous(ctx):
                    items.append(item)
                else:
                    self._skip_no_actor(ctx, item.action)
        return items

    # -- transactional recording ---------------------------------------------------------------------------------
    def bind(self, ctx: RequestContext, transaction: Any) -> None:
        """`audit.bind()`: write the request's events so far in `transaction`, and its later ones as they come
        while that transaction is open (see `context.Audit.record`)."""
        from .transactional import dbapi_connection

        connection = dbapi_connection(transaction)  # refused before anything is taken from the request
        self.write_in(connection, self._take_for(ctx, connection))
        ctx.bound_to = transaction

    async def abind(self, ctx: RequestContext, transaction: Any) -> None:
        """`await audit.abind()`: write the request's events so far in an async `transaction`. May be awaited again
        for `audit.record()`s made after it (a later `record()` can't await its write, so it waits for that)."""
        from .transactional import async_connection, write_in_transaction_async

        connection = await async_connection(transaction)
        items = self._take_for(ctx, connection)
        ctx.bound_to = None  # later record()s wait for the next abind: they can't await a write
        if not self._to_test_log(items):
            await write_in_transaction_async(self, connection, items)

    def _take_for(self, ctx: RequestContext, connection: Any) -> list[RequestContext | PendingEvent]:
        """The request's events not yet written, now bound to `connection`: its own event and its records, the first
        time; only its later records when bound again (the own event went into the first transaction)."""
        items: list[RequestContext | PendingEvent] = (
            self._decide(ctx, self._spec(ctx)) if ctx.bound is None else list(ctx.pending or ())
        )
        ctx.bound = connection
        ctx.pending = None
        return items

    def write_in(self, connection: Any, items: list[RequestContext | PendingEvent]) -> None:
        """Write `items` through an app's DB-API connection, in the transaction it is in."""
        from .transactional import write_in_transaction

        if not self._to_test_log(items):
            write_in_transaction(self, connection, items)

    def _to_test_log(self, items: list[RequestContext | PendingEvent]) -> bool:
        """In a test (`audit_log`, `Auditor.for_tests()`): record `items` (built, validated) into the log instead of
        any database, and say so."""
        if self.audit_log is None:
            return False
        for item in items:
            self.handoff(item)
        return True

    # -- durable-before-response -----------------------------------------------------------------------------------
    def durable_commit(self, ctx: RequestContext) -> Durable | None:
        """Called by the middlewares when a response starts: if this request's record is durable, complete it now
        and return the promise of its commit (the response waits on it); None when it is not. Never raises."""
        if ctx.bound is not None:  # written in the app's transaction: durable the moment it commits
            return None
        try:
            spec = self._spec(ctx)
            if not (ctx.durable or (spec is not None and spec.durable)):
                ctx.spec = spec  # resolved once: complete() reuses it
                return None
            ctx.finished = True  # completed here, not when the body ends
            return self._commit_durably(self._decide(ctx, spec))
        except Exception as exc:
            logger.error("audit: could not complete %r durably: %r", ctx, exc)
            return Durable.settled(False)

    def refuses_uncommitted(self, ctx: RequestContext) -> bool:
        """A durable record was not committed in time: whether to answer 503 instead of the response (the
        `durable_failure` policy). Logged either way."""
        refuse = self.durable_failure == "503"
        outcome = "answered 503" if refuse else "response let through (durable_failure='continue')"
        logger.error("audit: durable record of %s not committed: %s", ctx, outcome)
        return refuse

    def _commit_durably(self, items: list[RequestContext | PendingEvent]) -> Durable:
        # Nothing to record (skipped, no actor, a refusal not recorded): nothing to wait for, nor to answer 503 for.
        if not items or self._to_test_log(items):  # (the test log records, built and validated, on hand-off)
            return Durable.settled(True)
        return self.dispatcher.submit_durable(items)

    def record_durably(self, items: list[RequestContext | PendingEvent]) -> None:
        """Hand off and wait for the commit (outside a request): `DurabilityError` if it fails, unless the policy
        is "continue"."""
        if self._commit_durably(items).wait(self.durable_timeout):
            return
        actions = [item.action if isinstance(item, PendingEvent) else "" for item in items]
        message = f"audit events {actions} not committed within {self.durable_timeout} s"
        if self.durable_failure == "continue":
            logger.error("audit: %s (durable_failure='continue')", message)
            return
        raise DurabilityError(message)

    def _anonymous(self, ctx: RequestContext) -> bool:
        """Give an actor-less request the configured anonymous actor; False when there is none."""
        anonymous = self.anonymous_actor
        if anonymous is None:
            return False
        try:
            actor = anonymous if isinstance(anonymous, Actor) else anonymous(ctx)
        except Exception as exc:
            logger.warning("audit: anonymous_actor failed: %r", exc)
            return False
        if actor is None:
            return False
        ctx.actor = actor
        return True

    def _skip_no_actor(self, ctx: RequestContext, action: str) -> None:
        # An anonymous GET or a login redirect is no one's action: not recorded, and not a dead letter (those are for
        # events that can't be delivered). Counted, and said once per route, in case an auth layer forgot audit.actor().
        route = f"{ctx.method} {ctx.route_template() or ctx.path}"
        with self._skip_lock:
            self._skipped["no_actor"] += 1
            first = route not in self._warned_routes and len(self._warned_routes) < 1024
            if first:
                self._warned_routes.add(route)
        if first:
            logger.warning(
                "audit: %s on %s not recorded: no actor (call audit.actor() in the auth layer, or configure "
                "Auditor(actor=...) or Auditor(anonymous_actor=...)); counted in stats()['skipped']['no_actor']",
                action,
                route,
            )

    def _resolve_identity(self, ctx: RequestContext) -> None:
        # Resolvers run here, on the request path, because they usually read request-scoped state (the session,
        # request.state.user) that is gone once the request is over. They run only for audited requests.
        if ctx.actor is None and self.actor_resolver is not None:
            try:
                ctx.actor = self.actor_resolver(ctx)
            except Exception as exc:
                logger.warning("audit: actor resolver failed: %r", exc)
        if ctx.organization_id is None and self.organization_resolver is not None:
            try:
                ctx.organization_id = self.organization_resolver(ctx)
            except Exception as exc:
                logger.warning("audit: organization resolver failed: %r", exc)

    def record(
        self,
        action: str,
        *,
        actor: Actor,
        organization: str,
        durable: bool = False,
        transaction: Any = None,
        **kwargs: Any,
    ) -> None:
        """Record an event from anywhere (jobs, scripts): like `audit.record()`, with this auditor. `durable=True`
        returns once the event is committed (`DurabilityError` if it can't be); `transaction=` (a psycopg connection,
        a SQLAlchemy Session) writes it in that transaction (see `audit.bind`)."""
        item = PendingEvent(action, actor=actor, organization_id=organization, **kwargs)
        if transaction is not None:
            from .transactional import dbapi_connection

            self.write_in(dbapi_connection(transaction), [item])
        elif durable:
            self.record_durably([item])
        else:
            self.handoff(item)

    # -- enrichment (lazy: loads databases and parsers on first use, in whichever thread asks) ---------------------
    def _load_enrichers(self) -> None:
        with self._enrich_lock:
            if self._enrich_ready:
                return
            geoip = self._geoip_option
            if geoip is not False:
                try:
                    from .enrich.geo import GeoLocator

                    if isinstance(geoip, GeoLocator):
                        self._geo = geoip
                    else:
                        # Kept even when no database is there yet: the locator picks one up when it appears.
                        self._geo = GeoLocator.open(None if geoip in (None, True) else geoip)  # type: ignore[arg-type]
                except Exception as exc:
                    logger.warning("audit: geolocation disabled: %r", exc)
            agents = self._user_agents_option
            if agents is not False:
                try:
                    from .enrich.useragent import UserAgentParser, default_parser

                    self._ua = agents if isinstance(agents, UserAgentParser) else default_parser()
                except Exception as exc:
                    logger.warning("audit: user-agent parsing disabled: %r", exc)
            self._enrich_ready = True

    def locate(self, ip: str | None) -> GeoInfo | None:
        if not self._enrich_ready:
            self._load_enrichers()
        if ip is None or self._geo is None:
            return None
        return self._geo.lookup(ip)

    def parse_user_agent(self, user_agent: str | None) -> UserAgentInfo | None:
        if not self._enrich_ready:
            self._load_enrichers()
        if not user_agent or self._ua is None:
            return None
        info: UserAgentInfo | None = self._ua.parse(user_agent)
        return info

    def _geo_metadata(self, geo: GeoInfo | None) -> Mapping[str, Any]:
        from .enrich.geo import geo_metadata

        return geo_metadata(geo)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything recorded so far; False if `timeout` passed first (the rest stays in the outbox)."""
        if self.audit_log is not None and not self.dispatcher._running:
            return True  # a test's events are in the log as soon as they are handed off
        return self.dispatcher.flush(self.flush_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None, *, keep_sinks_open: bool = False) -> bool:
        """Flush within `timeout`, stop the threads and hand back outbox leases; safe to call twice, and a later
        event starts delivery again. `keep_sinks_open=True` (an app's lifespan shutdown, which may be followed by
        a new startup in tests) leaves the sinks usable."""
        timeout = self.flush_timeout if timeout is None else timeout
        return self.dispatcher.close(timeout, close_sinks=not keep_sinks_open)

    def _at_exit(self) -> None:
        # Scripts and WSGI servers have no shutdown hook: the interpreter's exit is the last chance to flush.
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters: recorded, spooled, spilled, sent, retried, dead_lettered, dropped{reason}, skipped{reason},
        outbox depth, oldest age."""
        with self._skip_lock:
            skipped = dict(self._skipped)
        if self.audit_log is not None and not self.dispatcher._running:
            # A test's Auditor hands its events to the log and has no outbox: reading one would create its file (for
            # an app factory's Auditor(), in the app's folder). In a test nothing is queued, stored or delivered.
            return {**_TEST_STATS, "recorded": self._handed_to_log, "dropped": {}, "sinks": {}, "skipped": skipped}
        return {**self.dispatcher.stats(), "skipped": skipped}
