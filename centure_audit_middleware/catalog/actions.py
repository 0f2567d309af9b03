"""The Centure action names as constants: `catalog.API_KEY_CREATE` instead of a string typed by hand.

Each constant is an `Action`, a `str` subclass, so it goes wherever an action name goes (`@audited(...)`,
`audit.record(...)`, `RouteMap`, JSON) and compares equal to the plain string, while editors complete the name and
a typo fails at import time instead of producing an event nobody searches for.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from .model import ActionSpec, default_catalog

__all__ = [
    "ANALYTICS_VIEW",
    "API_KEY_CREATE",
    "AUDIT_LOGS_CREATE_MANAGEMENT_PORTAL_URL",
    "CENTURE_ACTIONS",
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
    "portal_action",
]


class Action(str):
    """An audit action name that knows its catalog entry. Equal to (and hashes like) the plain string."""

    __slots__ = ()

    @property
    def spec(self) -> ActionSpec:
        """Its entry in the default catalog (KeyError if it has none)."""
        return default_catalog()[self]

    @property
    def category(self) -> str:
        return self.spec.category

    def __repr__(self) -> str:
        return f"Action({str(self)!r})"


# API keys
API_KEY_CREATE: Final = Action("api_key.create")
# Projects
PROJECT_CREATE: Final = Action("project.create")
PROJECT_UPDATE_NAME: Final = Action("project.update_name")
# Project memberships
PROJECT_MEMBERSHIP_CREATE: Final = Action("project_membership.create")
PROJECT_MEMBERSHIP_UPDATE: Final = Action("project_membership.update")
# Organizations
ORGANIZATION_CREATE: Final = Action("organization.create")
ORGANIZATION_UPDATE_NAME: Final = Action("organization.update_name")
# MCP proxies
MCP_PROXY_CREATE: Final = Action("mcp_proxy.create")
MCP_PROXY_UPDATE: Final = Action("mcp_proxy.update")
MCP_PROXY_UPDATE_STATUS: Final = Action("mcp_proxy.update_status")
MCP_PROXY_REVOKE: Final = Action("mcp_proxy.revoke")
MCP_PROXY_DELETE: Final = Action("mcp_proxy.delete")
MCP_PROXY_VIEW_DETAILS: Final = Action("mcp_proxy.view_details")
# External apps
EXTERNAL_APP_LOGIN_VIEW: Final = Action("external_app.login_view")
EXTERNAL_APP_LOGIN_APPROVE: Final = Action("external_app.login_approve")
# SSO
SSO_VIEW_SETTINGS: Final = Action("sso.view_settings")
SSO_CREATE_MANAGEMENT_PORTAL_URL: Final = Action("sso.create_management_portal_url")
SSO_DELETE_CONNECTION: Final = Action("sso.delete_connection")
# Directory sync
DIRECTORY_SYNC_DELETE: Final = Action("directory_sync.delete")
DIRECTORY_SYNC_CREATE_MANAGEMENT_PORTAL_URL: Final = Action("directory_sync.create_management_portal_url")
# Audit log streams (portal access)
AUDIT_LOGS_CREATE_MANAGEMENT_PORTAL_URL: Final = Action("audit_logs.create_management_portal_url")
LOG_STREAMS_CREATE_MANAGEMENT_PORTAL_URL: Final = Action("log_streams.create_management_portal_url")
# Users
USER_VIEW_SETTINGS: Final = Action("user.view_settings")
# Analytics
ANALYTICS_VIEW: Final = Action("analytics.view")

#: Every documented Centure action, in the docs' order.
CENTURE_ACTIONS: Final[tuple[Action, ...]] = (
    API_KEY_CREATE,
    PROJECT_CREATE,
    PROJECT_UPDATE_NAME,
    PROJECT_MEMBERSHIP_CREATE,
    PROJECT_MEMBERSHIP_UPDATE,
    ORGANIZATION_CREATE,
    ORGANIZATION_UPDATE_NAME,
    MCP_PROXY_CREATE,
    MCP_PROXY_UPDATE,
    MCP_PROXY_UPDATE_STATUS,
    MCP_PROXY_REVOKE,
    MCP_PROXY_DELETE,
    MCP_PROXY_VIEW_DETAILS,
    EXTERNAL_APP_LOGIN_VIEW,
    EXTERNAL_APP_LOGIN_APPROVE,
    SSO_VIEW_SETTINGS,
    SSO_CREATE_MANAGEMENT_PORTAL_URL,
    SSO_DELETE_CONNECTION,
    DIRECTORY_SYNC_DELETE,
    DIRECTORY_SYNC_CREATE_MANAGEMENT_PORTAL_URL,
    AUDIT_LOGS_CREATE_MANAGEMENT_PORTAL_URL,
    LOG_STREAMS_CREATE_MANAGEMENT_PORTAL_URL,
    USER_VIEW_SETTINGS,
    ANALYTICS_VIEW,
)

#: WorkOS Admin Portal intent (`POST /portal/generate_link`) -> the action that opening it records. Opening a
#: portal is itself audited (DESIGN §7), so the admin surface looks the action up here instead of spelling it.
PORTAL_ACTIONS: Final[Mapping[str, Action]] = MappingProxyType(
    {
        "audit_logs": AUDIT_LOGS_CREATE_MANAGEMENT_PORTAL_URL,
        "log_streams": LOG_STREAMS_CREATE_MANAGEMENT_PORTAL_URL,
        "sso": SSO_CREATE_MANAGEMENT_PORTAL_URL,
        "dsync": DIRECTORY_SYNC_CREATE_MANAGEMENT_PORTAL_URL,
    }
)


def portal_action(intent: str) -> Action:
    """The action recorded when an admin opens the WorkOS portal with `intent` (ValueError for other intents)."""
    try:
        return PORTAL_ACTIONS[intent]
    except KeyError:
        raise ValueError(
            f"no Centure action for portal intent {intent!r}; known: {', '.join(PORTAL_ACTIONS)}"
        ) from None
