"""The `centure-audit` command. Each subcommand lives in `centure_audit_middleware.commands.<name>` and exposes
`register(subparsers)`; the modules are discovered, so adding a command touches no shared file."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sqlite3
import sys
from collections.abc import Callable, Sequence

from . import commands
from .store import StoreError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="centure-audit", description="Audit logging for WorkOS: tools and demo.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `centure-audit events | head`
        sys.stderr.close()
        return 0
    except (ImportError, OSError, sqlite3.Error, StoreError) as exc:
        # The commands report the errors they expect; this is the net for the rest of what bad input or a missing
        # extra can raise: an operator needs the message, not a traceback.
        print(f"centure-audit {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
