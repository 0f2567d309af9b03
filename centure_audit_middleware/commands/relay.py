"""`centure-audit relay`: deliver an outbox's events from a process of its own.

Run the app with `CENTURE_AUDIT_DELIVERY=relay` (or `Auditor(delivery="relay")`): its processes then only commit
events to the outbox, and this command sends them. With a file outbox, one relay per host and outbox is the recipe
(the README has a systemd unit and a sidecar); more may run, one sends and the others stand by. With the outbox on
PostgreSQL, run as many as you like, on any hosts: they all send, each row claimed by one of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relay",
        help="deliver the events that apps running with CENTURE_AUDIT_DELIVERY=relay commit to an outbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--outbox",
        default=os.environ.get("CENTURE_AUDIT_OUTBOX", "audit-outbox.db"),
        help="the outbox the apps commit to: a file, or a postgresql:// URL where any number of relays on any hosts "
        "share the work (default: $CENTURE_AUDIT_OUTBOX or ./audit-outbox.db)",
    )
    parser.add_argument(
        "--auditor",
        metavar="MODULE:NAME",
        default=None,
        help="deliver to this Auditor's sinks (imports MODULE); default: the sinks Auditor.from_env() configures "
        "from WORKOS_API_KEY, WORKOS_BASE_URL and CENTURE_AUDIT_STORE, as the apps do",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        help="seconds to keep delivering after SIGTERM or SIGINT before exiting (default: 10)",
    )
    parser.set_defaults(handler=_run)


def _auditor(args: argparse.Namespace) -> Any:
    """The Auditor whose sinks and configuration the relay uses (it is never installed, nor started)."""
    if args.auditor:
        module_name, _, attribute = args.auditor.partition(":")
        if not module_name or not attribute:
            raise SystemExit(f"--auditor takes MODULE:NAME, not {args.auditor!r}")
        return getattr(importlib.import_module(module_name), attribute)
    from ..auditor import Auditor

    try:
        return Auditor.from_env()
    except ValueError as exc:  # a bad variable, or no sink at all
        raise SystemExit(f"centure-audit relay: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from ..delivery.location import redact_dsn
    from ..delivery.relay import Relay

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    auditor = _auditor(args)
    sinks = auditor.sinks
    relay = Relay.for_auditor(auditor, args.outbox)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    relay.start()
    names = ", ".join(sink.name for sink in sinks)
    where = redact_dsn(args.outbox)  # a postgresql:// URL's password never reaches a log
    print(f"centure-audit relay: delivering {where} to {names} (pid {os.getpid()})", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    drained = relay.close(args.shutdown_timeout)
    print(f"centure-audit relay: stopped ({'drained' if drained else 'the rest stays in the outbox'})", file=sys.stderr)
    return 0
