"""WorkOS's side of exports and retention, through the SDK: `export_via_workos` and `sync_retention`.

An export at WorkOS is created, polled until `ready` (its CSV URL is valid 10 minutes), then downloaded; creating one
is not idempotent, so it is never retried blindly. Retention is a PUT of the organization's policy.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from workos import WorkOSClient

__all__ = ["ExportFailed", "export_via_workos", "sync_retention"]

Progress = Callable[[str], None]


class ExportFailed(RuntimeError):
    """WorkOS reported the export as `error` or `expired`, or it was not ready in time."""


def export_via_workos(
    client: WorkOSClient,
    organization_id: str,
    out: IO[bytes],
    *,
    range_start: dt.datetime,
    range_end: dt.datetime,
    actions: Sequence[str] | None = None,
    actor_ids: Sequence[str] | None = None,
    actor_names: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    poll_interval: float = 1.0,
    timeout: float = 600.0,
    progress: Progress | None = None,
) -> int:
    """Create an export at WorkOS, wait for it, and copy its CSV into `out`; returns the bytes written."""
    if range_start.utcoffset() is None or range_end.utcoffset() is None:
        raise ValueError("range_start and range_end must be timezone-aware")
    if range_start >= range_end:
        raise ValueError("range_start must be before range_end")
    say = progress or (lambda message: None)
    export = client.audit_logs.create_export(
        organization_id=organization_id,
        range_start=range_start.astimezone(dt.UTC).isoformat(),
        range_end=range_end.astimezone(dt.UTC).isoformat(),
        actions=list(actions) if actions else None,
        actor_ids=list(actor_ids) if actor_ids else None,
        actor_names=list(actor_names) if actor_names else None,
        targets=list(targets) if targets else None,
    )
    started = time.monotonic()
    polls = 0
    while True:
        state = getattr(export.state, "value", export.state)
        say(f"export {export.id}: {state} ({time.monotonic() - started:.0f} s, {polls} polls)")
        if state == "ready" and export.url:
            break
        if state in ("error", "expired"):
            raise ExportFailed(f"WorkOS export {export.id} ended as {state}")
        if time.monotonic() - started > timeout:
            raise ExportFailed(f"WorkOS export {export.id} not ready after {timeout:.0f} s")
        time.sleep(poll_interval)
        export = client.audit_logs.get_export(export.id)
        polls += 1
    # The URL is a pre-signed download (no API key needed, none sent).
    written = 0
    with urllib.request.urlopen(export.url, timeout=60) as response:
        while chunk := response.read(1 << 16):  # streamed: an export can be large
            out.write(chunk)
            written += len(chunk)
    say(f"export {export.id}: downloaded {written:,} bytes")
    return written


def sync_retention(client: WorkOSClient, organization_id: str, days: int) -> int:
    """Set the organization's retention at WorkOS to `days`; returns what WorkOS now reports."""
    from workos.audit_logs._resource import RetentionPeriodInDays  # not re-exported by the SDK

    result = client.audit_logs.update_organization_audit_logs_retention(
        organization_id, retention=RetentionPeriodInDays(retention_period_in_days=days)
    )
    reported = getattr(result, "retention_period_in_days", None)
    return int(reported) if reported is not None else days
