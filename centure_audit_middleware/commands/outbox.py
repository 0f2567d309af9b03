"""`centure-audit outbox status | dead | replay | purge`: look after the delivery outbox of a running or stopped app.

Works on the outbox directly while apps and relays run: a SQLite file (WAL lets readers in, and writes take the same
lock as the dispatcher's) or a PostgreSQL database (``--outbox postgresql://...``), where `status` also lists the
senders of the fleet (host, pid, role, last heartbeat). An operator can see a backlog, read dead letters and decide
what to replay.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sqlite3
import sys
from typing import Any, Final

__all__ = ["register"]

#: The first bytes of every SQLite 3 database file.
_SQLITE_HEADER: Final = b"SQLite format 3\x00"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("outbox", help="inspect the delivery outbox: status, dead letters, replay, purge")
    parser.add_argument(
        "--outbox",
        default=os.environ.get("CENTURE_AUDIT_OUTBOX", "audit-outbox.db"),
        help="the outbox file or postgresql:// URL (default: $CENTURE_AUDIT_OUTBOX or ./audit-outbox.db)",
    )
    actions = parser.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")

    status = actions.add_parser(
        "status", help="pending and dead deliveries per sink, oldest pending age, and (PostgreSQL) the senders seen"
    )
    status.add_argument(
        "--json", action="store_true", help='one JSON object: {"sinks": {sink: {pending, dead, oldest age}}, "senders"}'
    )
    status.set_defaults(handler=_status)

    dead = actions.add_parser("dead", help="list dead letters with their reasons")
    dead.add_argument("--sink", default=None, help="only this sink's (e.g. workos, store)")
    dead.add_argument("--limit", type=int, default=50, help="at most this many, oldest first (default 50)")
    dead.add_argument("--json", action="store_true", help="one JSON object per line, with the event")
    dead.set_defaults(handler=_dead)

    replay = actions.add_parser("replay", help="put dead letters back in the queue (all, or by --id / --sink)")
    replay.add_argument("--sink", default=None, help="only this sink's dead letters")
    replay.add_argument("--id", dest="ids", action="append", default=None, help="an event id (repeatable)")
    replay.set_defaults(handler=_replay)

    purge = actions.add_parser("purge", help="delete dead letters (or, with --all, everything) for good")
    purge.add_argument("--sink", default=None, help="only this sink's deliveries")
    purge.add_argument("--all", action="store_true", help="pending deliveries too: they will never be sent")
    purge.add_argument("--yes", action="store_true", help="do it (without it, only say what would go)")
    purge.set_defaults(handler=_purge)


def _open(args: argparse.Namespace) -> Any:
    from ..delivery.location import is_postgres_url, redact_dsn
    from ..delivery.outbox import Outbox

    path = args.outbox
    if is_postgres_url(path):
        try:
            from ..delivery.pg_outbox import PostgresOutbox
        except ImportError:
            print(
                "centure-audit outbox: a PostgreSQL outbox needs psycopg: "
                "pip install 'centure-audit-middleware[postgres]'",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        try:
            return PostgresOutbox(path, role="cli")
        except Exception as exc:  # unreachable server, bad credentials: say so, not a traceback
            print(f"centure-audit outbox: cannot open {redact_dsn(path)}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
    problem = _not_an_outbox(path)
    if problem:
        print(f"centure-audit outbox: {problem}", file=sys.stderr)
        raise SystemExit(2)
    try:
        return Outbox(path)
    except sqlite3.Error as exc:  # a damaged file, a permission, a lock held too long: say so, not a traceback
        print(f"centure-audit outbox: cannot open {path}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _not_an_outbox(path: str) -> str | None:
    """Why `path` can't be an outbox file, or None. Checked before SQLite sees it: SQLite would create its journal
    beside whatever it opens (a device, a README) and turn an empty file into a database."""
    if not os.path.exists(path):
        return f"no outbox at {path}"
    if not os.path.isfile(path):
        return f"{path} is not an outbox: not a regular file"
    try:
        with open(path, "rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if header != _SQLITE_HEADER:
        return f"{path} is not an outbox: {'an empty file' if not header else 'not a SQLite database'}"
    return None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return str(dt.timedelta(seconds=int(seconds)))


def _status(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        report = {sink: outbox.stats(sink) for sink in outbox.sinks()}
        senders = outbox.senders()
    finally:
        outbox.close()
    if args.json:
        sinks = {
            s: {"pending": r.pending, "dead": r.dead, "oldest_pending_age": r.oldest_pending_age}
            for s, r in report.items()
        }
        print(json.dumps({"sinks": sinks, "senders": [dataclasses.asdict(sender) for sender in senders]}))
        return 0
    if not report:
        print(f"{outbox.path}: empty")
    else:
        print(f"{'sink':<16} {'pending':>9} {'dead':>9} {'oldest pending':>16}")
        for sink, stats in report.items():
            print(f"{sink:<16} {stats.pending:>9} {stats.dead:>9} {_age(stats.oldest_pending_age):>16}")
    if senders:
        print(f"\n{'sender':<28} {'pid':>8} {'role':<6} {'last heartbeat':>15}  state")
        for sender in senders:
            state = "alive" if sender.alive else "gone (its leases are handed back)"
            print(f"{sender.host[:28]:<28} {sender.pid:>8} {sender.role:<6} {sender.silent_for:>13.1f} s  {state}")
    return 0


def _dead(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        letters = outbox.dead_letters(args.sink, limit=args.limit)
    finally:
        outbox.close()
    for letter in letters:
        when = dt.datetime.fromtimestamp(letter.dead_at or 0, dt.UTC).isoformat(timespec="seconds")
        if args.json:
            print(
                json.dumps(
                    {
                        "sink": letter.sink,
                        "event_id": letter.event_id,
                        "attempts": letter.attempts,
                        "reason": letter.reason,
                        "dead_at": when,
                        "event": json.loads(letter.body),
                    }
                )
            )
        else:
            print(f"{when}  {letter.sink:<10} {letter.event_id}  attempts={letter.attempts}  {letter.reason}")
    if not letters and not args.json:
        print("no dead letters")
    return 0


def _replay(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        count = outbox.replay(args.sink, args.ids)
    finally:
        outbox.close()
    print(f"{count} dead letter(s) queued again; a running app (or the next one started) delivers them")
    return 0


def _purge(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        if not args.yes:
            stats = outbox.stats(args.sink)
            gone = stats.dead + (stats.pending if args.all else 0)
            print(f"would delete {gone} deliveries; run again with --yes")
            return 1
        count = outbox.purge(args.sink, dead_only=not args.all)
    finally:
        outbox.close()
    print(f"deleted {count} deliveries")
    return 0
