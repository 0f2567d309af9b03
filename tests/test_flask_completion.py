"""When a WSGI request's record completes (issue 12): once the app has produced the whole body, never before, once.

A body complete when the app returns (Flask's usual responses, a list) completes at once: Werkzeug's test client,
used the usual way (no `buffered=True`, no `with`, the response never closed), calls no `close()`. A streamed body
completes when its iterator ends or fails, or on `close()` when the server stops early (the client went away). The
app under test annotates its streamed events from the generator, in and after the last chunk: a record completed
before the body was produced misses that metadata. Then the same four cases through real servers: Werkzeug's dev
server (what `flask run` serves), gunicorn's sync worker and waitress.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from centure_audit_middleware import Auditor, AuditWSGIMiddleware, RouteMap, audit, audited
from centure_audit_middleware.context import RequestContext
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.types import StartResponse, WSGIEnviron

from .apps.flask_completion_app import ACTOR, CHUNK, ENDLESS_CHUNKS, ORG, ROWS, create_app
from .conftest import delivered
from .reliability_support import REPO_ROOT, ProcessGroup, free_port

ROWS_BODY = b"".join(f"row {i}\n".encode() for i in range(ROWS))
STREAM_METADATA = {"last_row": ROWS - 1, "rows": ROWS}


@pytest.fixture
def completions(auditor: Auditor, monkeypatch: pytest.MonkeyPatch) -> list[RequestContext]:
    """Every call of `auditor.complete`, in order: a request completed twice shows up twice here, whatever
    `Auditor.complete` itself would make of it."""
    calls: list[RequestContext] = []
    complete = auditor.complete

    def spy(ctx: RequestContext) -> None:
        calls.append(ctx)
        complete(ctx)

    monkeypatch.setattr(auditor, "complete", spy)
    return calls


# -- Werkzeug's test client, used the usual way --------------------------------------------------------------------
@pytest.fixture
def app(auditor: Auditor, sink: MemorySink) -> Flask:
    return create_app(auditor, sink)


def test_test_client_records_a_response_nobody_closes(
    app: Flask, auditor: Auditor, sink: MemorySink, completions: list[RequestContext]
) -> None:
    response = app.test_client().post("/items/r1")
    assert response.status_code == 200
    assert len(completions) == 1
    [event] = delivered(auditor, sink)
    assert (event.action, event.metadata) == ("item.update", {"source": "view"})
    response.close()  # the server's close() after the record completed: nothing more
    assert len(completions) == 1


def test_test_client_records_a_streamed_response_once_its_body_is_read(
    app: Flask, auditor: Auditor, sink: MemorySink, completions: list[RequestContext]
) -> None:
    response = app.test_client().get("/export/r1")
    assert response.get_data() == ROWS_BODY
    [event] = delivered(auditor, sink)
    assert (event.action, event.metadata) == ("export.download", STREAM_METADATA)
    assert len(completions) == 1


def test_a_streamed_record_completes_only_after_the_generator_returns(
    app: Flask, auditor: Auditor, completions: list[RequestContext]
) -> None:
    response = app.test_client().get("/export/r1")
    chunks = iter(response.response)
    assert [next(chunks) for _ in range(ROWS)] == [f"row {i}\n".encode() for i in range(ROWS)]
    assert completions == []  # the last chunk is out, but the generator's code after it has yet to run
    assert list(chunks) == []
    assert len(completions) == 1
    assert completions[0].metadata == STREAM_METADATA
    response.close()
    assert len(completions) == 1


def test_test_client_records_a_stream_that_fails_midway_once_as_a_500(
    app: Flask, auditor: Auditor, sink: MemorySink, completions: list[RequestContext]
) -> None:
    response = app.test_client().get("/broken/r1")
    assert response.status_code == 200  # the status line went out before the failure
    with pytest.raises(RuntimeError, match="mid-stream"):
        response.get_data()
    [event] = delivered(auditor, sink)
    assert event.action == "export.broken"
    assert event.request is not None and event.request.status == 500
    response.close()
    assert len(completions) == 1


def test_test_client_records_a_view_that_raises_as_flask_answers_it(auditor: Auditor, sink: MemorySink) -> None:
    app = create_app(auditor, sink)

    @app.post("/crash")
    @audited("thing.crash", record_failures=True)
    def crash() -> Any:
        raise RuntimeError("boom")

    assert app.test_client().post("/crash").status_code == 500  # Flask's own 500 page, a complete body
    [event] = delivered(auditor, sink)
    assert event.action == "thing.crash" and event.request is not None and event.request.status == 500


# -- the WSGI contract, without a framework -------------------------------------------------------------------------
def _raw_app(auditor: Auditor, body: Callable[[StartResponse], Iterable[bytes]]) -> AuditWSGIMiddleware:
    auditor.routes = RouteMap({"POST /raw": "raw.call"})

    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        ctx = audit.request
        ctx.route = "/raw"  # what a framework adapter does
        audit.actor(ACTOR)
        audit.organization(ORG)
        return body(start_response)

    return AuditWSGIMiddleware(app, auditor=auditor)


def _environ() -> WSGIEnviron:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/raw", "REMOTE_ADDR": "192.0.2.1"}


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
    return len


@pytest.mark.parametrize("kind", [list, tuple])
def test_a_sequence_body_completes_before_the_server_iterates_and_is_passed_on_untouched(
    auditor: Auditor, completions: list[RequestContext], kind: type[list[bytes]] | type[tuple[bytes, ...]]
) -> None:
    body = kind([b"done"])

    def produce(start_response: StartResponse) -> Iterable[bytes]:
        start_response("201 Created", [])
        return body

    result = _raw_app(auditor, produce)(_environ(), _start_response)
    assert result is body  # no wrapper: servers keep their len() shortcut (Content-Length from a one-item list)
    assert [ctx.status for ctx in completions] == [201]


def test_a_generator_body_completes_when_exhausted_with_a_status_set_while_iterating(
    auditor: Auditor, completions: list[RequestContext]
) -> None:
    def produce(start_response: StartResponse) -> Iterator[bytes]:
        start_response("202 Accepted", [])  # PEP 3333 allows it as late as the first chunk
        yield b"a"
        audit.metadata(after="a")  # the iteration runs in the request's audit context
        yield b"b"

    result = _raw_app(auditor, produce)(_environ(), _start_response)
    chunks = iter(result)
    assert (next(chunks), next(chunks), completions) == (b"a", b"b", [])
    with pytest.raises(StopIteration):
        next(chunks)
    [ctx] = completions
    assert (ctx.status, ctx.metadata) == (202, {"after": "a"})
    result.close()  # type: ignore[attr-defined]
    assert len(completions) == 1


def test_an_iterable_that_starts_the_response_in_iter_is_not_taken_for_complete(
    auditor: Auditor, completions: list[RequestContext]
) -> None:
    class Deferred:
        def __init__(self, start_response: StartResponse) -> None:
            self.start_response = start_response

        def __iter__(self) -> Iterator[bytes]:
            self.start_response("200 OK", [])
            audit.metadata(iterated=True)
            return iter([b"x"])

    result = _raw_app(auditor, Deferred)(_environ(), _start_response)
    assert completions == []
    assert list(result) == [b"x"]
    [ctx] = completions
    assert (ctx.status, ctx.metadata) == (200, {"iterated": True})


def test_close_before_the_end_completes_once_and_the_generator_cleans_up_in_context(
    auditor: Auditor, sink: MemorySink, completions: list[RequestContext]
) -> None:
    def produce(start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        try:
            while True:
                yield b"more"
        finally:
            audit.metadata(ended="closed")  # runs inside close(): the server stopped early

    result = _raw_app(auditor, produce)(_environ(), _start_response)
    chunks = iter(result)
    assert next(chunks) == b"more"
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]  # a second close() is harmless
    [event] = delivered(auditor, sink)
    assert event.metadata == {"ended": "closed"}
    assert event.request is not None and event.request.status == 200  # the app did nothing wrong
    assert len(completions) == 1


def test_a_failure_mid_stream_completes_once_as_a_500(auditor: Auditor, completions: list[RequestContext]) -> None:
    def produce(start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"a"
        raise OSError("disk gone")

    result = _raw_app(auditor, produce)(_environ(), _start_response)
    chunks = iter(result)
    next(chunks)
    with pytest.raises(OSError, match="disk gone"):
        next(chunks)
    assert [ctx.status for ctx in completions] == [500]
    result.close()  # type: ignore[attr-defined]
    assert len(completions) == 1


def test_a_body_never_iterated_completes_on_close(auditor: Auditor, completions: list[RequestContext]) -> None:
    def produce(start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"never asked for"

    result = _raw_app(auditor, produce)(_environ(), _start_response)
    assert completions == []
    result.close()  # type: ignore[attr-defined]
    assert len(completions) == 1


# -- real servers -----------------------------------------------------------------------------------------------------
SERVERS = ["werkzeug", "gunicorn", "waitress"]


def _serve_in_thread(tmp: Path) -> Iterator[str]:
    """Werkzeug's dev server, as `flask run` starts it (threaded), in this process."""
    from werkzeug.serving import make_server

    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp / "outbox.db", geoip=False, commit_interval=0.01)
    server = make_server("127.0.0.1", 0, create_app(auditor, sink), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="werkzeug-dev-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        auditor.close(timeout=5)


def _serve_in_process(kind: str, tmp: Path) -> Iterator[str]:
    port = free_port()
    target = "tests.apps.flask_completion_app:app"
    if kind == "gunicorn":
        argv = [sys.executable, "-m", "gunicorn", target, "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        argv += ["--worker-class", "sync", "--no-control-socket", "--log-level", "warning"]
    else:
        argv = [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=4", target]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FLASK_COMPLETION_OUTBOX": str(tmp / "outbox.db")}
    group = ProcessGroup(tmp)
    try:
        proc = group.spawn(kind, argv, env, port=port)
        proc.wait_ready()
        yield proc.url
    finally:
        group.close()


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of the app served by each server in turn."""
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(kind)
    if kind == "werkzeug":
        yield from _serve_in_thread(tmp)
    else:
        yield from _serve_in_process(kind, tmp)


def _run_id() -> str:
    return os.urandom(4).hex()


def _events_once_there(url: str, run: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The events recorded for `run`, once there are any, and again a moment later: a duplicate from a late close()
    has had time to arrive."""

    def read() -> list[dict[str, Any]]:
        response = httpx.get(url + "/_events", timeout=30)
        assert response.status_code == 200, response.text
        return [e for e in response.json() if e["target"] == run]

    deadline = time.monotonic() + timeout
    while not read():
        assert time.monotonic() < deadline, f"nothing recorded for {run} in {timeout} s"
        time.sleep(0.05)
    time.sleep(0.5)
    return read()


def _raw_get(url: str, path: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    return sock


@pytest.mark.slow
def test_server_records_a_response_once(server: str) -> None:
    run = _run_id()
    assert httpx.post(f"{server}/items/{run}", timeout=30).json() == {"updated": run}
    [event] = _events_once_there(server, run)
    assert (event["action"], event["metadata"], event["status"]) == ("item.update", {"source": "view"}, 200)


@pytest.mark.slow
def test_server_records_a_streamed_response_once_with_what_its_generator_added(server: str) -> None:
    run = _run_id()
    assert httpx.get(f"{server}/export/{run}", timeout=30).content == ROWS_BODY
    [event] = _events_once_there(server, run)
    assert (event["action"], event["metadata"], event["status"]) == ("export.download", STREAM_METADATA, 200)


@pytest.mark.slow
def test_server_records_a_stream_that_fails_midway_once_as_a_500(server: str) -> None:
    run = _run_id()
    with _raw_get(server, f"/broken/{run}") as sock:
        received = b""
        while chunk := sock.recv(65536):  # the server gives up on the response and closes the connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and b"row 0" in received
    [event] = _events_once_there(server, run)
    assert (event["action"], event["status"], event["metadata"]) == ("export.broken", 500, {"http_status": 500})


@pytest.mark.slow
def test_server_records_a_client_that_hangs_up_mid_stream_once(server: str) -> None:
    run = _run_id()
    with _raw_get(server, f"/endless/{run}") as sock:
        received = b""
        while len(received) < 2 * CHUNK:  # well into the body
            chunk = sock.recv(65536)
            assert chunk, "the server closed the stream"
            received += chunk
        # SO_LINGER 0: close() sends RST, so the server's next write fails at once rather than filling buffers.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    [event] = _events_once_there(server, run)
    assert (event["action"], event["status"]) == ("export.endless", 200)
    assert event["metadata"]["ended"] == "closed"  # completed on the server's close(), not by running to the end
    assert event["metadata"]["chunks"] < ENDLESS_CHUNKS
