"""The page's search form and the JSON API's query string, turned into an `EventQuery`.

The organization is never read from the request: it is the `organization` hook's answer, passed in by the caller.
Every other value is validated by `EventQuery` (length, NUL, action pattern, date order); whatever it refuses comes
back as a `ValueError` whose message the page shows (escaped).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Final

from ..store import EventQuery

__all__ = ["FILTER_FIELDS", "filter_values", "parse_filters", "parse_moment"]

#: Query-string names of the filters, in the form's order.
FILTER_FIELDS: Final = ("actor", "action", "target_type", "target_id", "since", "until", "q")
_ONE_DAY: Final = dt.timedelta(days=1)


def parse_moment(value: str, name: str, *, end_of_day: bool) -> dt.datetime:
    """``YYYY-MM-DD`` (what a date input sends; UTC day; `end_of_day`: the start of the next day, so that the end
    date is included) or an ISO 8601 date-time (UTC if it has no offset)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return start + _ONE_DAY if end_of_day else start
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise ValueError(f"{name}: expected a date (YYYY-MM-DD) or an ISO 8601 date-time") from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=dt.UTC)


def filter_values(query: Mapping[str, str]) -> dict[str, str]:
    """The filters present in `query`, as given (for refilling the form and building links)."""
    return {name: query[name] for name in FILTER_FIELDS if query.get(name, "").strip()}


def parse_filters(
    query: Mapping[str, str], organization_id: str, *, limit: int, with_cursor: bool = True
) -> EventQuery:
    """The `EventQuery` for `organization_id` that `query` asks for; `ValueError` saying what is wrong."""
    values = filter_values(query)
    since = values.get("since")
    until = values.get("until")
    return EventQuery(
        organization_id,
        actor=values.get("actor"),
        action=values.get("action"),
        target_type=values.get("target_type"),
        target_id=values.get("target_id"),
        since=parse_moment(since, "since", end_of_day=False) if since else None,
        until=parse_moment(until, "until", end_of_day=True) if until else None,
        text=values.get("q"),
        limit=limit,
        cursor=(query.get("cursor") or None) if with_cursor else None,
    )
