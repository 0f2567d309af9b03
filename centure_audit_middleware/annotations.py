"""Declaring which endpoints are audited: the `@audited` decorator and `RouteMap`.

`@audited` attaches an `AuditSpec` to the endpoint function and returns the *same* function, so it costs nothing
per call and FastAPI's dependency injection sees the untouched signature. The middleware finds the spec through
the routed endpoint (`scope["endpoint"]`, Flask's view function) when the response completes. Only a spec that
reads the handler's return value (`Target.from_result`) wraps the function, and then with `functools.wraps`.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

from .events import Target

if TYPE_CHECKING:
    from .context import RequestContext

__all__ = ["SPEC_ATTRIBUTE", "AuditSpec", "PathTarget", "ResultTarget", "RouteMap", "TargetSource", "audited"]

SPEC_ATTRIBUTE: Final = "__centure_audit__"

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

    @classmethod
    def build(
        cls,
        action: str,
        targets: Iterable[TargetSource] = (),
        metadata: MetadataSource = None,
        record_failures: bool | None = None,
        version: int | None = None,
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
        return cls(action, sources, metadata, record_failures, version, uses_result)

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


def audited(
    action: str,
    *,
    targets: Iterable[TargetSource] = (),
    metadata: MetadataSource = None,
    record_failures: bool | None = None,
    version: int | None = None,
) -> Callable[[F], F]:
    """Mark an endpoint as producing the audit event `action`.

    Put it directly above the function (below `@app.post(...)`), like any decorator that must see the function
    the framework registers. Works on sync and async endpoints of FastAPI, Starlette and Flask.
    """
    spec = AuditSpec.build(action, targets, metadata, record_failures, version)

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
    ) -> RouteMap:
        spec = AuditSpec.build(action, targets, metadata, record_failures, version)
        if spec.uses_result:
            raise ValueError(
                "Target.from_result needs @audited: a RouteMap entry cannot see the handler's return value"
            )
        self._add_spec(method, template, spec)
        return self

    def _add_spec(self, method: str, template: str, spec: AuditSpec) -> None:
        key = (method.strip().upper(), normalize_template(template.strip()))
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
