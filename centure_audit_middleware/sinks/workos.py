"""Delivery to WorkOS Audit Logs through the official `workos` SDK.

The SDK retries 429/5xx by itself, sleeping up to minutes inside one call; we call it with `max_retries=0` and a
short timeout and own the retry loop (the outbox), so a slow WorkOS never pins a sender thread and every retry reuses
the event id as `Idempotency-Key`. Outcomes (DESIGN §5): 2xx done; 400/404/413/422 dead-letter; 401/403 pause;
408/409/429/5xx, timeouts and connection errors retry, `Retry-After` honoured.

Transports (`transport=`), both through the SDK's own request building and error mapping (its `AuditLogEvent`
model, its exceptions), differing only in what moves the bytes:

- `"stdlib"` (default): the SDK on `http.client` connections (sinks/stdlib_http.py), about a sixth of the CPU per
  call of the SDK's own client (~100 µs against ~650 µs, benchmarks/workos_transport.py). Honours `HTTPS_PROXY` /
  `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` (CONNECT tunnels for https; plain-HTTP proxies only), verifies TLS with
  the default SSL context (`SSL_CERT_FILE` / `SSL_CERT_DIR` / `REQUESTS_CA_BUNDLE` when set), applies `timeout`.
- `"sdk"`: the SDK's default httpx2 client, for what the lean one does not do (HTTPS or SOCKS proxies, HTTP/2).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Final, Literal

from ..delivery.forking import after_fork_in_child
from ..events import AuditEvent
from .base import PauseDelivery, RejectEvent, RetryLater, Sink

if TYPE_CHECKING:
    from workos import WorkOSClient

__all__ = ["WorkOSSink"]

_REJECT: Final = frozenset({400, 404, 413, 422})
_PAUSE: Final = frozenset({401, 403})


class WorkOSSink(Sink):
    """`WorkOSSink(api_key=..., base_url=...)`; both fall back to the SDK's `WORKOS_API_KEY` / `WORKOS_BASE_URL`."""

    #: WorkOS allows 6,000 requests per 60 s per IP (DESIGN §6); the Auditor applies it unless told otherwise.
    default_rate_limit: tuple[int, float] | None = (6000, 60.0)

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        concurrency: int = 8,
        name: str = "workos",
        transport: Literal["stdlib", "sdk"] = "stdlib",
    ) -> None:
        self.api_key = api_key or os.environ.get("WORKOS_API_KEY")
        if not self.api_key:
            raise ValueError("WorkOSSink needs an API key (api_key= or WORKOS_API_KEY)")
        self.base_url = base_url or os.environ.get("WORKOS_BASE_URL") or None
        self.timeout = timeout
        self.concurrency = concurrency
        self.name = name
        if transport not in ("sdk", "stdlib"):
            raise ValueError(f"transport must be 'stdlib' or 'sdk', not {transport!r}")
        self.transport = transport
        self._client: WorkOSClient | None = None
        self._backend: Any = None
        self._pid = 0
        self._lock = threading.Lock()
        # A fork while a parent thread holds the lock (building the client on a process's first send) would leave it
        # held forever in the child, and every send of the child would block on it: give the child a fresh one.
        after_fork_in_child(self, WorkOSSink._new_lock)
        # The SDK takes seconds to import, and building a client imports more (its HTTP transport): pay for both when
        # the app starts, in the thread creating the sink, not in a sender thread when the first event is sent. Besides
        # the latency: a fork (gunicorn --preload) while a sender thread is inside an import leaves that module's
        # import lock held forever in the child, and every send of the child blocks on it.
        import encodings.idna  # noqa: F401  # what socket.getaddrinfo() imports on a process's first connection

        import workos.audit_logs.models  # noqa: F401  # what AuditEvent.to_sdk() imports for each event

        self.client()

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def client(self) -> WorkOSClient:
        # One client per process: its connection pool must not be shared with a forked parent.
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    from workos import WorkOSClient

                    backend: Any = None
                    if self.transport == "stdlib":
                        from .stdlib_http import StdlibBackend

                        backend = StdlibBackend()
                    client = WorkOSClient(
                        api_key=self.api_key,
                        base_url=self.base_url,
                        request_timeout=self.timeout,  # type: ignore[arg-type]  # typed int, used as float
                        max_retries=0,
                        http_client=backend,
                    )
                    if backend is not None:
                        # The proxy decision and the TLS context for WorkOS's address, now: a proxy this transport
                        # can't use (ValueError) or a bad CA bundle fails where the sink is built, not in a sender
                        # thread at the first event.
                        backend.prepare(client.base_url)
                    self._client, self._backend = client, backend
                    self._pid = os.getpid()
        return self._client

    def send(self, event: AuditEvent) -> None:
        from workos._errors import APIError, RateLimitExceededError, WorkOSError

        try:
            self.client().audit_logs.create_event(
                organization_id=event.organization_id,
                event=event.to_sdk(),
                idempotency_key=event.id,
            )
        except RateLimitExceededError as exc:
            raise RetryLater(_describe(exc), retry_after=exc.retry_after) from None
        except APIError as exc:
            status = exc.status_code or 0
            if status in _PAUSE:
                raise PauseDelivery(_describe(exc)) from None
            if status in _REJECT or (400 <= status < 500 and status not in (408, 409, 425)):
                raise RejectEvent(_describe(exc)) from None
            # A 503 may carry Retry-After too; the SDK parses it only for 429.
            raise RetryLater(_describe(exc), retry_after=_retry_after(exc)) from None
        except WorkOSError as exc:  # timeouts, connection errors, network errors
            raise RetryLater(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        client, self._client = self._client, None
        backend, self._backend = self._backend, None
        if client is not None and self._pid == os.getpid():
            client.close()
            if backend is not None:  # the SDK never closes a client it was given
                backend.close()


def _retry_after(exc: Any) -> float | None:
    from workos._base_client import _BaseWorkOSClient

    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    parsed: float | None = _BaseWorkOSClient._parse_retry_after(value)
    return parsed


def _describe(exc: Any) -> str:
    """Status, message and field errors, never the request (which carries the API key in its headers)."""
    parts = [f"HTTP {exc.status_code}" if exc.status_code else type(exc).__name__]
    message = getattr(exc, "message", None) or str(exc)
    parts.append(str(message)[:300])
    errors = getattr(exc, "errors", None)
    if errors:
        parts.append(f"errors={str(errors)[:500]}")
    return ": ".join(parts[:2]) + (f" ({parts[2]})" if len(parts) > 2 else "")
