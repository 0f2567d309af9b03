"""``centure-audit retention``: apply, set and show the per-organization retention of the local event store."""

from __future__ import annotations

import argparse
import sys

from ..store import RETENTION_CHOICES, StoreError
from ..store.base import check_retention_days
from ..store.retention import apply_retention, retention_cutoff
from .events import add_store_argument, open_store_from_args

__all__ = ["register"]


def _apply(args: argparse.Namespace) -> int:
    try:
        with open_store_from_args(args) as store:
            result = apply_retention(store, dry_run=args.dry_run, organizations=args.org or None)
            verb = "would delete" if args.dry_run else "deleted"
            for org, count in sorted(result.items()):
                days = store.get_retention_days(org)
                print(f"{org}\t{days} days\t{verb} {count}")
    except (StoreError, ValueError) as exc:
        print(f"centure-audit retention: {exc}", file=sys.stderr)
        return 1
    return 0


def _set(args: argparse.Namespace) -> int:
    try:
        days = check_retention_days(args.days)
    except ValueError as exc:
        print(f"centure-audit retention: {exc}", file=sys.stderr)
        return 2
    try:
        with open_store_from_args(args) as store:
            store.set_retention_days(args.org, days)
    except (StoreError, ValueError) as exc:
        print(f"centure-audit retention: {exc}", file=sys.stderr)
        return 1
    print(f"{args.org}\t{days} days")
    return 0


def _sync(args: argparse.Namespace) -> int:
    """Push each organization's local policy to WorkOS (`PUT /organizations/{id}/audit_logs_retention`)."""
    from workos._errors import WorkOSError

    from ..catalog.schemas import workos_client
    from ..store.workos_sync import sync_retention

    status = 0
    try:
        with open_store_from_args(args) as store, workos_client(args.api_key, args.base_url) as client:
            for org in args.org or store.organizations():
                days = store.get_retention_days(org)
                try:
                    print(f"{org}\t{sync_retention(client, org, days)} days at WorkOS")
                except WorkOSError as exc:
                    print(f"{org}\tfailed: {exc}", file=sys.stderr)
                    status = 1
    except (StoreError, ValueError) as exc:
        print(f"centure-audit retention: {exc}", file=sys.stderr)
        return 1
    return status


def _show(args: argparse.Namespace) -> int:
    try:
        with open_store_from_args(args) as store:
            for org in args.org or store.organizations():
                days = store.get_retention_days(org)
                print(f"{org}\t{days} days\tdeletes events before {retention_cutoff(days).isoformat()}")
    except (StoreError, ValueError) as exc:
        print(f"centure-audit retention: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("retention", help="retention of the local event store, per organization")
    actions = parser.add_subparsers(dest="retention_command", required=True, metavar="ACTION")

    apply = actions.add_parser("apply", help="delete events older than each organization's policy")
    apply.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    apply.add_argument("--org", action="append", metavar="ORG", help="only this organization (repeatable)")
    add_store_argument(apply)
    apply.set_defaults(handler=_apply)

    choices = " or ".join(str(c) for c in RETENTION_CHOICES)
    set_ = actions.add_parser("set", help=f"set an organization's policy ({choices} days)")
    set_.add_argument("org", metavar="ORG", help="organization id")
    set_.add_argument("days", metavar="DAYS", type=int, help=choices)
    add_store_argument(set_)
    set_.set_defaults(handler=_set)

    sync = actions.add_parser("sync", help="set each organization's policy at WorkOS too")
    sync.add_argument("--org", action="append", metavar="ORG", help="only this organization (repeatable)")
    sync.add_argument("--api-key", help="default: $WORKOS_API_KEY")
    sync.add_argument("--base-url", help="default: $WORKOS_BASE_URL")
    add_store_argument(sync)
    sync.set_defaults(handler=_sync)

    show = actions.add_parser("show", help="show the policies")
    show.add_argument("--org", action="append", metavar="ORG", help="only this organization (repeatable)")
    add_store_argument(show)
    show.set_defaults(handler=_show)
