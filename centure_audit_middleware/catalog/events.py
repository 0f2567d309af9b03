"""One typed call per Centure action: `events.api_key_create(api_key=..., project=..., source=...)`.

Each builder returns a `CatalogEvent` shaped exactly as the catalog documents the action: targets in the documented
order are trimmed to their documented metadata keys (closed targets only; see `catalog.targets` for why), optional
metadata left as None is left out, `changes` may be given as (from, to) pairs, and a value whose documented
overflow is "truncate" is cut to its limit. Then, in a route decorated with the same action::

    @audited(catalog.API_KEY_CREATE)
    async def create_key(...):
        catalog.events.api_key_create(api_key=..., project=..., source=...).annotate()

or anywhere in (or, with actor and organization, outside) a request: ``catalog.events.sso_view_settings(...).record()``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..context import audit
from ..events import MAX_METADATA_VALUE_LENGTH, Actor, MetadataValue, Target, truncate
from . import actions as A
from .actions import Action
from .changes import changes as encode_pairs
from .changes import encode_changes, text_length
from .model import ActionSpec, Catalog, TargetSpec, default_catalog

__all__ = [
    "CatalogEvent",
    "analytics_view",
    "api_key_create",
    "audit_logs_create_management_portal_url",
    "directory_sync_create_management_portal_url",
    "directory_sync_delete",
    "event",
    "external_app_login_approve",
    "external_app_login_view",
    "log_streams_create_management_portal_url",
    "mcp_proxy_create",
    "mcp_proxy_delete",
    "mcp_proxy_revoke",
    "mcp_proxy_update",
    "mcp_proxy_update_status",
    "mcp_proxy_view_details",
    "organization_create",
    "organization_update_name",
    "portal_link",
    "project_create",
    "project_membership_create",
    "project_membership_update",
    "project_update_name",
    "sso_create_management_portal_url",
    "sso_delete_connection",
    "sso_view_settings",
    "user_view_settings",
]

Extra = Mapping[str, Any] | None
Changes = str | Mapping[str, tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    """An action with its targets and metadata, ready to attach to the current request or to record."""

    action: str
    targets: tuple[Target, ...] = ()
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)

    def annotate(self) -> None:
        """Add the targets and metadata to the current request's event (the route is `@audited(self.action)`)."""
        if self.targets:
            audit.target(*self.targets)
        audit.metadata(self.metadata)

    def record(
        self, *, actor: Actor | None = None, organization: str | None = None, occurred_at: dt.datetime | None = None
    ) -> None:
        """Record it as its own event (`audit.record`): inside a request it inherits actor, organization and
        context; outside one it needs `actor` and `organization`."""
        audit.record(
            self.action,
            actor=actor,
            organization=organization,
            targets=self.targets,
            metadata=self.metadata,
            occurred_at=occurred_at,
        )


def event(
    action: str, targets: Iterable[Target] = (), metadata: Extra = None, *, catalog: Catalog | None = None
) -> CatalogEvent:
    """Any catalog action (your own registered ones too), shaped by its spec; an action the catalog doesn't know
    is passed through as given."""
    spec = (catalog if catalog is not None else default_catalog()).get(action)
    given = tuple(targets)
    values = {k: v for k, v in (metadata or {}).items() if v is not None}
    if spec is None:
        return CatalogEvent(action, given, values)
    return CatalogEvent(action, _shape_targets(spec, given), _shape_metadata(spec, values))


def _shape_targets(spec: ActionSpec, targets: tuple[Target, ...]) -> tuple[Target, ...]:
    unused = list(spec.targets)
    out: list[Target] = []
    for target in targets:
        match = next((t for t in unused if t.type == target.type), None)
        if match is None:
            out.append(target)  # not documented: left for the validator to report
            continue
        unused.remove(match)
        out.append(_shape_target(match, target))
    return tuple(out)


def _shape_target(spec: TargetSpec, target: Target) -> Target:
    if spec.open:
        return target
    documented = {f.name: target.metadata[f.name] for f in spec.metadata if target.metadata.get(f.name) is not None}
    return dataclasses.replace(target, name=target.name if spec.named else None, metadata=documented)


def _shape_metadata(spec: ActionSpec, metadata: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(metadata)
    for item in spec.metadata:
        value = out.get(item.name)
        limit = item.limit or MAX_METADATA_VALUE_LENGTH
        if item.name == "changes" and isinstance(value, Mapping):
            out[item.name] = encode_pairs(value, limit=limit)
        elif isinstance(value, str) and item.overflow == "truncate" and text_length(value) > limit:
            out[item.name] = _shorten(item.name, value, limit)
    return out


def _shorten(name: str, value: str, limit: int) -> str:
    if name == "changes":
        # A too-long changes string built by hand: re-encode it so it stays valid JSON, if it is JSON at all.
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and all(isinstance(v, dict) for v in decoded.values()):
            return encode_changes(decoded, limit=limit)
    return truncate(value, limit)


def _build(action: Action, targets: Iterable[Target], extra: Extra, **metadata: Any) -> CatalogEvent:
    return event(action, targets, {**metadata, **(extra or {})})


# -- API keys ----------------------------------------------------------------------------------------------------
def api_key_create(
    *,
    api_key: Target,
    project: Target,
    source: str,
    expiration_date: str | None = None,
    ip_addresses: str | None = None,
    extra: Extra = None,
) -> CatalogEvent:
    """`api_key.create`: targets api_key, project. `expiration_date` ISO 8601 (None: never expires);
    `ip_addresses` comma-separated IPs/CIDRs (None: unrestricted)."""
    return _build(
        A.API_KEY_CREATE,
        [api_key, project],
        extra,
        source=source,
        expiration_date=expiration_date,
        ip_addresses=ip_addresses,
    )


# -- Projects ----------------------------------------------------------------------------------------------------
def project_create(*, project: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`project.create`: target project (with `organization_id`)."""
    return _build(A.PROJECT_CREATE, [project], extra, source=source)


def project_update_name(*, project: Target, source: str = "project_settings", extra: Extra = None) -> CatalogEvent:
    """`project.update_name`: target project with `old_name`/`new_name`; `source` is the token "project_settings"."""
    return _build(A.PROJECT_UPDATE_NAME, [project], extra, source=source)


# -- Project memberships -----------------------------------------------------------------------------------------
def project_membership_create(
    *, project: Target, organization_membership: Target, user: Target, source: str, role: str, extra: Extra = None
) -> CatalogEvent:
    """`project_membership.create`: targets project, organization_membership, user; `role` owner/editor/viewer."""
    return _build(
        A.PROJECT_MEMBERSHIP_CREATE, [project, organization_membership, user], extra, source=source, role=role
    )


def project_membership_update(
    *, project: Target, organization_membership: Target, user: Target, source: str, role: str, extra: Extra = None
) -> CatalogEvent:
    """`project_membership.update` (shape inferred from project_membership.create): `role` is the new role."""
    return _build(
        A.PROJECT_MEMBERSHIP_UPDATE, [project, organization_membership, user], extra, source=source, role=role
    )


# -- Organizations -----------------------------------------------------------------------------------------------
def organization_create(*, organization: Target, source: str = "/onboarding", extra: Extra = None) -> CatalogEvent:
    """`organization.create`: target organization (no metadata)."""
    return _build(A.ORGANIZATION_CREATE, [organization], extra, source=source)


def organization_update_name(
    *, organization: Target, source: str = "organization_settings", extra: Extra = None
) -> CatalogEvent:
    """`organization.update_name`: target organization with `old_name`/`new_name`."""
    return _build(A.ORGANIZATION_UPDATE_NAME, [organization], extra, source=source)


# -- MCP proxies -------------------------------------------------------------------------------------------------
def mcp_proxy_create(*, mcp_proxy: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`mcp_proxy.create`: target mcp_proxy."""
    return _build(A.MCP_PROXY_CREATE, [mcp_proxy], extra, source=source)


def mcp_proxy_update(
    *, mcp_proxy: Target, project: Target, source: str, changes: Changes, extra: Extra = None
) -> CatalogEvent:
    """`mcp_proxy.update`: targets mcp_proxy, project; `changes` as `catalog.changes(...)` or (from, to) pairs."""
    return _build(A.MCP_PROXY_UPDATE, [mcp_proxy, project], extra, source=source, changes=changes)


def mcp_proxy_update_status(
    *, mcp_proxy: Target, project: Target, source: str, previous_status: str, new_status: str, extra: Extra = None
) -> CatalogEvent:
    """`mcp_proxy.update_status`: between "active" and "paused" (to "revoked" is `mcp_proxy_revoke`)."""
    return _build(
        A.MCP_PROXY_UPDATE_STATUS,
        [mcp_proxy, project],
        extra,
        source=source,
        previous_status=previous_status,
        new_status=new_status,
    )


def mcp_proxy_revoke(*, mcp_proxy: Target, project: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`mcp_proxy.revoke`: targets mcp_proxy, project."""
    return _build(A.MCP_PROXY_REVOKE, [mcp_proxy, project], extra, source=source)


def mcp_proxy_delete(*, mcp_proxy: Target, project: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`mcp_proxy.delete`: targets mcp_proxy, project."""
    return _build(A.MCP_PROXY_DELETE, [mcp_proxy, project], extra, source=source)


def mcp_proxy_view_details(*, mcp_proxy: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`mcp_proxy.view_details`: target mcp_proxy."""
    return _build(A.MCP_PROXY_VIEW_DETAILS, [mcp_proxy], extra, source=source)


# -- External apps -----------------------------------------------------------------------------------------------
def external_app_login_view(
    *,
    external_app: Target,
    mcp_proxy: Target,
    project: Target,
    user_has_access_to_proxy: bool,
    source: str = "/external-apps/login",
    extra: Extra = None,
) -> CatalogEvent:
    """`external_app.login_view`: targets external_app, mcp_proxy, project (the last two without names)."""
    return _build(
        A.EXTERNAL_APP_LOGIN_VIEW,
        [external_app, mcp_proxy, project],
        extra,
        source=source,
        user_has_access_to_proxy=user_has_access_to_proxy,
    )


def external_app_login_approve(
    *,
    external_app: Target,
    mcp_proxy: Target,
    project: Target,
    source: str = "/external-apps/login",
    extra: Extra = None,
) -> CatalogEvent:
    """`external_app.login_approve`: the same targets as `external_app.login_view`."""
    return _build(A.EXTERNAL_APP_LOGIN_APPROVE, [external_app, mcp_proxy, project], extra, source=source)


# -- SSO and directory sync --------------------------------------------------------------------------------------
def sso_view_settings(*, organization: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`sso.view_settings`: target organization (name repeated in metadata)."""
    return _build(A.SSO_VIEW_SETTINGS, [organization], extra, source=source)


def sso_create_management_portal_url(*, organization: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`sso.create_management_portal_url`: an admin opened the WorkOS SSO portal."""
    return _build(A.SSO_CREATE_MANAGEMENT_PORTAL_URL, [organization], extra, source=source)


def sso_delete_connection(*, sso_connection: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`sso.delete_connection`: target sso_connection (with `connection_type`)."""
    return _build(A.SSO_DELETE_CONNECTION, [sso_connection], extra, source=source)


def directory_sync_delete(*, directory_sync: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`directory_sync.delete`: target directory_sync."""
    return _build(A.DIRECTORY_SYNC_DELETE, [directory_sync], extra, source=source)


def directory_sync_create_management_portal_url(
    *, organization: Target, source: str, extra: Extra = None
) -> CatalogEvent:
    """`directory_sync.create_management_portal_url`: an admin opened the WorkOS directory sync portal."""
    return _build(A.DIRECTORY_SYNC_CREATE_MANAGEMENT_PORTAL_URL, [organization], extra, source=source)


# -- Audit log streams (portal access) ---------------------------------------------------------------------------
def audit_logs_create_management_portal_url(*, organization: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`audit_logs.create_management_portal_url`: an admin opened the WorkOS Audit Logs portal."""
    return _build(A.AUDIT_LOGS_CREATE_MANAGEMENT_PORTAL_URL, [organization], extra, source=source)


def log_streams_create_management_portal_url(*, organization: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`log_streams.create_management_portal_url`: an admin opened the WorkOS Log Streams portal."""
    return _build(A.LOG_STREAMS_CREATE_MANAGEMENT_PORTAL_URL, [organization], extra, source=source)


def portal_link(intent: str, *, organization: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """The event for opening the WorkOS portal with `intent` ("audit_logs", "log_streams", "sso", "dsync"): the
    admin surface calls this with the intent it asked WorkOS for. Never put the link itself in the event."""
    return _build(A.portal_action(intent), [organization], extra, source=source)


# -- Users and analytics -----------------------------------------------------------------------------------------
def user_view_settings(*, user: Target, source: str, extra: Extra = None) -> CatalogEvent:
    """`user.view_settings`: target user (the account whose settings page was opened)."""
    return _build(A.USER_VIEW_SETTINGS, [user], extra, source=source)


def analytics_view(
    *, project: Target, source: str, start_date: str, end_date: str, interval: str = "", extra: Extra = None
) -> CatalogEvent:
    """`analytics.view`: the queried window (ISO 8601) and bucket ("hour", "day", or "" for the summary)."""
    return _build(
        A.ANALYTICS_VIEW, [project], extra, source=source, start_date=start_date, end_date=end_date, interval=interval
    )
