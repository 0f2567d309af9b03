"""``centure-audit schemas``: push the catalog's action schemas to WorkOS, list what WorkOS has, show a schema.

    centure-audit schemas push [--dry-run] [--action A ...] [--catalog app-actions.json]
    centure-audit schemas list
    centure-audit schemas show [--action A ...]

The API key and base URL come from ``--api-key``/``--base-url``, else ``WORKOS_API_KEY``/``WORKOS_BASE_URL``.
`push` only writes where the catalog differs from WorkOS's latest version, so running it again changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING

from ..catalog import Catalog, default_catalog
from ..catalog.schemas import action_schema, push_schemas, remote_schemas, schema_body, workos_client

if TYPE_CHECKING:
    from workos import WorkOSClient

__all__ = ["register"]

_PROG = "centure-audit schemas"


def _catalog(args: argparse.Namespace) -> Catalog:
    catalog = default_catalog().copy()
    for path in args.catalog or ():
        catalog.register_file(path, replace=True)
    return catalog


def _open(args: argparse.Namespace) -> tuple[Catalog, WorkOSClient] | int:
    """The catalog and a client for `push` and `list`, or the exit status after saying what is wrong."""
    try:
        return _catalog(args), workos_client(args.api_key, args.base_url, args.timeout)
    except (OSError, ValueError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2


def _fail(exc: Exception) -> int:
    # Status and message only: the SDK's exceptions carry the request, whose headers hold the API key.
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    print(f"{_PROG}: {'HTTP ' + str(status) + ': ' if status else ''}{message}", file=sys.stderr)
    return 1


def _push(args: argparse.Namespace) -> int:
    from workos._errors import WorkOSError

    opened = _open(args)
    if isinstance(opened, int):
        return opened
    catalog, client = opened
    try:
        with client:
            results = push_schemas(client, catalog, actions=args.action or None, dry_run=args.dry_run)
    except KeyError as exc:
        print(f"{_PROG}: {exc.args[0]}", file=sys.stderr)
        return 2
    except WorkOSError as exc:
        return _fail(exc)
    for result in results:
        print(result)
    counts = Counter(result.status for result in results)
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    note = " (dry run: nothing written)" if args.dry_run else ""
    if not args.dry_run and counts.get("unchanged") == len(results):
        note = " (already in sync: nothing written)"
    print(f"{len(results)} actions: {summary}{note}")
    return 1 if counts.get("failed") else 0


def _list(args: argparse.Namespace) -> int:
    from workos._errors import WorkOSError

    opened = _open(args)
    if isinstance(opened, int):
        return opened
    catalog, client = opened
    try:
        with client:
            existing = remote_schemas(client)
    except WorkOSError as exc:
        return _fail(exc)
    names = sorted({*existing, *(spec.action for spec in catalog)})
    width = max((len(name) for name in names), default=0)
    for name in names:
        schema = existing.get(name)
        spec = catalog.get(name)
        if schema is None:
            state, version = "missing at WorkOS (run: centure-audit schemas push)", "-"
        else:
            version = f"v{schema.version}"
            if spec is None:
                state = "not in the catalog"
            elif _same(schema_body(schema), action_schema(spec, catalog.actor)):
                state = "in sync"
            else:
                state = "differs from the catalog"
        print(f"{name:<{width}}  {version:>4}  {state}")
    return 0


def _same(left: object, right: object) -> bool:
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def _show(args: argparse.Namespace) -> int:
    try:
        catalog = _catalog(args)
        specs = [catalog[name] for name in args.action] if args.action else list(catalog)
    except KeyError as exc:
        print(f"{_PROG}: not in the catalog: {exc.args[0]}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    bodies = {spec.action: action_schema(spec, catalog.actor) for spec in specs}
    print(json.dumps(bodies, indent=2, ensure_ascii=False))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "schemas",
        help="sync the action catalog's schemas to WorkOS",
        description="Push the catalog's action schemas to WorkOS Audit Logs, list WorkOS's, or show one.",
    )
    commands = parser.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")

    def common(sub: argparse.ArgumentParser, *, remote: bool) -> None:
        sub.add_argument(
            "--catalog",
            action="append",
            metavar="FILE",
            help="a JSON file of the app's own actions (catalog format), added to the Centure catalog; repeatable",
        )
        if remote:
            sub.add_argument("--api-key", help="WorkOS API key (default: $WORKOS_API_KEY)")
            sub.add_argument("--base-url", help="WorkOS API base URL (default: $WORKOS_BASE_URL, else the SDK's)")
            sub.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: %(default)s)")

    push = commands.add_parser("push", help="create schema versions where the catalog differs from WorkOS")
    push.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    push.add_argument("--action", action="append", metavar="ACTION", help="only this action; repeatable")
    common(push, remote=True)
    push.set_defaults(handler=_push)

    listing = commands.add_parser("list", help="WorkOS's actions and whether each matches the catalog")
    common(listing, remote=True)
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", help="print the schema bodies the catalog would push (JSON)")
    show.add_argument("--action", action="append", metavar="ACTION", help="only this action; repeatable")
    common(show, remote=False)
    show.set_defaults(handler=_show)
