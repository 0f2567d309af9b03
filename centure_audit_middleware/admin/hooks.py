"""The app's hooks that say who is asking, and the deny-by-default reading of their answers.

`is_admin(request)` and `organization(request)` are required: without either, every admin route answers 403. A hook
that raises, an `is_admin` that returns anything but `True`, or an organization that is not a non-empty string also
mean 403. The hooks get the framework's own request object (Starlette `Request`, Flask `request`); the Starlette
router awaits them when they are coroutine functions.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events import Actor
from .wire import Identity

__all__ = ["HOOK_NAMES", "AdminHooks", "identity_from", "resolve", "resolve_async"]

logger = logging.getLogger("centure_audit_middleware.admin")

Hook = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class AdminHooks:
    """`is_admin` -> bool, `organization` -> the organization id; optional: `actor` -> `Actor` (who opens the portal,
    when the audit middleware doesn't know), `organization_name` -> str, `session` -> the app's session id (binds
    CSRF tokens to one login)."""

    is_admin: Hook | None
    organization: Hook | None
    actor: Hook | None = None
    organization_name: Hook | None = None
    session: Hook | None = None

    def __post_init__(self) -> None:
        if self.is_admin is None or self.organization is None:
            logger.warning("audit logs page: is_admin and organization hooks are required; every request is refused")

    @property
    def configured(self) -> bool:
        return self.is_admin is not None and self.organization is not None


def _failed(name: str, exc: BaseException) -> None:
    logger.error("audit logs page: the %s hook failed (%s); request refused", name, type(exc).__name__)


HOOK_NAMES = ("is_admin", "organization", "actor", "organization_name", "session")


def identity_from(
    is_admin: object = None,
    organization: object = None,
    actor: object = None,
    organization_name: object = None,
    session: object = None,
) -> Identity | None:
    """The `Identity` the hooks' answers describe, or None (refuse)."""
    if is_admin is not True or not isinstance(organization, str) or not organization.strip():
        return None
    return Identity(
        organization_id=organization,
        organization_name=organization_name if isinstance(organization_name, str) and organization_name else None,
        actor=actor if isinstance(actor, Actor) else None,
        session=session if isinstance(session, str) else "",
    )


def resolve(hooks: AdminHooks, request: Any) -> Identity | None:
    """Call the hooks on `request`; None unless they describe an admin of an organization."""
    if not hooks.configured:
        return None
    answers: dict[str, object] = {}
    for name in HOOK_NAMES:
        hook = getattr(hooks, name)
        if hook is None:
            continue
        try:
            answers[name] = hook(request)
        except Exception as exc:
            _failed(name, exc)
            return None
        if name == "is_admin" and answers[name] is not True:
            return None  # a non-admin: ask nothing more
    return identity_from(**answers)


async def resolve_async(hooks: AdminHooks, request: Any) -> Identity | None:
    """Like `resolve`, awaiting the hooks that return awaitables (async def hooks)."""
    if not hooks.configured:
        return None
    answers: dict[str, object] = {}
    for name in HOOK_NAMES:
        hook = getattr(hooks, name)
        if hook is None:
            continue
        try:
            value = hook(request)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            _failed(name, exc)
            return None
        answers[name] = value
        if name == "is_admin" and value is not True:
            return None
    return identity_from(**answers)
