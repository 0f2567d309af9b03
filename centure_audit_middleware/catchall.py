"""`RecordAll`: the opt-in catch-all that records every API request no annotation claims.

Decorating every route is how an app says *what* each action means; the catch-all is how it keeps the promise that
*all* API activity is on record, including the routes nobody annotated. A request is the catch-all's when, in order:

1. no `@audited` endpoint or `RouteMap` entry claims it (an annotated endpoint is its annotation's alone, even for
   the methods or statuses its annotation chooses not to record), and the app did not call `audit.skip()`;
2. its method is one the catch-all records (every method but OPTIONS by default: CORS preflights carry no
   credentials, so they are no one's action);
3. its path is under one of `prefixes`, or the actor the auth layer set (or the Auditor's actor resolver gave) has
   a type in `actor_types`, such as `"api_key"`;
4. no `exclude` entry matches it.

It then becomes an ordinary event: `action` (default `api.request`, or a callable of the request), the `endpoint`
target, and metadata saying what happened (`http_method`, `http_status`, the route template as `http_route` with each
path parameter as `path_<name>`, or, when no route matched, the raw path as `http_path`; never the query string).
The rules for everything else are the usual ones: no actor means `skipped{no_actor}` unless `anonymous_actor=` is
set; failures are recorded unless `record_failures=False` (a refused API call is API activity too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from .annotations import HTTP_METHODS, AuditSpec, ResultTarget, TargetSource, _method, normalize_template
from .events import Target

if TYPE_CHECKING:
    from .context import RequestContext

__all__ = ["DEFAULT_ACTION", "ENDPOINT_TARGET_TYPE", "ActionSource", "RecordAll", "endpoint_target"]

logger = logging.getLogger("centure_audit_middleware")

#: The action of a catch-all event unless `RecordAll(action=...)` says otherwise.
DEFAULT_ACTION: Final = "api.request"
#: The type of the catch-all's default target (a WorkOS schema needs at least one target type per action).
ENDPOINT_TARGET_TYPE: Final = "endpoint"

ActionSource: TypeAlias = str | Callable[["RequestContext"], str | None]

# Past this many distinct actions (a callable that makes one per path, say), specs are built per request rather than
# kept: a hostile client must not grow the cache for ever.
_MAX_CACHED_SPECS: Final = 256


def endpoint_target(ctx: RequestContext) -> Target:
    """The catch-all's default target: the endpoint called, as "METHOD /route/{template}" (the raw path when no route
    matched), so that WorkOS can filter one endpoint's calls and a schema for the action has a target type."""
    return Target(ENDPOINT_TARGET_TYPE, id=f"{ctx.method} {ctx.route_template() or ctx.path}")


def request_metadata(ctx: RequestContext) -> dict[str, Any]:
    """What the catch-all says about the request: method, status, route template and its path parameters, or the raw
    path when no route matched (ASGI's `path` and WSGI's `PATH_INFO` never hold the query string)."""
    metadata: dict[str, Any] = {"http_method": ctx.method, "http_status": ctx.status}
    route = ctx.route_template()
    if route is None:
        metadata["http_path"] = ctx.path
        return metadata
    metadata["http_route"] = route
    # One key per parameter rather than one nested value: WorkOS can filter on them, and a parameter whose name says
    # it is a secret (`/invites/{token}`) is redacted like any other metadata key.
    for name, value in ctx.params().items():
        metadata[f"path_{name}"] = value if isinstance(value, str | int | float | bool) else str(value)
    return metadata


class RecordAll:
    """`Auditor(record_all=RecordAll(prefixes=["/api/"]))`: record every request under those path prefixes (or whose
    actor has one of `actor_types`) that no annotation claims. See the module's docstring for the rules.

    - `prefixes`: path prefixes, matched at a segment boundary ("/api" covers "/api" and "/api/...", not "/apiary");
      "/" covers every path.
    - `actor_types`: actor types (`Actor.type`, e.g. "api_key") whose requests are recorded wherever they go.
    - `action`: the event's action, or a callable of the request returning it (None: don't record this request).
    - `exclude`: entries "/path/prefix" or "METHOD /path/prefix", matched against the request's path and its route
      template (Flask's `<int:id>` and Starlette's `{id:int}` forms both read as `{id}`).
    - `methods`: the methods recorded (default: every method but OPTIONS).
    - `record_failures`: record responses >= 400 too (default True).
    - `targets`: as for `@audited` (default: `endpoint_target`).
    """

    __slots__ = (
        "_action",
        "_below",
        "_exact",
        "_exclude",
        "_fixed",
        "_methods",
        "_specs",
        "actor_types",
        "prefixes",
        "record_failures",
        "targets",
    )

    def __init__(
        self,
        prefixes: Iterable[str] = (),
        *,
        actor_types: Iterable[str] = (),
        action: ActionSource = DEFAULT_ACTION,
        exclude: Iterable[str] = (),
        methods: Iterable[str] | None = None,
        record_failures: bool = True,
        targets: Iterable[TargetSource] = (endpoint_target,),
    ) -> None:
        self.prefixes = tuple(_prefix(p, "prefixes") for p in _strings(prefixes, "prefixes"))
        # `_under` for every prefix at once, in two C-level calls: this runs for every request the app serves.
        self._exact = frozenset(self.prefixes)
        self._below = tuple(prefix + "/" for prefix in self.prefixes)
        self.actor_types = frozenset(_strings(actor_types, "actor_types"))
        if not self.prefixes and not self.actor_types:
            raise ValueError("RecordAll needs prefixes=[...] (e.g. '/api/') or actor_types=[...] (e.g. 'api_key')")
        if not callable(action) and (not isinstance(action, str) or not action.strip()):
            raise ValueError(f"action must be a non-empty string or a callable of the request, got {action!r}")
        self._action = action
        self._exclude = tuple(_exclusion(entry) for entry in _strings(exclude, "exclude"))
        if methods is None:
            self._methods = HTTP_METHODS - {"OPTIONS"}
        else:
            self._methods = frozenset(_method(m) for m in _strings(methods, "methods"))
            if not self._methods:
                raise ValueError("methods=[] would never record: leave record_all unset instead")
        self.record_failures = record_failures
        self.targets = tuple(targets)
        if any(isinstance(t, ResultTarget) for t in self.targets):
            raise ValueError("Target.from_result needs @audited: the catch-all cannot see a handler's return value")
        self._specs: dict[str, AuditSpec] = {}
        # Declared once, up front: a bad target source is a configuration error, not a per-request log line.
        self._fixed = self._spec(action) if isinstance(action, str) else None
        if self._fixed is None:
            AuditSpec.build(DEFAULT_ACTION, self.targets)

    @property
    def methods(self) -> frozenset[str]:
        return self._methods

    @property
    def exclude(self) -> tuple[str, ...]:
        return tuple(f"{m} {p}" if m else p for m, p in self._exclude)

    def claim(self, ctx: RequestContext, identify: Callable[[RequestContext], None] | None = None) -> AuditSpec | None:
        """The spec that records `ctx`, or None when the catch-all leaves it alone. Called by `Auditor.complete`
        for a request no annotation claimed; `identify` runs the Auditor's resolvers, needed only to match
        `actor_types` for a request outside the prefixes."""
        scope = ctx.scope
        if scope is not None:  # the ASGI scope read directly: RequestContext's properties cost a call each
            method, path = scope.get("method", "GET"), scope.get("path", "")
        else:
            method, path = ctx.method, ctx.path
        if method not in self._methods:
            return None
        if path not in self._exact and not path.startswith(self._below):
            if not self.actor_types:
                return None
            if identify is not None:
                identify(ctx)
            actor = ctx.actor
            if actor is None or actor.type not in self.actor_types:
                return None
        if self._exclude and self._excluded(method, path, ctx):
            return None
        if self._fixed is not None:
            return self._fixed
        action = self._action
        assert callable(action)  # for mypy: a string action made `_fixed`
        try:
            chosen = action(ctx)
        except Exception as exc:  # an event with the default action beats a lost one
            logger.warning("audit: RecordAll action callable failed, recording %s: %r", DEFAULT_ACTION, exc)
            chosen = DEFAULT_ACTION
        if chosen is None:
            return None
        if not isinstance(chosen, str) or not chosen.strip():
            logger.warning("audit: RecordAll action callable returned %r, recording %s", chosen, DEFAULT_ACTION)
            chosen = DEFAULT_ACTION
        return self._spec(chosen)

    def _excluded(self, method: str, path: str, ctx: RequestContext) -> bool:
        template: str | None = None
        for only, prefix in self._exclude:
            if only is not None and only != method:
                continue
            if _under(path, prefix):
                return True
            if template is None:
                route = ctx.route_template()
                template = "" if route is None else normalize_template(route)
            if template and _under(template, prefix):
                return True
        return False

    def _spec(self, action: str) -> AuditSpec:
        spec = self._specs.get(action)
        if spec is None:
            spec = AuditSpec.build(
                action,
                self.targets,
                request_metadata,
                record_failures=self.record_failures,
                methods=self._methods,
            )
            if len(self._specs) < _MAX_CACHED_SPECS:
                self._specs[action] = spec
        return spec

    def __repr__(self) -> str:
        action = self._action if isinstance(self._action, str) else getattr(self._action, "__name__", "callable")
        return (
            f"RecordAll(prefixes={list(self.prefixes)!r}, actor_types={sorted(self.actor_types)!r}, "
            f"action={action!r}, exclude={list(self.exclude)!r})"
        )


def _strings(values: Iterable[str], option: str) -> list[str]:
    if isinstance(values, str | bytes | Mapping):
        # "/api/" would iterate as "/", "a", ...: the classic mistake, refused the way Flask refuses methods="POST".
        raise TypeError(f"{option} takes a list of strings, like {option}=[{values!r}]")
    out = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise TypeError(f"{option}: expected non-empty strings, got {value!r}")
        out.append(value.strip())
    return out


def _prefix(value: str, option: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{option}: a path prefix starts with '/', got {value!r}")
    return normalize_template(value).rstrip("/")  # "/api/" and "/api" mean the same: see _under


def _exclusion(entry: str) -> tuple[str | None, str]:
    method, _, rest = entry.partition(" ")
    if rest:
        return _method(method), _prefix(rest.strip(), "exclude")
    return None, _prefix(entry, "exclude")


def _under(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or below it (`prefix` without its trailing slash; "" is the root)."""
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")
