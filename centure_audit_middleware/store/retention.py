"""Retention: delete each organization's events older than its policy (30 days by default, 365 when extended).

Run it daily (``centure-audit retention apply`` from cron, or `apply_retention` from a scheduled job): the store
never deletes on its own, so a host that is down for a day deletes a day late, never early. Syncing the policy to
WorkOS (``PUT /organizations/{id}/audit_logs_retention``) is a separate step, outside this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from .base import EventStore
from .query import EventQuery

__all__ = ["apply_retention", "retention_cutoff"]


def retention_cutoff(days: int, now: dt.datetime | None = None) -> dt.datetime:
    """The instant before which events are out of a `days`-day policy at `now` (default: the current time)."""
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now - dt.timedelta(days=days)


def apply_retention(
    store: EventStore,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    organizations: Iterable[str] | None = None,
) -> dict[str, int]:
    """Prune every organization (or those in `organizations`) by its policy; returns {organization: deleted}.

    With `dry_run`, nothing is deleted and the counts are what would be.
    """
    if now is None:
        now = dt.datetime.now(dt.UTC)
    result: dict[str, int] = {}
    for org in store.organizations() if organizations is None else organizations:
        cutoff = retention_cutoff(store.get_retention_days(org), now)
        if dry_run:
            result[org] = store.count(EventQuery(org, until=cutoff))
        else:
            result[org] = store.prune(org, cutoff)
    return result
