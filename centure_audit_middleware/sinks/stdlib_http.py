"""The default HTTP backend of `WorkOSSink` (`transport="stdlib"`): the `workos` SDK on the standard library.

The SDK still builds every request (its `AuditLogEvent` model, JSON encoding, headers, `Idempotency-Key`) and maps
every response to its exceptions; this plugs into its documented `http_client=` extension point and only moves the
bytes. A call costs about a sixth of the CPU it costs through the SDK's default httpx2 client (~100 µs against
~650 µs, SDK and `to_sdk()` included: benchmarks/workos_transport.py), because the backend does little: one
keep-alive connection per sender thread, which `http.client` connects (proxy tunnel, TLS); the request written with
one `sendall`; the response read by a small HTTP/1.1 parser on a buffered reader kept with the connection
(`http.client`'s own response parsing goes through the `email` package, which alone costs more than the rest).

What it honours, like the httpx2 client it replaces:

- Proxies, from `urllib.request.getproxies()` / `proxy_bypass()`: `HTTPS_PROXY` / `HTTP_PROXY` (either case; the
  target's scheme picks the variable), then `ALL_PROXY`; `NO_PROXY` (host suffixes, `*`). An `https://` target goes
  through an `http://` proxy in a `CONNECT` tunnel (`HTTPSConnection(proxy).set_tunnel(host, port)`), so TLS is
  end to end; an `http://` target is sent to the proxy in absolute form. Credentials in the proxy URL
  (`http://user:pass@proxy:3128`) become `Proxy-Authorization: Basic`. The decision is made once per
  (scheme, host, port) and kept for the backend's life, as httpx2 reads the environment once per client: a proxy
  variable changed later takes effect with a new sink. A proxy URL whose scheme is not `http` (`https://`,
  `socks5://`) raises `ValueError` when the route is decided (`WorkOSSink` does that when it is built): use
  `WorkOSSink(transport="sdk")` for those.
- TLS: certificates and host names verified with `ssl.create_default_context()` (the system's trust store), or with
  the bundle named by `SSL_CERT_FILE` / `SSL_CERT_DIR` (as httpx2 does), or `REQUESTS_CA_BUNDLE`.
- The timeout the SDK passes (`WorkOSSink(timeout=)`), for connecting and for each read and write, like httpx2's.
- Keep-alive: a connection the server closed while idle fails before any response arrives; that request is sent
  once more on a fresh connection, which is safe for the only call the sink makes (`create_event` carries an
  `Idempotency-Key`), and is what httpx2's stale-connection check achieves another way. Responses with
  `Connection: close`, HTTP/1.0 without keep-alive, or no length end their connection.

Not supported (use `transport="sdk"`): HTTP/2, proxies spoken to over TLS or SOCKS, response content codings (it
asks for `identity`), macOS/Windows trust stores beyond what `ssl.create_default_context()` loads.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Final
from urllib.parse import unquote, urlsplit

from workos import HTTPResponse, TransportConnectError, TransportError, TransportTimeout

__all__ = ["Headers", "Route", "StdlibBackend", "decide_route", "default_ssl_context"]

_MAX_LINE: Final = 65536  # as http.client
_MAX_HEADERS: Final = 100  # as http.client
_MAX_BODY: Final = 16 * 1024 * 1024  # WorkOS answers a few hundred bytes; a runaway peer must not fill the memory
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_STALE: Final = (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


class _ProtocolError(Exception):
    """The peer's answer is not HTTP/1.x as we read it."""


class _Closed(Exception):
    """The connection ended before any byte of a response: a keep-alive connection the server had closed."""


class Headers(dict[str, str]):
    """Response headers, names lower-cased; `get`, `[]` and `in` take any case (all the SDK needs)."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


@dataclass(frozen=True, slots=True)
class Route:
    """How requests to one (scheme, host, port) travel: decided once, from the proxy environment."""

    scheme: str
    host: str
    port: int
    proxy: tuple[str, int] | None = None
    """The `http://` proxy's host and port, or None for a direct connection."""
    proxy_authorization: str | None = None
    tunnel: bool = False
    """`CONNECT` through the proxy (https targets); else the proxy gets absolute-form request targets."""
    request_prefix: str = ""
    """Prepended to the path in the request line: `http://host:port` when the proxy gets absolute forms."""
    fixed_headers: str = ""
    """`Host:` (and `Proxy-Authorization:` for absolute forms) lines, sent with every request."""


def decide_route(scheme: str, host: str, port: int | None) -> Route:
    """The route to `scheme://host:port` under the current proxy environment (see the module docstring)."""
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    port = port or _DEFAULT_PORTS[scheme]
    bracketed = f"[{host}]" if ":" in host else host
    authority = bracketed if port == _DEFAULT_PORTS[scheme] else f"{bracketed}:{port}"
    host_line = f"Host: {authority}\r\n"
    proxies = urllib.request.getproxies()
    proxy_url = proxies.get(scheme) or proxies.get("all")
    if not proxy_url or urllib.request.proxy_bypass(host) or urllib.request.proxy_bypass(f"{host}:{port}"):
        return Route(scheme, host, port, fixed_headers=host_line)
    parts = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"WorkOSSink(transport='stdlib') reaches proxies over plain HTTP only, not {parts.scheme}:// "
            "(from the proxy environment variables): use WorkOSSink(transport='sdk')"
        )
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    proxy = (parts.hostname, parts.port or 80)
    if scheme == "https":
        return Route(scheme, host, port, proxy, authorization, tunnel=True, fixed_headers=host_line)
    auth_line = f"Proxy-Authorization: {authorization}\r\n" if authorization else ""
    return Route(
        scheme,
        host,
        port,
        proxy,
        authorization,
        request_prefix=f"http://{authority}",
        fixed_headers=host_line + auth_line,
    )


def default_ssl_context() -> ssl.SSLContext:
    """`ssl.create_default_context()`, on `SSL_CERT_FILE` / `SSL_CERT_DIR` / `REQUESTS_CA_BUNDLE` when set."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        cafile = os.environ.get("REQUESTS_CA_BUNDLE") or None
    if cafile is not None and os.path.isdir(cafile):  # requests accepts a directory there
        cafile, capath = None, cafile
    return ssl.create_default_context(cafile=cafile, capath=capath)


class _Connection:
    """One keep-alive connection: `http.client` connects it (proxy tunnel, TLS); we speak HTTP/1.1 on its socket."""

    __slots__ = ("conn", "reader", "route", "sock", "timeout")

    def __init__(self, conn: http.client.HTTPConnection, route: Route, timeout: float) -> None:
        self.conn = conn
        self.route = route
        self.timeout = timeout
        conn.connect()
        sock = conn.sock
        assert sock is not None
        self.sock = sock
        self.reader: IO[bytes] = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.conn.close()


class StdlibBackend:
    """A `workos.HTTPBackend`: one keep-alive connection per thread, routes decided once per (scheme, host, port)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._local = threading.local()
        self._ssl = ssl_context
        self._routes: dict[tuple[str, str, int | None], Route] = {}
        # url -> (route, request-target): the SDK sends the same URL every time; parsing it is not free.
        self._targets: dict[str, tuple[Route, str]] = {}
        # Every connection, whichever thread made it, so that close() closes them all (a sender thread's
        # thread-local would otherwise leave its socket to the garbage collector).
        self._open: set[_Connection] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ routes and connections

    def route(self, url: str) -> Route:
        """The route requests to `url` take (decided on first use, then kept). Raises ValueError for a proxy or a
        scheme this backend can't use: call it early to fail when the app starts rather than at the first send."""
        parts = urlsplit(url)
        key = (parts.scheme.lower(), parts.hostname or "", parts.port)
        route = self._routes.get(key)
        if route is None:
            if not key[1]:
                raise ValueError(f"no host in URL {url!r}")
            route = decide_route(*key)
            with self._lock:
                route = self._routes.setdefault(key, route)
        return route

    def prepare(self, url: str) -> Route:
        """`route(url)`, and the TLS context loaded if the route needs one: what can fail in the configuration
        (an unusable proxy, a missing `SSL_CERT_FILE`) fails here, where the sink is built."""
        route = self.route(url)
        if route.scheme == "https":
            self._context()
        return route

    def _target(self, url: str) -> tuple[Route, str]:
        cached = self._targets.get(url)
        if cached is None:
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if any(c in path for c in " \r\n\x00"):
                raise ValueError(f"invalid request target {path!r}")
            cached = (self.route(url), path)
            if len(self._targets) > 256:  # the sink uses one URL; anything else stays bounded
                self._targets.clear()
            self._targets[url] = cached
        return cached

    def http_connection(self, route: Route, timeout: float) -> http.client.HTTPConnection:
        """The (unconnected) `http.client` connection for `route`."""
        if route.proxy is None:
            if route.scheme == "https":
                return http.client.HTTPSConnection(route.host, route.port, timeout=timeout, context=self._context())
            return http.client.HTTPConnection(route.host, route.port, timeout=timeout)
        proxy_host, proxy_port = route.proxy
        if route.tunnel:
            conn = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=timeout, context=self._context())
            headers = {"Proxy-Authorization": route.proxy_authorization} if route.proxy_authorization else None
            conn.set_tunnel(route.host, route.port, headers=headers)
            return conn
        return http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = default_ssl_context()  # loading the trust store takes milliseconds: once per backend
            with self._lock:
                if self._ssl is None:
                    self._ssl = context
        return self._ssl

    def _connect(self, route: Route, timeout: float) -> _Connection:
        try:
            connection = _Connection(self.http_connection(route, timeout), route, timeout)
        except TimeoutError as exc:
            raise TransportTimeout(str(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, DNS, TLS, tunnel refused by the proxy
            raise TransportConnectError(f"{type(exc).__name__}: {exc}") from exc
        self._local.connection = connection
        with self._lock:
            self._open.add(connection)
        return connection

    def _drop(self, connection: _Connection | None) -> None:
        self._local.connection = None
        if connection is not None:
            with self._lock:
                self._open.discard(connection)
            connection.close()

    # ------------------------------------------------------------------ the HTTPBackend protocol

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], content: bytes | None, timeout: float
    ) -> HTTPResponse:
        route, target = self._target(url)
        lines = [f"{method} {route.request_prefix}{target} HTTP/1.1\r\n{route.fixed_headers}"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
                raise ValueError(f"invalid header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        if content is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(content) if content else 0}\r\nAccept-Encoding: identity\r\n\r\n")
        else:
            lines.append("Accept-Encoding: identity\r\n\r\n")
        data = "".join(lines).encode("latin-1")
        if content:
            data += content
        for attempt in (0, 1):
            connection: _Connection | None = getattr(self._local, "connection", None)
            if connection is not None and (connection.route is not route or connection.sock.fileno() < 0):
                # another route, or closed by close() (from any thread): a new connection
                self._drop(connection)
                connection = None
            reused = connection is not None
            if connection is None:
                connection = self._connect(route, timeout)
            elif connection.timeout != timeout:
                connection.sock.settimeout(timeout)
                connection.timeout = timeout
            try:
                connection.sock.sendall(data)
                status, response_headers, body, will_close = _read_response(connection.reader, method)
            except TimeoutError as exc:
                self._drop(connection)
                raise TransportTimeout(str(exc) or "timed out") from exc
            except (_Closed, *_STALE) as exc:
                self._drop(connection)
                if reused and attempt == 0:
                    continue
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            except (_ProtocolError, OSError, ValueError) as exc:
                self._drop(connection)
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            if will_close:
                self._drop(connection)
            return HTTPResponse(
                status_code=status,
                headers=response_headers,
                content=body,
                request_method=method,
                request_url=url,
            )
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def close(self) -> None:
        """Close every connection this backend opened, in any thread."""
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()


# ---------------------------------------------------------------------- HTTP/1.1 responses


def _read_response(reader: IO[bytes], method: str) -> tuple[int, Headers, bytes, bool]:
    """(status, headers, body, the connection ends here) of the next response; 1xx answers are skipped."""
    first = True
    while True:
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            if first:
                raise _Closed("the server closed the connection before answering")
            raise _ProtocolError("connection closed after an informational response")
        first = False
        if len(line) > _MAX_LINE:
            raise _ProtocolError("status line too long")
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit() or rest[3:4] not in b" \r\n":
            raise _ProtocolError(f"bad status line {line[:80]!r}")
        status = int(code)
        headers = _read_headers(reader)
        if not 100 <= status < 200:
            break
        if status == 101:
            raise _ProtocolError("unexpected 101 Switching Protocols")
    connection = (headers.get("connection") or "").lower()
    will_close = "close" in connection or (version == b"HTTP/1.0" and "keep-alive" not in connection)
    if method == "HEAD" or status in (204, 304):
        return status, headers, b"", will_close
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.rpartition(",")[2].strip().lower() != "chunked":
            return status, headers, _read_to_end(reader), True
        return status, headers, _read_chunked(reader), will_close
    length = headers.get("content-length")
    if length is None:
        return status, headers, _read_to_end(reader), True
    size = int(length.partition(",")[0])  # "12, 12" (a repeated header) is one length; ValueError if not a number
    if not 0 <= size <= _MAX_BODY:
        raise _ProtocolError(f"Content-Length {size}")
    body = reader.read(size)
    if len(body) != size:
        raise _ProtocolError(f"incomplete body: {len(body)} of {size} bytes")
    return status, headers, body, will_close


def _read_headers(reader: IO[bytes]) -> Headers:
    headers = Headers()
    last = ""
    for _ in range(_MAX_HEADERS + 1):
        line = reader.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _ProtocolError("header line too long")
        if line in (b"\r\n", b"\n", b""):
            return headers
        if line[0] in b" \t":  # obsolete line folding: a continuation of the previous value
            if not last:
                raise _ProtocolError("folded line before any header")
            previous, more = dict.__getitem__(headers, last), line.strip().decode("latin-1")
            dict.__setitem__(headers, last, f"{previous} {more}" if previous else more)
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise _ProtocolError(f"malformed header line {line[:80]!r}")
        last = name.strip().decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        earlier = dict.get(headers, last)
        dict.__setitem__(headers, last, text if earlier is None else f"{earlier}, {text}")
    raise _ProtocolError(f"more than {_MAX_HEADERS} headers")


def _read_chunked(reader: IO[bytes]) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = reader.readline(_MAX_LINE + 1)
        if not line or len(line) > _MAX_LINE:
            raise _ProtocolError("bad chunk size line")
        size = int(line.partition(b";")[0].strip(), 16)  # ValueError if not hexadecimal
        if size < 0:
            raise _ProtocolError("negative chunk size")
        if size == 0:
            _read_headers(reader)  # trailers, up to the blank line that ends the message
            return b"".join(chunks)
        total += size
        if total > _MAX_BODY:
            raise _ProtocolError("body too large")
        chunk = reader.read(size)
        if len(chunk) != size:
            raise _ProtocolError("incomplete chunk")
        chunks.append(chunk)
        if reader.readline(_MAX_LINE + 1).strip():
            raise _ProtocolError("missing CRLF after a chunk")


def _read_to_end(reader: IO[bytes]) -> bytes:
    body = reader.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        raise _ProtocolError("body too large")
    return body
