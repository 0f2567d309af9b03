"""`centure-audit emulator`: run the WorkOS emulator in the foreground, for the demo and manual testing.

Point an app at it with `WORKOS_BASE_URL=<printed url> WORKOS_API_KEY=<key>`; each accepted event is printed as one
line (`--quiet` turns that off). Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..testing.emulator import ReceivedEvent, WorkOSEmulator

__all__ = ["register", "run"]

DEFAULT_PORT = 8787
DEFAULT_ORGANIZATION = "org_01TEST"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator",
        help="run a local WorkOS API emulator (audit logs, exports, schemas, portal links, retention)",
        description="Run the WorkOS emulator on loopback until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument("--api-key", default="sk_test_emulator", help="the API key it accepts (default: %(default)s)")
    parser.add_argument(
        "--org",
        dest="organizations",
        action="append",
        metavar="ORG_ID",
        help=f"an organization it knows; repeatable (default: {DEFAULT_ORGANIZATION})",
    )
    parser.add_argument(
        "--export-polls", type=int, default=1, help="GETs of an export before it is ready (default: %(default)s)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print accepted events")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """Serve until Ctrl-C, SIGTERM or, for tests, `stop` is set."""
    stop = stop if stop is not None else threading.Event()
    quiet: bool = args.quiet

    def print_event(received: ReceivedEvent) -> None:
        event = received.event
        print(
            f"{received.organization_id} {event.get('action')} actor={event.get('actor', {}).get('id')} "
            f"key={received.idempotency_key}",
            flush=True,
        )

    emulator = WorkOSEmulator(
        api_key=args.api_key,
        organizations=args.organizations or [DEFAULT_ORGANIZATION],
        host=args.host,
        port=args.port,
        export_polls_until_ready=args.export_polls,
        on_event=None if quiet else print_event,
    )
    restore = _stop_on_sigterm(stop)
    try:
        emulator.start()
        print(f"WorkOS emulator listening on {emulator.url}", flush=True)
        print(f"  WORKOS_BASE_URL={emulator.url} WORKOS_API_KEY={emulator.api_key}", flush=True)
        print(f"  organizations: {', '.join(sorted(emulator.organizations))}", flush=True)
        # wait() with a timeout so Ctrl-C (delivered to the main thread) is noticed promptly.
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        restore()
    print("WorkOS emulator stopped", file=sys.stderr, flush=True)
    return 0


def _stop_on_sigterm(stop: threading.Event) -> Callable[[], None]:
    """Make SIGTERM stop the emulator cleanly; returns a function restoring the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be installed from the main thread (e.g. not in tests)

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handle)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
