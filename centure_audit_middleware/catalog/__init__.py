"""The Centure action catalog: action constants, typed builders, validation, and WorkOS schema sync.

    from centure_audit_middleware import audit, audited, catalog

    audit.actor(catalog.actor(user.id, user.first_name, user.last_name, user.email))    # auth layer, once

    @app.post("/projects/{project_id}/api-keys")
    @audited(catalog.API_KEY_CREATE)
    async def create_key(project_id: str):
        key = ...
        catalog.events.api_key_create(
            api_key=catalog.targets.api_key(key.id, key.name, project_id=project_id, organization_id=org.id),
            project=catalog.targets.project(project.id, project.name, organization_id=org.id),
            source=catalog.source("/projects/{project_id}/api-keys/new", project_id=project_id),
        ).annotate()

    auditor = Auditor(..., validators=[catalog.validator(strict=True)])    # in tests; default: log and deliver

The catalog itself is package data (`centure.json`, see `catalog.model` for the format); apps add their own
actions with `catalog.register(ActionSpec(...))`, a dict, or `default_catalog().register_file(path)`.
"""

from __future__ import annotations

from . import events, targets
from .actions import (
    ANALYTICS_VIEW,
    API_KEY_CREATE,
    AUDIT_LOGS_CREATE_MANAGEMENT_PORTAL_URL,
    CENTURE_ACTIONS,
    DIRECTORY_SYNC_CREATE_MANAGEMENT_PORTAL_URL,
    DIRECTORY_SYNC_DELETE,
    EXTERNAL_APP_LOGIN_APPROVE,
    EXTERNAL_APP_LOGIN_VIEW,
    LOG_STREAMS_CREATE_MANAGEMENT_PORTAL_URL,
    MCP_PROXY_CREATE,
    MCP_PROXY_DELETE,
    MCP_PROXY_REVOKE,
    MCP_PROXY_UPDATE,
    MCP_PROXY_UPDATE_STATUS,
    MCP_PROXY_VIEW_DETAILS,
    ORGANIZATION_CREATE,
    ORGANIZATION_UPDATE_NAME,
    PORTAL_ACTIONS,
    PROJECT_CREATE,
    PROJECT_MEMBERSHIP_CREATE,
    PROJECT_MEMBERSHIP_UPDATE,
    PROJECT_UPDATE_NAME,
    SSO_CREATE_MANAGEMENT_PORTAL_URL,
    SSO_DELETE_CONNECTION,
    SSO_VIEW_SETTINGS,
    USER_VIEW_SETTINGS,
    Action,
    portal_action,
)
from .changes import CHANGES_LIMIT, changes
from .events import CatalogEvent, event
from .helpers import actor, actor_metadata, route_source, source
from .markdown import markdown_table
from .model import (
    ActionSpec,
    ActorSpec,
    Catalog,
    CatalogError,
    FieldSpec,
    TargetSpec,
    default_catalog,
    register,
)
from .validation import CatalogValidator, Violation, check, validator

__all__ = [
    "ANALYTICS_VIEW",
    "API_KEY_CREATE",
    "AUDIT_LOGS_CREATE_MANAGEMENT_PORTAL_URL",
    "CENTURE_ACTIONS",
    "CHANGES_LIMIT",
    "DIRECTORY_SYNC_CREATE_MANAGEMENT_PORTAL_URL",
    "DIRECTORY_SYNC_DELETE",
    "EXTERNAL_APP_LOGIN_APPROVE",
    "EXTERNAL_APP_LOGIN_VIEW",
    "LOG_STREAMS_CREATE_MANAGEMENT_PORTAL_URL",
    "MCP_PROXY_CREATE",
    "MCP_PROXY_DELETE",
    "MCP_PROXY_REVOKE",
    "MCP_PROXY_UPDATE",
    "MCP_PROXY_UPDATE_STATUS",
    "MCP_PROXY_VIEW_DETAILS",
    "ORGANIZATION_CREATE",
    "ORGANIZATION_UPDATE_NAME",
    "PORTAL_ACTIONS",
    "PROJECT_CREATE",
    "PROJECT_MEMBERSHIP_CREATE",
    "PROJECT_MEMBERSHIP_UPDATE",
    "PROJECT_UPDATE_NAME",
    "SSO_CREATE_MANAGEMENT_PORTAL_URL",
    "SSO_DELETE_CONNECTION",
    "SSO_VIEW_SETTINGS",
    "USER_VIEW_SETTINGS",
    "Action",
    "ActionSpec",
    "ActorSpec",
    "Catalog",
    "CatalogError",
    "CatalogEvent",
    "CatalogValidator",
    "FieldSpec",
    "TargetSpec",
    "Violation",
    "actor",
    "actor_metadata",
    "changes",
    "check",
    "default_catalog",
    "event",
    "events",
    "markdown_table",
    "portal_action",
    "register",
    "route_source",
    "source",
    "targets",
    "validator",
]
