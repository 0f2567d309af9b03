"""The WorkOS sink's lean default transport (`transport="stdlib"`, sinks/stdlib_http.py) against the SDK's own
httpx2 client (`transport="sdk"`): the same requests reach the emulator, the same outcomes come back, and proxy
environment variables are honoured, checked through a real forwarding proxy on loopback (plain HTTP in absolute
form, and CONNECT tunnels to a TLS front of the emulator)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from centure_audit_middleware import Actor, AuditEvent, Target
from centure_audit_middleware.events import EventContext, new_event_id
from centure_audit_middleware.sinks import WorkOSSink
from centure_audit_middleware.sinks.base import PauseDelivery, RejectEvent, RetryLater, SinkError
from centure_audit_middleware.sinks.stdlib_http import Route, StdlibBackend
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import ALICE, ORG

TRANSPORTS = ("sdk", "stdlib")


def make_event(i: int = 0, **changes: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "id": new_event_id(),
        "organization_id": ORG,
        "action": "document.update",
        "occurred_at": dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
        "actor": ALICE,
        "targets": (Target("document", f"doc_{i}", "Quarterly plan", metadata={"size": 3}),),
        "context": EventContext("203.0.113.7", "Mozilla/5.0"),
        "metadata": {"seq": i, "flag": True},
    }
    fields.update(changes)
    return AuditEvent(**fields)


def make_sink(url: str, api_key: str, transport: str, **kwargs: Any) -> WorkOSSink:
    return WorkOSSink(api_key=api_key, base_url=url, transport=transport, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the machine running the tests (in either case), nor a CA bundle override."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)  # CGI: urllib would ignore HTTP_PROXY
    return monkeypatch


def test_stdlib_is_the_default_transport(workos_emulator: WorkOSEmulator, no_proxy_env: Any) -> None:
    sink = WorkOSSink(api_key=workos_emulator.api_key, base_url=workos_emulator.url)
    try:
        assert sink.transport == "stdlib"
        assert isinstance(sink._backend, StdlibBackend)
        sink.send(make_event())
    finally:
        sink.close()
    assert len(workos_emulator.events) == 1
    with pytest.raises(ValueError, match="transport"):
        WorkOSSink(api_key="sk_test", transport="httpx")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- (1) the same requests


def test_both_transports_send_the_same_requests(workos_emulator: WorkOSEmulator, no_proxy_env: Any) -> None:
    events = [
        make_event(0),
        make_event(1, metadata={}, targets=(), context=EventContext("2001:db8::1")),  # minimal
        make_event(2, actor=Actor("svc", "api_key", name="Ünïcode ✓ 日本"), metadata={"note": "naïve 🚀", "n": 1.5}),
        make_event(3, version=2, targets=(Target("a", "1"), Target("b", "2", metadata={"k": "v"}))),
    ]
    seen: dict[str, list[Any]] = {}
    for transport in TRANSPORTS:
        workos_emulator.reset()
        sink = make_sink(workos_emulator.url, workos_emulator.api_key, transport)
        try:
            for event in events:
                sink.send(event)
        finally:
            sink.close()
        seen[transport] = workos_emulator.requests
        assert [r.status for r in seen[transport]] == [200] * len(events)
    for event, sdk, lean in zip(events, seen["sdk"], seen["stdlib"], strict=True):
        for request in (sdk, lean):
            assert (request.method, request.path, request.query) == ("POST", "/audit_logs/events", "")
            assert request.header("idempotency-key") == event.id
            assert request.header("authorization") == f"Bearer {workos_emulator.api_key}"
            assert request.header("content-length") == str(len(request.body))
        assert json.loads(lean.body) == json.loads(sdk.body)
        assert json.loads(lean.body)["event"]["occurred_at"] == "2026-01-02T03:04:05.678Z"
        for name in ("idempotency-key", "authorization", "content-type", "user-agent"):
            assert lean.header(name) == sdk.header(name), name
    # One keep-alive connection carried all four requests of the lean transport.
    assert seen["stdlib"][0].header("host") == f"127.0.0.1:{workos_emulator.port}"


# ---------------------------------------------------------------------- (3) the same outcomes


@dataclass(frozen=True)
class Outcome:
    kind: type[SinkError] | None
    retry_after: float | None = None
    message: str | None = None


def _send(sink: WorkOSSink, event: AuditEvent) -> Outcome:
    try:
        sink.send(event)
    except SinkError as exc:
        return Outcome(type(exc), getattr(exc, "retry_after", None), str(exc))
    return Outcome(None)


FAULTS: dict[str, tuple[Callable[[WorkOSEmulator], None], Outcome]] = {
    "400": (lambda e: e.fail_next(400), Outcome(RejectEvent)),
    "401": (lambda e: e.fail_next(401), Outcome(PauseDelivery)),
    "403": (lambda e: e.fail_next(403), Outcome(PauseDelivery)),
    "404": (lambda e: e.fail_next(404), Outcome(RejectEvent)),
    "408": (lambda e: e.fail_next(408), Outcome(RetryLater)),
    "413": (lambda e: e.fail_next(413), Outcome(RejectEvent)),
    "422": (lambda e: e.fail_next(422), Outcome(RejectEvent)),
    "429": (lambda e: e.fail_next(429, retry_after="7"), Outcome(RetryLater, 7.0)),
    "429-no-retry-after": (lambda e: e.fail_next(429), Outcome(RetryLater)),
    "500": (lambda e: e.fail_next(500), Outcome(RetryLater)),
    "503": (lambda e: e.fail_next(503, retry_after="5"), Outcome(RetryLater, 5.0)),
    # Twice: the lean transport resends once on a fresh connection when a reused one fails before any answer.
    "reset": (lambda e: e.reset_connections(2), Outcome(RetryLater)),
    "timeout": (lambda e: e.set_latency(1.0), Outcome(RetryLater)),
}


def test_both_transports_classify_outcomes_alike(workos_emulator: WorkOSEmulator, no_proxy_env: Any) -> None:
    outcomes: dict[str, dict[str, Outcome]] = {}
    for transport in TRANSPORTS:
        sink = make_sink(workos_emulator.url, workos_emulator.api_key, transport, timeout=0.3)
        try:
            for name, (inject, _expected) in FAULTS.items():
                workos_emulator.reset()
                assert _send(sink, make_event()) == Outcome(None)  # a warm keep-alive connection first
                inject(workos_emulator)
                outcomes.setdefault(name, {})[transport] = _send(sink, make_event())
                workos_emulator.reset()
                assert _send(sink, make_event()) == Outcome(None), f"{transport} did not recover after {name}"
        finally:
            sink.close()
    for name, (_inject, expected) in FAULTS.items():
        sdk, lean = outcomes[name]["sdk"], outcomes[name]["stdlib"]
        assert (sdk.kind, sdk.retry_after) == (expected.kind, expected.retry_after), (name, sdk)
        assert (lean.kind, lean.retry_after) == (sdk.kind, sdk.retry_after), (name, lean, sdk)
        if name not in ("reset", "timeout"):  # the text of a network error names the HTTP library's exception
            assert lean.message == sdk.message, name
    assert "WorkOSTimeoutError" in str(outcomes["timeout"]["stdlib"].message)


# ---------------------------------------------------------------------- (2) proxies


@dataclass
class ForwardingProxy:
    """A real HTTP proxy on loopback: forwards absolute-form requests, tunnels CONNECT; records what it carried."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ForwardingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self) -> None:
                proxy.requests.append((self.command, self.path, self.headers.get("Proxy-Authorization")))

            def _forward(self) -> None:
                self._record()
                target = urlsplit(self.path)
                if not target.scheme or target.hostname is None:
                    self.send_error(400, "absolute-form request target expected")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
                conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=5)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    conn.request(self.command, path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                    self.send_response(response.status)
                    for name, value in response.getheaders():
                        if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def do_CONNECT(self) -> None:
                self._record()
                host, _, port = self.path.rpartition(":")
                self.close_connection = True
                try:
                    upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
                except OSError:
                    self.send_error(502)
                    return
                self.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pump(self.connection, upstream)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes (SSL sockets: their buffered plaintext too)."""
    try:
        while True:
            ready: list[socket.socket] = [s for s in (a, b) if isinstance(s, ssl.SSLSocket) and s.pending()]
            if not ready:
                ready, _, _ = select.select([a, b], [], [], 5)
                if not ready:
                    return
            for source in ready:
                data = source.recv(65536)
                if not data:
                    return
                (b if source is a else a).sendall(data)
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            b.close()


@pytest.fixture
def proxy() -> Iterator[ForwardingProxy]:
    proxy = ForwardingProxy().start()
    yield proxy
    proxy.stop()


def _events_path(proxy: ForwardingProxy) -> list[tuple[str, str, str | None]]:
    return [r for r in proxy.requests if r[1].endswith("/audit_logs/events") or r[0] == "CONNECT"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_http_proxy_is_used_and_no_proxy_bypasses_it(
    workos_emulator: WorkOSEmulator, proxy: ForwardingProxy, no_proxy_env: pytest.MonkeyPatch, transport: str
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://agent:s%3Acret@"))
    sink = make_sink(workos_emulator.url, workos_emulator.api_key, transport)
    try:
        for i in range(3):
            sink.send(make_event(i))
    finally:
        sink.close()
    expected_auth = "Basic " + base64.b64encode(b"agent:s:cret").decode()
    assert _events_path(proxy) == [("POST", f"{workos_emulator.url}audit_logs/events", expected_auth)] * 3
    assert len(workos_emulator.events) == 3
    # The proxy's own credentials stop at the proxy.
    assert all(r.header("proxy-authorization") is None for r in workos_emulator.requests)

    proxy.requests.clear()
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    sink = make_sink(workos_emulator.url, workos_emulator.api_key, transport)
    try:
        sink.send(make_event(9))
    finally:
        sink.close()
    assert proxy.requests == []
    assert len(workos_emulator.events) == 4


class TLSFront:
    """TLS on loopback in front of the emulator (a certificate for 127.0.0.1 from a throwaway CA)."""

    def __init__(self, upstream_port: int, directory: Path) -> None:
        self.ca_file, cert_file, key_file = _make_certificates(directory)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.handshakes += 1
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        _pump(tls, upstream)
        tls.close()

    def close(self) -> None:
        _close_listener(self.listener)


def _close_listener(listener: socket.socket) -> None:
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
    listener.close()


def _make_certificates(directory: Path) -> tuple[str, str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "centure test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(ca_file), str(cert_file), str(key_file)


@pytest.fixture
def tls_front(workos_emulator: WorkOSEmulator, tmp_path: Path) -> Iterator[TLSFront]:
    front = TLSFront(workos_emulator.port, tmp_path)
    yield front
    front.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_https_goes_through_a_connect_tunnel_and_verifies_tls(
    workos_emulator: WorkOSEmulator,
    proxy: ForwardingProxy,
    tls_front: TLSFront,
    no_proxy_env: pytest.MonkeyPatch,
    transport: str,
) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://agent:pw@"))
    no_proxy_env.setenv("SSL_CERT_FILE", tls_front.ca_file)
    url = f"https://127.0.0.1:{tls_front.port}/"
    sink = make_sink(url, workos_emulator.api_key, transport)
    try:
        for i in range(3):
            sink.send(make_event(i))
    finally:
        sink.close()
    assert len(workos_emulator.events) == 3
    auth = "Basic " + base64.b64encode(b"agent:pw").decode()
    # One tunnel (keep-alive through it), end-to-end TLS: the proxy saw CONNECT and nothing else.
    assert proxy.requests == [("CONNECT", f"127.0.0.1:{tls_front.port}", auth)]
    assert tls_front.handshakes == 1
    assert workos_emulator.requests[0].header("host") == f"127.0.0.1:{tls_front.port}"


def test_tls_is_verified(workos_emulator: WorkOSEmulator, tls_front: TLSFront, no_proxy_env: Any) -> None:
    """Without the test CA in the trust store, the TLS front's certificate is refused: a retry, nothing sent."""
    sink = make_sink(f"https://127.0.0.1:{tls_front.port}/", workos_emulator.api_key, "stdlib")
    try:
        outcome = _send(sink, make_event())
    finally:
        sink.close()
    assert outcome.kind is RetryLater
    assert "CERTIFICATE_VERIFY_FAILED" in str(outcome.message)
    assert workos_emulator.requests == []


# ---------------------------------------------------------------------- route decisions (no network)


def test_https_target_behind_http_proxy_is_tunnelled(no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", "http://user:p%40ss@proxy.internal:3128")
    no_proxy_env.setenv("HTTP_PROXY", "http://other.internal:8080")
    backend = StdlibBackend()
    route = backend.route("https://api.workos.com/audit_logs/events")
    assert route == Route(
        "https",
        "api.workos.com",
        443,
        ("proxy.internal", 3128),
        "Basic " + base64.b64encode(b"user:p@ss").decode(),
        tunnel=True,
        fixed_headers="Host: api.workos.com\r\n",
    )
    conn = backend.http_connection(route, timeout=3.0)
    assert type(conn).__name__ == "HTTPSConnection"
    assert (conn.host, conn.port, conn.timeout) == ("proxy.internal", 3128, 3.0)
    assert (conn._tunnel_host, conn._tunnel_port) == ("api.workos.com", 443)  # type: ignore[attr-defined]
    assert conn._tunnel_headers == {"Proxy-Authorization": route.proxy_authorization}  # type: ignore[attr-defined]
    assert conn.sock is None  # built, not connected

    plain = backend.route("http://localhost:8000/x")
    assert (plain.proxy, plain.tunnel, plain.request_prefix) == (
        ("other.internal", 8080),
        False,
        "http://localhost:8000",
    )


def test_route_is_decided_once_per_host(no_proxy_env: pytest.MonkeyPatch) -> None:
    backend = StdlibBackend()
    first = backend.route("https://api.workos.com/audit_logs/events")
    assert first.proxy is None
    no_proxy_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert backend.route("https://api.workos.com/other") is first  # kept, as httpx2 reads the environment once
    assert StdlibBackend().route("https://api.workos.com/").proxy == ("proxy.internal", 3128)


@pytest.mark.parametrize(
    ("env", "proxy"),
    [
        ({"ALL_PROXY": "proxy.internal:1080"}, ("proxy.internal", 1080)),  # no scheme: http
        ({"https_proxy": "http://proxy.internal", "NO_PROXY": ".workos.com"}, None),
        ({"https_proxy": "http://proxy.internal", "NO_PROXY": "workos.com"}, None),
        ({"https_proxy": "http://proxy.internal", "NO_PROXY": "*"}, None),
        ({"https_proxy": "http://proxy.internal", "NO_PROXY": "example.com"}, ("proxy.internal", 80)),
        ({"http_proxy": "http://proxy.internal"}, None),  # an http proxy variable does not cover https targets
    ],
)
def test_proxy_environment(no_proxy_env: pytest.MonkeyPatch, env: dict[str, str], proxy: object) -> None:
    for name, value in env.items():
        no_proxy_env.setenv(name, value)
    assert StdlibBackend().route("https://api.workos.com/").proxy == proxy


@pytest.mark.parametrize("proxy_url", ["https://proxy.internal:443", "socks5://proxy.internal:1080"])
def test_unusable_proxy_fails_when_the_sink_is_built(no_proxy_env: pytest.MonkeyPatch, proxy_url: str) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", proxy_url)
    with pytest.raises(ValueError, match="transport='sdk'"):
        WorkOSSink(api_key="sk_test", base_url="https://api.workos.com")
    if proxy_url.startswith("https"):  # SOCKS needs httpx2's optional socksio even there
        WorkOSSink(api_key="sk_test", base_url="https://api.workos.com", transport="sdk").close()


# ---------------------------------------------------------------------- HTTP/1.1 framing (a scripted server)


class ScriptedServer:
    """Answers each request with the next canned response (closing the connection after it when told to);
    records the heads of the requests."""

    def __init__(self, responses: list[tuple[bytes, bool]]) -> None:
        self.responses = list(responses)
        self.heads: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.responses:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                while self.responses:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            break
                        head += line
                    if not head.endswith(b"\r\n\r\n"):
                        break
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            reader.read(int(line.partition(b":")[2]))
                    self.heads.append(head)
                    response, close = self.responses.pop(0)
                    conn.sendall(response)
                    if close:
                        break

    def close(self) -> None:
        _close_listener(self.listener)


def test_response_framing(no_proxy_env: Any) -> None:
    server = ScriptedServer(
        [
            # chunked, with a chunk extension and a trailer
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-ID: a\r\n\r\n"
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
                False,
            ),
            # an informational response first, a folded header, a repeated header
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nRetry-After:\r\n 3\r\nVia: a\r\nVia: b\r\n"
                b"Content-Length: 2\r\n\r\n{}",
                False,
            ),
            # no length: the body ends with the connection
            (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", True),
            # HTTP/1.0 keeps nothing alive; 204 has no body
            (b"HTTP/1.0 204 No Content\r\n\r\n", True),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nend", True),
        ]
    )
    backend = StdlibBackend()
    try:

        def get() -> Any:
            return backend.request("GET", server.url + "x?q=1", headers={"A": "b"}, content=None, timeout=2)

        first = get()
        assert (first.status_code, first.content, first.headers.get("x-request-id")) == (200, b"hello world", "a")
        second = get()
        assert second.status_code == 429
        assert second.headers.get("Retry-After") == "3"
        assert second.headers["via"] == "a, b"
        assert second.content == b"{}"
        assert get().content == b"until close"
        assert get().status_code == 204
        assert get().content == b"end"
    finally:
        backend.close()
        server.close()
    assert len(server.heads) == 5
    assert server.heads[0].startswith(b"GET /x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nA: b\r\n" in server.heads[0]
    assert b"Content-Length" not in server.heads[0]


def test_header_injection_is_refused(workos_emulator: WorkOSEmulator, no_proxy_env: Any) -> None:
    backend = StdlibBackend()
    try:
        with pytest.raises(ValueError, match="invalid header"):
            backend.request(
                "POST", workos_emulator.url, headers={"Idempotency-Key": "k\r\nX-Evil: 1"}, content=b"{}", timeout=2
            )
    finally:
        backend.close()
    assert workos_emulator.requests == []


def test_a_connection_closed_while_idle_is_replaced(workos_emulator: WorkOSEmulator, no_proxy_env: Any) -> None:
    sink = make_sink(workos_emulator.url, workos_emulator.api_key, "stdlib")
    try:
        sink.send(make_event(0))
        workos_emulator.set_down(True)  # closes every open connection
        workos_emulator.set_down(False)
        time.sleep(0.05)
        sink.send(make_event(1))  # the stale connection fails before an answer: resent on a fresh one
    finally:
        sink.close()
    assert len(workos_emulator.events) == 2


def test_a_closed_backend_reconnects(workos_emulator: WorkOSEmulator, no_proxy_env: Any) -> None:
    backend = StdlibBackend()
    url = workos_emulator.url + "audit_logs/events"
    try:
        for _ in range(2):
            response = backend.request("POST", url, headers={}, content=b"{}", timeout=2)
            assert response.status_code == 401  # no API key: answered, over a connection close() then ended
            backend.close()
    finally:
        backend.close()
    assert len(workos_emulator.requests) == 2


def test_a_bad_ca_bundle_fails_when_the_sink_is_built(no_proxy_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_proxy_env.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(FileNotFoundError):
        WorkOSSink(api_key="sk_test", base_url="https://api.workos.com")
    WorkOSSink(api_key="sk_test", base_url="http://127.0.0.1:9").close()  # plain HTTP needs no CA bundle
