"""What became of each of the demo's requests: the event it recorded, or why it recorded none.

`ExplainingAuditor` is the demo's Auditor: an `Auditor` that, once `complete()` has decided on a request, notes the
outcome under the request's `X-Request-ID`. Whether an event was recorded is observed, not predicted: the hand-off is
watched. The reason for a request that recorded nothing is read from the same request record the Auditor decided on,
checking the rules `Auditor.complete` applies, in its order (README, "What is recorded, and when").
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..auditor import Auditor
from ..context import PendingEvent, RequestContext

__all__ = ["ExplainingAuditor", "why_not_recorded"]


def why_not_recorded(auditor: Auditor, ctx: RequestContext) -> str:
    """Why `ctx`, completed without recording its event, recorded none: one line for a person."""
    route = f"{ctx.method} {ctx.route_template() or ctx.path}"
    if ctx.skipped:
        return "the handler called audit.skip()"
    spec = auditor._spec(ctx)  # the very lookup complete() made: decorator, route map, catch-all
    if spec is None:
        return f"{route} is not audited (no @audited, no RouteMap entry, no catch-all)"
    if not spec.records_request(ctx):
        return f"{route} changes nothing: on a form view, @audited records the state-changing methods only"
    failures = auditor.record_failures if spec.record_failures is None else spec.record_failures
    if ctx.status >= 400 and not failures:
        return f"refused ({ctx.status}): an action that failed didn't happen; only responses below 400 are recorded"
    if ctx.actor is None:
        return "no actor (nobody signed in): counted in stats()['skipped']['no_actor']"
    return "not recorded"


class ExplainingAuditor(Auditor):
    """An Auditor that notes each completed request's outcome: `outcome(request_id, timeout)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outcomes: dict[str, str] = {}
        self._noted = threading.Condition()
        # complete() runs in the thread that served the request (an ASGI event loop, a WSGI worker thread) and hands
        # off synchronously, so a per-thread flag tells whether this request's own event was handed off.
        self._handing = threading.local()
        deliver = self.handoff

        def handoff(item: RequestContext | PendingEvent) -> None:
            if isinstance(item, RequestContext):
                self._handing.recorded = item.spec.action if item.spec is not None else "?"
            deliver(item)

        self.handoff = handoff

    def complete(self, ctx: RequestContext) -> None:
        completed_before = ctx.finished  # a request completes once: a second call decides nothing
        self._handing.recorded = None
        super().complete(ctx)
        request_id = ctx.request_id
        if request_id is None or completed_before:
            return
        action: str | None = self._handing.recorded
        try:
            outcome = f"recorded {action}" if action is not None else f"not recorded: {why_not_recorded(self, ctx)}"
        except Exception as exc:  # a demo's explanation must never break a request
            outcome = f"not recorded ({exc!r})"
        with self._noted:
            self._outcomes[request_id] = outcome
            self._noted.notify_all()

    def outcome(self, request_id: str, timeout: float = 5.0) -> str:
        """The outcome of the request sent with this `X-Request-ID`; it is noted right after its response is sent,
        so a client that has just read the response may have to wait a moment."""
        deadline = time.monotonic() + timeout
        with self._noted:
            while request_id not in self._outcomes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "unknown (the request did not complete within the wait)"
                self._noted.wait(remaining)
            return self._outcomes[request_id]
