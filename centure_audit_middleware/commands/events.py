"""``centure-audit events``: search one organization's events in the local event store.

Also the helpers the other store commands share: the ``--store`` option, the filter options, time parsing and
stderr progress.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from collections.abc import Iterable
from typing import Final, TextIO

from ..events import AuditEvent
from ..store import STORE_ENV, EventQuery, EventStore, StoreError, open_store, store_url_from_env
from ..store.export import write_csv, write_csv_events
from ..store.query import DEFAULT_LIMIT, MAX_LIMIT

__all__ = [
    "Progress",
    "add_filter_arguments",
    "add_store_argument",
    "open_store_from_args",
    "parse_time",
    "query_from_args",
    "register",
    "unknown_organization_hint",
]

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: How many organizations an "unknown organization" hint names.
_LISTED_ORGANIZATIONS: Final = 20
#: Widest cell of each table column before it is cut with an ellipsis.
_WIDTHS: Final = {"occurred_at": 20, "action": 36, "actor": 28, "targets": 44, "location": 39, "id": 36}


def parse_time(value: str) -> dt.datetime:
    """An argparse type: ISO 8601 (a time without zone is UTC), ``now``, or an age such as ``30m``, ``24h``, ``7d``."""
    text = value.strip()
    now = dt.datetime.now(dt.UTC)
    if text.lower() == "now":
        return now
    match = _RELATIVE.match(text.lower())
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {value!r}: use ISO 8601 (2025-01-31, 2025-01-31T12:00:00Z), 'now', or an age like 7d"
        ) from None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=dt.UTC)


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        help=f"event store: a SQLite path, sqlite:///path or postgresql://... (default: ${STORE_ENV}, else ./audit.db)",
    )


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--org", required=True, metavar="ORG", help="organization id (required)")
    parser.add_argument("--actor", help="actor id or name (exact)")
    parser.add_argument("--action", help="action, exact or a prefix ending in '*' (e.g. 'mcp_proxy.*')")
    parser.add_argument("--target-type", metavar="TYPE", help="events with a target of this type")
    parser.add_argument("--target-id", metavar="ID", help="events with a target of this id")
    parser.add_argument("--since", type=parse_time, metavar="TIME", help="from this time (ISO 8601 or an age: 7d)")
    parser.add_argument("--until", type=parse_time, metavar="TIME", help="before this time")
    parser.add_argument("--text", help="case-insensitive text in actor, targets, metadata, location")


def query_from_args(args: argparse.Namespace, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> EventQuery:
    """The `EventQuery` of the filter options (`ValueError` if invalid)."""
    return EventQuery(
        organization_id=args.org,
        actor=args.actor,
        action=args.action,
        target_type=args.target_type,
        target_id=args.target_id,
        since=args.since,
        until=args.until,
        text=args.text,
        limit=limit,
        cursor=cursor,
    )


def open_store_from_args(args: argparse.Namespace) -> EventStore:
    # create=False: reading a store that isn't there is a mistake (wrong path, wrong directory), not a new store.
    try:
        return open_store(store_url_from_env(args.store), create=False)
    except ImportError as exc:  # a missing extra (postgres): the commands report StoreErrors as messages
        raise StoreError(str(exc)) from None


def unknown_organization_hint(store: EventStore, organization_id: str) -> str | None:
    """A hint for stderr when `organization_id` has nothing in the store at all (a typo, the wrong store), else
    None: a known organization whose filters match nothing is not a mistake."""
    known = store.organizations()
    if organization_id in known:
        return None
    if not known:
        return f"no events for organization {organization_id}: this store has no organizations yet"
    listed = ", ".join(known[:_LISTED_ORGANIZATIONS])
    more = f" and {len(known) - _LISTED_ORGANIZATIONS} more" if len(known) > _LISTED_ORGANIZATIONS else ""
    return f"no events for organization {organization_id}; organizations in this store: {listed}{more}"


class Progress:
    """A running ``N events`` counter on stderr, only when stderr is a terminal (never in pipes or logs)."""

    def __init__(self, label: str = "events", stream: TextIO | None = None, interval: float = 0.25) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._label = label
        self._interval = interval
        self._last = 0.0
        self._shown = False

    @property
    def enabled(self) -> bool:
        """Whether anything is shown (stderr is a terminal)."""
        return self._enabled

    def __call__(self, count: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._stream.write(f"\r{count:,} {self._label}")
            self._stream.flush()
            self._shown = True

    def done(self, count: int) -> None:
        if self._enabled and self._shown:
            self._stream.write(f"\r{count:,} {self._label}\n")
            self._stream.flush()


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())  # newlines or tabs in a name must not break the table
    return text if len(text) <= width else text[: width - 1] + "…"


def _table_row(event: AuditEvent) -> dict[str, str]:
    targets = ", ".join(f"{t.type}:{t.name or t.id}" for t in event.targets)
    actor = event.actor.name or event.actor.id
    return {
        "occurred_at": event.occurred_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "action": event.action,
        "actor": actor,
        "targets": targets,
        "location": event.context.location,
        "id": event.id,
    }


def _print_table(events: Iterable[AuditEvent], out: TextIO) -> int:
    rows = [{k: _cut(v, _WIDTHS[k]) for k, v in _table_row(e).items()} for e in events]
    columns = list(_WIDTHS)
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    out.write("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in rows:
        out.write("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() + "\n")
    return len(rows)


def _run(args: argparse.Namespace) -> int:
    if args.all and args.format == "table":
        print("centure-audit events: --all needs --format json or csv", file=sys.stderr)
        return 2
    try:
        q = query_from_args(args, limit=args.limit, cursor=args.cursor)
    except ValueError as exc:
        print(f"centure-audit events: {exc}", file=sys.stderr)
        return 2
    try:
        store = open_store_from_args(args)
    except (StoreError, ValueError) as exc:
        print(f"centure-audit events: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout
    with store:
        if args.all:
            progress = Progress()
            if args.format == "csv":
                count = write_csv(store, q, out, progress=progress)
            else:
                count = 0
                for line in store.iter_json(q):
                    out.write(line + "\n")
                    count += 1
                    if count % 1000 == 0:
                        progress(count)
            progress.done(count)
            return _no_match(store, args.org) if count == 0 else 0
        page = store.query(q)
        if not page.events and args.cursor is None and _no_match(store, args.org):
            return 1
        if args.format == "table":
            if page.events:
                _print_table(page.events, out)
            else:
                print("no events", file=sys.stderr)
        elif args.format == "csv":
            write_csv_events(page.events, out)
        else:
            for event in page.events:
                out.write(event.to_json() + "\n")
        out.flush()
        if page.next_cursor:
            print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
    return 0


def _no_match(store: EventStore, organization_id: str) -> int:
    """1, with a hint on stderr, if the organization is unknown to the store; else 0 (filters that match nothing)."""
    hint = unknown_organization_hint(store, organization_id)
    if hint is None:
        return 0
    print(f"centure-audit events: {hint}", file=sys.stderr)
    return 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "events",
        help="search an organization's events in the local event store",
        description="Search one organization's events, newest first. Table: one page; "
        "json (JSON Lines, one event per line) and csv: one page, or every match with --all.",
    )
    add_filter_arguments(parser)
    add_store_argument(parser)
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"page size, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})"
    )
    parser.add_argument("--cursor", help="continue after the page that printed this cursor")
    parser.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table (default), json (JSON Lines) or csv",
    )
    parser.add_argument("--all", action="store_true", help="every match, streamed (json and csv only)")
    parser.set_defaults(handler=_run)
