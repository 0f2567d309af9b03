"""Declaring which endpoints are audited: the `@audited` decorator and `RouteMap`.

`@audited` attaches an `AuditSpec` to the endpoint function and returns the *same* function, so it costs nothing
per call and FastAPI's dependency injection sees the untouched signature. The middleware finds the spec through
the routed endpoint (`scope["endpoint"]`, Flask's view function) when the response completes. Only a spec that
reads the handler's return value (`Target.from_result`) wraps the function, and then with `functools.wraps`.

Which requests of an endpoint are recorded: a view that serves safe and state-changing methods (the Flask form
pattern, `methods=("GET", "POST")`) renders its form on GET and acts on POST, so by default only the state-changing
requests are recorded; a view that serves only safe methods (an export download) records those. The methods a view
serves are known only per route (one function can sit on several), so the rule is applied when the request
completes, from the matched route's methods: `AuditSpec.records_request()`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias, TypeVar

from .events import Target

if TYPE_CHECKING:
    from .context import RequestContext

__all__ = [
    "HTTP_METHODS",
    "ROUTE_METHODS_KEY",
    "SAFE_METHODS",
    "SPEC_ATTRIBUTE",
    "AuditSpec",
    "PathTarget",
    "ResultTarget",
    "RouteMap",
    "TargetSource",
    "audited",
]

SPEC_ATTRIBUTE: Final = "__centure_audit__"

#: The methods RFC 9110 defines (PATCH: RFC 5789). A name outside this set in `methods=` or a RouteMap key is a typo
#: that would silently never match, so it is refused when the spec is declared.
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
#: RFC 9110 §9.2.1: methods that don't change state. Everything else counts as state-changing.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

#: The WSGI environ key under which a framework adapter notes the methods the matched route serves (the Flask adapter
#: stores `url_rule.methods`). ASGI routers put the route itself in the scope (`scope["route"].methods`).
ROUTE_METHODS_KEY: Final = "centure_audit.route_methods"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class PathTarget:
    """A target whose id is a route path parameter (`Target.from_path`)."""

    type: str
    param: str
    name: str | None = None

    def resolve(self, ctx: RequestContext) -> Target | None:
        params = ctx.params()
        if self.param not in params:
            return None
        name = params.get(self.name) if self.name else None
        return Target(self.type, id=str(params[self.param]), name=None if name is None else str(name))


@dataclass(frozen=True, slots=True)
class ResultTarget:
    """A target read from the handler's return value (`Target.from_result`): attribute or key names, or callables."""

    type: str
    id: Any = "id"
    name: Any = None

    def resolve(self, ctx: RequestContext) -> Target | None:
        if not ctx.has_result:
            return None
        result = _payload(ctx.result)
        target_id = _pick(result, self.id)
        if target_id is None:
            return None
        name = _pick(result, self.name) if self.name is not None else None
        return Target(self.type, id=str(target_id), name=None if name is None else str(name))


def _payload(result: Any) -> Any:
    """What a handler returned, as data: a Flask `(response, status)` tuple's response, and the JSON body of a
    Flask or Starlette JSON response; anything else as it is."""
    if isinstance(result, tuple) and result:
        result = result[0]
    get_json = getattr(result, "get_json", None)  # Flask / werkzeug responses
    if callable(get_json):
        return get_json(silent=True)
    if getattr(result, "media_type", None) == "application/json" and isinstance(getattr(result, "body", None), bytes):
        import json

        return json.loads(result.body)  # Starlette's JSONResponse
    return result


def _pick(obj: Any, how: Any) -> Any:
    if callable(how):
        return how(obj)
    if isinstance(obj, Mapping):
        return obj.get(how)
    return getattr(obj, how, None)


TargetSource: TypeAlias = Target | PathTarget | ResultTarget | Callable[["RequestContext"], Any]
MetadataSource: TypeAlias = Mapping[str, Any] | Callable[["RequestContext"], Mapping[str, Any] | None] | None


@dataclass(frozen=True, slots=True)
class AuditSpec:
    """How one endpoint becomes an audit event."""

    action: str
    targets: tuple[TargetSource, ...] = ()
    metadata: MetadataSource = None
    #: record responses >= 400 too (None: the Auditor's policy)
    record_failures: bool | None = None
    version: int | None = None
    uses_result: bool = field(default=False, compare=False)
    #: the request methods recorded; None: the default rule (see `records`)
    methods: frozenset[str] | None = None
    #: hold the response until the event is committed (durable-before-response)
    durable: bool = False
    #: Whether any durable spec exists in this process. Until one does, the middlewares' response-start path costs
    #: one attribute read; after, they resolve the spec when a response starts, to hold it if the spec is durable.
    any_durable: ClassVar[bool] = False

    @classmethod
    def build(
        cls,
        action: str,
        targets: Iterable[TargetSource] = (),
        metadata: MetadataSource = None,
        record_failures: bool | None = None,
        version: int | None = None,
        methods: Iterable[str] | None = None,
        durable: bool = False,
    ) -> AuditSpec:
        if not isinstance(action, str) or not action.strip():
            raise ValueError(f"an audit action must be a non-empty string, got {action!r}")
        sources = tuple(targets)
        for source in sources:
            if not isinstance(source, Target | PathTarget | ResultTarget) and not callable(source):
                raise TypeError(f"targets must be Target, Target.from_path/from_result or callables, got {source!r}")
        if metadata is not None and not isinstance(metadata, Mapping) and not callable(metadata):
            raise TypeError(f"metadata must be a mapping or a callable, got {type(metadata).__name__}")
        uses_result = any(isinstance(s, ResultTarget) for s in sources)
        spec = cls(
            action,
            sources,
            metadata,
            record_failures,
            version,
            uses_result,
            None if methods is None else _methods(methods),
            bool(durable),
        )
        if durable:
            AuditSpec.any_durable = True  # from now on the middlewares look for durable specs when a response starts
        return spec

    def records(self, method: str, route_methods: Collection[str] | None = None) -> bool:
        """Whether a request with this method is recorded, on a route that serves `route_methods` (None: unknown).

        With `methods=` given, exactly those. Otherwise every state-changing method, and a safe one (GET, HEAD,
        OPTIONS, TRACE) only where the route serves nothing but safe methods: on a form view (GET and POST) the GET
        only shows the form. Where the route's methods are unknown (a raw app, a class endpoint's handler, which
        serves its one method) the request is recorded, as a declared spec asks.
        """
        if self.methods is not None:
            return method in self.methods
        return method not in SAFE_METHODS or route_methods is None or SAFE_METHODS.issuperset(route_methods)

    def records_request(self, ctx: RequestContext) -> bool:
        """`records()` for the request being completed. Called by `Auditor.complete` on every audited request: the
        common cases cost a dict read and one set lookup; the route's methods are read only for a safe method under
        the default rule."""
        scope = ctx.scope
        method = scope.get("method", "GET") if scope is not None else ctx.method
        if self.methods is not None:
            return method in self.methods
        if method not in SAFE_METHODS:
            return True
        served = _route_methods(ctx)
        return served is None or SAFE_METHODS.issuperset(served)

    def resolve_targets(self, ctx: RequestContext) -> list[Target]:
        """The declared targets, in declaration order; unresolvable ones (missing path param, ...) are skipped."""
        out: list[Target] = []
        for source in self.targets:
            if isinstance(source, Target):
                out.append(source)
                continue
            resolved = source.resolve(ctx) if isinstance(source, PathTarget | ResultTarget) else source(ctx)
            if resolved is None:
                continue
            if isinstance(resolved, Target):
                out.append(resolved)
            else:
                out.extend(resolved)
        return out

    def resolve_metadata(self, ctx: RequestContext) -> Mapping[str, Any] | None:
        if self.metadata is None or isinstance(self.metadata, Mapping):
            return self.metadata
        return self.metadata(ctx)


def _methods(methods: Iterable[str]) -> frozenset[str]:
    if isinstance(methods, str | bytes):  # "POST" would iterate as "P", "O", ...: Flask refuses it the same way
        raise TypeError(f"methods takes a list of method names, like methods=[{methods!r}]")
    names = frozenset(_method(m) for m in methods)
    if not names:
        raise ValueError("methods=[] would never record: leave the endpoint undecorated instead")
    return names


def _method(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"an HTTP method name is a string, not {name!r}")
    upper = name.strip().upper()
    if upper not in HTTP_METHODS:
        raise ValueError(f"unknown HTTP method {name!r} (known: {', '.join(sorted(HTTP_METHODS))})")
    return upper


def _route_methods(ctx: RequestContext) -> Collection[str] | None:
    """The methods the matched route serves, where the framework says: Starlette's and FastAPI's `route.methods`
    (None for a class endpoint), the Flask adapter's note of `url_rule.methods`; None when unknown."""
    if ctx.scope is not None:
        route = ctx.scope.get("route")
        # A route an outer router left in the scope (one that didn't answer) says nothing about this endpoint.
        if route is None or getattr(route, "endpoint", None) is not ctx.scope.get("endpoint"):
            return None
        served = getattr(route, "methods", None)
    else:
        served = (ctx.environ or {}).get(ROUTE_METHODS_KEY)
    return served if isinstance(served, Collection) and not isinstance(served, str) else None


def audited(
    action: str,
    *,
    targets: Iterable[TargetSource] = (),
    metadata: MetadataSource = None,
    record_failures: bool | None = None,
    version: int | None = None,
    methods: Iterable[str] | None = None,
    durable: bool = False,
) -> Callable[[F], F]:
    """Mark an endpoint as producing the audit event `action`.

    Put it directly above the function (below `@app.post(...)`), like any decorator that must see the function
    the framework registers. Works on sync and async endpoints of FastAPI, Starlette and Flask.

    `methods`: the request methods to record. By default a view that serves both safe and state-changing methods
    (a form view: GET shows the form, POST acts) records only the state-changing requests, and a view that serves
    only safe methods records those.

    `durable=True`: the response waits until the event is committed to the outbox (see the README's
    "Durable-before-response actions"); if it can't be, the Auditor's `durable_failure` policy applies.
    """
    spec = AuditSpec.build(action, targets, metadata, record_failures, version, methods, durable)

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@audited decorates endpoint functions, not {type(func).__name__}")
        if not spec.uses_result:
            setattr(func, SPEC_ATTRIBUTE, spec)
            return func
        wrapper = _capture_result(func)
        setattr(wrapper, SPEC_ATTRIBUTE, spec)
        return wrapper  # type: ignore[return-value]

    return decorate


def _capture_result(func: Callable[..., Any]) -> Callable[..., Any]:
    from .context import current_request

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await func(*args, **kwargs)
            ctx = current_request()
            if ctx is not None:
                ctx.result = result
            return result

        return async_wrapper

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        ctx = current_request()
        if ctx is not None:
            ctx.result = result
        return result

    return sync_wrapper


def spec_of(endpoint: Any, method: str) -> AuditSpec | None:
    """The spec attached to a routed endpoint; class-based endpoints are looked up by HTTP method."""
    spec = getattr(endpoint, SPEC_ATTRIBUTE, None)
    if spec is None and isinstance(endpoint, type):
        spec = getattr(getattr(endpoint, method.lower(), None), SPEC_ATTRIBUTE, None)
    return spec if isinstance(spec, AuditSpec) else None


# "{id:int}" (Starlette) and "<int:id>" (Flask) both become "{id}", so one map serves both frameworks.
_TEMPLATE_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}|<(?:[^>:]+:)?([^>]+)>")


@functools.lru_cache(maxsize=1024)
def normalize_template(template: str) -> str:
    """A route template in one canonical form: `{name}` placeholders, no converters."""
    return _TEMPLATE_PARAM.sub(lambda m: "{" + (m.group(1) or m.group(2)) + "}", template)


class RouteMap:
    """Audit specs for endpoints you can't decorate, keyed by HTTP method and route template.

    The key's method is what the entry records: "GET /reports/{id}/export" records that GET even on a route that
    also serves POST (a spec given as a value records the key's method, and must not exclude it).

    >>> routes = RouteMap({"POST /projects/{project_id}/api-keys": "api_key.create"})
    >>> routes.add("DELETE", "/projects/<id>", "project.delete", targets=[Target.from_path("project", "id")])
    """

    def __init__(self, entries: Mapping[str, str | AuditSpec] | None = None) -> None:
        self._specs: dict[tuple[str, str], AuditSpec] = {}
        for key, value in (entries or {}).items():
            method, _, template = key.strip().partition(" ")
            if not template:
                raise ValueError(f"RouteMap keys look like 'POST /path/{{param}}', got {key!r}")
            if isinstance(value, AuditSpec):
                self._add_spec(method, template, value)
            else:
                self.add(method, template, value)

    def add(
        self,
        method: str,
        template: str,
        action: str,
        *,
        targets: Iterable[TargetSource] = (),
        metadata: MetadataSource = None,
        record_failures: bool | None = None,
        version: int | None = None,
        durable: bool = False,
    ) -> RouteMap:
        spec = AuditSpec.build(action, targets, metadata, record_failures, version, durable=durable)
        if spec.uses_result:
            raise ValueError(
                "Target.from_result needs @audited: a RouteMap entry cannot see the handler's return value"
            )
        self._add_spec(method, template, spec)
        return self

    def _add_spec(self, method: str, template: str, spec: AuditSpec) -> None:
        name = _method(method)
        if spec.methods is None:
            spec = dataclasses.replace(spec, methods=frozenset({name}))
        elif name not in spec.methods:
            raise ValueError(f"RouteMap entry {name} {template}: its spec records only {sorted(spec.methods)}")
        key = (name, normalize_template(template.strip()))
        if key in self._specs:
            raise ValueError(f"RouteMap already has an entry for {key[0]} {key[1]}")
        self._specs[key] = spec

    def lookup(self, method: str, template: str | None) -> AuditSpec | None:
        if template is None or not self._specs:
            return None
        return self._specs.get((method, normalize_template(template)))

    def __len__(self) -> int:
        return len(self._specs)

    def __bool__(self) -> bool:
        return bool(self._specs)
