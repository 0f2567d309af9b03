"""Small builders for the parts every Centure event shares: the actor and `metadata.source`.

`changes()` (the `metadata.changes` JSON string) lives in `catalog.changes` and is re-exported by `catalog`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from ..events import Actor, EventError

if TYPE_CHECKING:
    from ..context import RequestContext

__all__ = ["actor", "actor_metadata", "route_source", "source"]

# "{id}" / "{id:int}" (Starlette, the docs' examples), "[projectId]" (Next.js, the docs' examples), "<int:id>" (Flask).
_PLACEHOLDER: Final = re.compile(r"\{([^}:]+)(?::[^}]*)?\}|\[([^\]]+)\]|<(?:[^>:]+:)?([^>]+)>")


def actor_metadata(
    first_name: str,
    last_name: str,
    email: str,
    impersonator_email: str | None = None,
    impersonator_reason: str | None = None,
) -> dict[str, str]:
    """The actor metadata every Centure event carries. When nobody impersonates, the impersonator fields are empty
    strings (as in Centure's examples) rather than absent, so every event has the same keys to filter on."""
    return {
        "first_name": first_name,
        "last_name": last_name,
        "email": email,
        "impersonator_email": impersonator_email or "",
        "impersonator_reason": impersonator_reason or "",
    }


def actor(
    user_id: str,
    first_name: str,
    last_name: str,
    email: str,
    *,
    impersonator_email: str | None = None,
    impersonator_reason: str | None = None,
    name: str | None = None,
) -> Actor:
    """The `Actor` for a Centure user: type "user", `name` "first last" unless given, and `actor_metadata`.

    Typically called once by the auth layer: ``audit.actor(catalog.actor(user.id, user.first_name, ...))``.
    """
    full_name = name if name is not None else f"{first_name} {last_name}".strip()
    return Actor(
        user_id,
        type="user",
        name=full_name or None,
        metadata=actor_metadata(first_name, last_name, email, impersonator_email, impersonator_reason),
    )


def source(route_template: str, /, **params: object) -> str:
    """`metadata.source`: the dashboard route with concrete ids, e.g.
    ``source("/projects/{project_id}/api-keys/new", project_id="proj_1")`` -> "/projects/proj_1/api-keys/new".

    Placeholders may be written ``{name}``, ``[name]`` or ``<name>``; values are percent-encoded as path segments.
    A fixed token (``source("project_settings")``) comes back unchanged. A placeholder without a value, or a value
    without a placeholder, is a ValueError: both are typos that would put a wrong route in the audit trail.
    """
    return _render(route_template, params, ValueError)


def route_source(route_template: str) -> Callable[[RequestContext], Mapping[str, Any]]:
    """`metadata.source` as an `@audited(..., metadata=...)` argument, filled from the request's path parameters:

    ``@audited(catalog.API_KEY_CREATE, metadata=catalog.route_source("/projects/{project_id}/api-keys/new"))``

    It runs when the event is built (in the dispatcher); a placeholder the route lacks dead-letters the event with
    the reason, instead of recording a route that was never visited.
    """
    names = _placeholders(route_template)

    def resolve(ctx: RequestContext) -> Mapping[str, Any]:
        params = ctx.params()
        return {"source": _render(route_template, {n: params[n] for n in names if n in params}, EventError)}

    return resolve


def _placeholders(template: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in _PLACEHOLDER.finditer(template)]


def _render(template: str, params: Mapping[str, object], error: type[ValueError]) -> str:
    names = _placeholders(template)
    missing = [n for n in names if n not in params]
    if missing:
        raise error(f"source {template!r}: no value for {', '.join(missing)}")
    unused = sorted(set(params) - set(names))
    if unused:
        raise error(f"source {template!r} has no placeholder for {', '.join(unused)}")
    return _PLACEHOLDER.sub(lambda m: quote(str(params[next(g for g in m.groups() if g)]), safe=""), template)
