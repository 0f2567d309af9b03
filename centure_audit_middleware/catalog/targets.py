"""Builders for the targets Centure's events carry, with the metadata its docs show.

One builder per target type, filling every metadata key that type carries in *any* Centure event (an `api_key`
repeats its name in `metadata.name` so WorkOS can search it, and so on). Some actions show fewer keys for the same
type (`project.create`'s project has only `organization_id`); the event builders in `catalog.events` trim each
target to its action's documented keys, so pass what you know and let them shape it.

Optional keyword arguments left as None are left out; the validator reports a missing key the action requires.
"""

from __future__ import annotations

from typing import Any

from ..events import Target

__all__ = [
    "api_key",
    "directory_sync",
    "external_app",
    "mcp_proxy",
    "organization",
    "organization_membership",
    "project",
    "sso_connection",
    "user",
]


def _target(type: str, id: str, name: str | None, /, **metadata: Any) -> Target:
    return Target(type, id=id, name=name, metadata={k: v for k, v in metadata.items() if v is not None})


def api_key(id: str, name: str, *, project_id: str, organization_id: str, environment: str = "production") -> Target:
    """An API key; Centure documents `environment` as always "production"."""
    return _target(
        "api_key", id, name, name=name, environment=environment, project_id=project_id, organization_id=organization_id
    )


def project(
    id: str,
    name: str | None = None,
    *,
    organization_id: str | None = None,
    old_name: str | None = None,
    new_name: str | None = None,
) -> Target:
    """A project. For `project.update_name`, `name` is the name after the rename and `old_name`/`new_name` say both."""
    return _target(
        "project", id, name, name=name, organization_id=organization_id, old_name=old_name, new_name=new_name
    )


def organization(
    id: str, name: str | None = None, *, old_name: str | None = None, new_name: str | None = None
) -> Target:
    """An organization (the portal-access events and `sso.view_settings` repeat its name in metadata)."""
    return _target("organization", id, name, name=name, old_name=old_name, new_name=new_name)


def organization_membership(id: str, name: str, *, organization_id: str, role_slug: str) -> Target:
    """A member's organization membership: `name` is the member's display name, `role_slug` their org role."""
    return _target("organization_membership", id, name, organization_id=organization_id, role_slug=role_slug)


def user(id: str, *, first_name: str, last_name: str, email: str, name: str | None = None) -> Target:
    """A user as a target (the member added, the account whose settings were opened); `name` defaults to
    "first last"."""
    full_name = name if name is not None else f"{first_name} {last_name}".strip()
    return _target("user", id, full_name, first_name=first_name, last_name=last_name, email=email)


def mcp_proxy(id: str, name: str | None = None, *, project_id: str, organization_id: str) -> Target:
    """An MCP proxy."""
    return _target("mcp_proxy", id, name, project_id=project_id, organization_id=organization_id)


def external_app(id: str, name: str, *, client_id: str, display_name: str | None = None) -> Target:
    """A third-party app in the OAuth login flow; `display_name` defaults to `name`."""
    return _target(
        "external_app", id, name, display_name=display_name if display_name is not None else name, client_id=client_id
    )


def directory_sync(
    id: str, name: str, *, directory_type: str, organization_id: str, directory_id: str | None = None
) -> Target:
    """A directory sync connection; `directory_id` defaults to `id`."""
    return _target(
        "directory_sync",
        id,
        name,
        directory_id=directory_id if directory_id is not None else id,
        directory_type=directory_type,
        organization_id=organization_id,
    )


def sso_connection(id: str, name: str | None = None, *, connection_type: str, organization_id: str) -> Target:
    """An SSO connection (`connection_type`: GoogleSAML, OktaSAML, AzureSAML, GenericSAML, GenericOIDC, ...)."""
    return _target("sso_connection", id, name, connection_type=connection_type, organization_id=organization_id)
