"""A `workos` SDK HTTP backend on the standard library's `http.client`, for `WorkOSSink(transport="stdlib")`.

The SDK's default client (httpx2) spends about 1 ms of CPU per request; `http.client` about a quarter of that
(benchmarks/delivery.py). The SDK still builds the requests and maps the errors: this plugs into its documented
`http_client=` extension point and only moves bytes, over one keep-alive connection per sender thread.

Not the default, because httpx honours `HTTPS_PROXY`/`NO_PROXY` and this does not: use it when the app reaches
WorkOS directly (a warning says so when proxy variables are set).
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from workos._http import HTTPResponse

__all__ = ["StdlibBackend"]

logger = logging.getLogger("centure_audit_middleware.delivery")


class StdlibBackend:
    """One keep-alive `HTTPConnection`/`HTTPSConnection` per thread.

    A reused connection that the server closed while idle fails before any response: that request is sent once
    more on a fresh connection. That is safe for the only call the sink makes (`create_event` carries an
    Idempotency-Key), and is what httpcore's stale-connection check achieves another way.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._local = threading.local()
        self._ssl = ssl_context
        # Every connection, whichever thread made it, so that close() closes them all (a sender thread's
        # thread-local would otherwise leave its socket to the garbage collector).
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        if urllib.request.getproxies():
            logger.warning("WorkOSSink(transport='stdlib') ignores the proxy environment variables")

    def _connect(self, scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
        if scheme == "https":
            context = self._ssl or ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], content: bytes | None, timeout: float
    ) -> HTTPResponse:
        from workos._http import HTTPResponse, TransportConnectError, TransportError, TransportTimeout

        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.hostname, parts.port)
        for attempt in (0, 1):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is not None and getattr(self._local, "key", None) != key:
                self._drop()
                conn = None
            reused = conn is not None
            if conn is None:
                conn = self._connect(parts.scheme, parts.hostname or "localhost", parts.port, timeout)
                try:
                    conn.connect()
                except TimeoutError as exc:
                    raise TransportTimeout(str(exc)) from exc
                except OSError as exc:
                    raise TransportConnectError(str(exc)) from exc
                self._local.conn, self._local.key = conn, key
                with self._lock:
                    self._open.add(conn)
            try:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request(method, target, body=content, headers=dict(headers))
                response = conn.getresponse()
                body = response.read()
            except TimeoutError as exc:
                self._drop()
                raise TransportTimeout(str(exc)) from exc
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop()
                if reused and attempt == 0:
                    continue
                raise TransportError(str(exc)) from exc
            except (http.client.HTTPException, OSError) as exc:
                self._drop()
                raise TransportError(str(exc)) from exc
            if response.will_close:
                self._drop()
            return HTTPResponse(
                status_code=response.status,
                headers=cast("Mapping[str, str]", response.headers),  # case-insensitive get: all the SDK needs
                content=body,
                request_method=method,
                request_url=url,
            )
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        """Close every connection this backend opened, in any thread."""
        with self._lock:
            connections, self._open = self._open, set()
        for conn in connections:
            conn.close()
