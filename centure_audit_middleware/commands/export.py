"""``centure-audit export``: one organization's events as CSV or JSON Lines, to a file or stdout.

Where the events come from is the ``--via`` option: ``local`` (the event store) today. Another source (WorkOS's
own export API) is one more entry in `SOURCES`: a function taking the parsed arguments and returning the exit
status, plus any options it needs added in `register`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Final, TextIO

from ..store import StoreError
from ..store.export import write_csv, write_jsonl
from .events import Progress, add_filter_arguments, add_store_argument, open_store_from_args, query_from_args

__all__ = ["SOURCES", "register"]

Source = Callable[[argparse.Namespace], int]


def _write_local(args: argparse.Namespace, out: TextIO) -> int:
    q = query_from_args(args)
    with open_store_from_args(args) as store:
        progress = Progress()
        if args.format == "csv":
            count = write_csv(store, q, out, progress=progress)
        else:
            count = write_jsonl(store, q, out, progress=progress)
        progress.done(count)
    return count


def _export_local(args: argparse.Namespace) -> int:
    try:
        query_from_args(args)  # validate before creating any file
        if args.output in (None, "-"):
            _write_local(args, sys.stdout)
            sys.stdout.flush()
            return 0
        target = Path(args.output)
        # Written beside the target and renamed at the end: a failed or interrupted export never leaves a
        # truncated file under the requested name.
        partial = target.with_name(target.name + ".partial")
        try:
            with open(partial, "w", encoding="utf-8", newline="") as out:
                count = _write_local(args, out)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    except ValueError as exc:
        print(f"centure-audit export: {exc}", file=sys.stderr)
        return 2
    except (StoreError, OSError) as exc:
        print(f"centure-audit export: {exc}", file=sys.stderr)
        return 1
    print(f"exported {count:,} events to {target}", file=sys.stderr)
    return 0


def _export_workos(args: argparse.Namespace) -> int:
    """Ask WorkOS for the export (its own CSV; the local store is not read), wait for it, download it."""
    from ..catalog.schemas import workos_client
    from ..store.workos_sync import ExportFailed, export_via_workos

    if args.format != "csv":
        print("centure-audit export: --via workos gives CSV only (WorkOS's export format)", file=sys.stderr)
        return 2
    now = dt.datetime.now(dt.UTC)
    since = args.since or now - dt.timedelta(days=30)
    until = args.until or now
    # The poll's progress on one rewritten line, only on a terminal (never in pipes or logs).
    say = (lambda message: print(f"\r{message}", end="", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    target = Path(args.output) if args.output not in (None, "-") else None
    partial = target.with_name(target.name + ".partial") if target else None
    from workos._errors import WorkOSError

    try:
        client = workos_client(args.api_key, args.base_url)
        with client, open(partial, "wb") if partial else nullcontext(sys.stdout.buffer) as out:
            written = export_via_workos(
                client,
                args.org,
                out,
                range_start=since,
                range_end=until,
                actions=[args.action] if args.action and not args.action.endswith("*") else None,
                actor_ids=[args.actor] if args.actor else None,
                targets=[args.target_type] if args.target_type else None,
                poll_interval=args.poll_interval,
                progress=say,
            )
        if say is not None:
            print(file=sys.stderr)
        if target and partial:
            os.replace(partial, target)
    except (ValueError, ExportFailed, WorkOSError, OSError) as exc:
        print(f"centure-audit export: {exc}", file=sys.stderr)
        return 1
    finally:
        if partial:
            partial.unlink(missing_ok=True)
    print(f"exported {written:,} bytes of WorkOS CSV{f' to {target}' if target else ''}", file=sys.stderr)
    return 0


#: --via NAME -> the function that runs the export.
SOURCES: Final[dict[str, Source]] = {"local": _export_local, "workos": _export_workos}


def _run(args: argparse.Namespace) -> int:
    return SOURCES[args.via](args)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export an organization's events as CSV or JSON Lines",
        description="Export one organization's events, newest first. CSV has the columns of a WorkOS audit log "
        "export (formula-like cells prefixed with ' for spreadsheets); JSON Lines has the full events.",
    )
    add_filter_arguments(parser)
    parser.add_argument("--format", choices=("csv", "jsonl"), required=True, help="csv (spreadsheet-safe) or jsonl")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    parser.add_argument("--via", choices=sorted(SOURCES), default="local", help="where the events come from")
    parser.add_argument("--api-key", help="with --via workos (default: $WORKOS_API_KEY)")
    parser.add_argument("--base-url", help="with --via workos (default: $WORKOS_BASE_URL)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="with --via workos: seconds between polls")
    add_store_argument(parser)
    parser.set_defaults(handler=_run)
