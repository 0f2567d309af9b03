"""The audit event is handed off only after the response's last chunk went to the server, never before.

Handing it off earlier would still record the right event, which is why nothing else in the suite notices: but the
hand-off then runs (and, with a slow pipeline, waits) while the client is still waiting for its last bytes, and a
streamed body's annotations made in its last chunk are lost. Each test here plays the server itself and writes down,
at each message it receives, how many events the Auditor has handed off so far. `Auditor.for_tests()` builds an
event synchronously where it is handed off, so the count at each step is exact: no thread, no timing.

- ASGI: the hand-off follows the final `http.response.body` (more_body false), for a plain FastAPI response and for
  a StreamingResponse.
- WSGI: a streamed Flask body hands off once the iterator is exhausted (not at the first chunk, nor the last one),
  or at `close()` if the server stops early; never twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from flask import Flask, Response, stream_with_context

from centure_audit_middleware import Actor, Auditor, audit, audited
from centure_audit_middleware.types import Message

ORG = "org_01TEST"
ALICE = Actor("user_alice", name="Alice")
CHUNKS = [b"row 0\n", b"row 1\n", b"row 2\n"]


@pytest.fixture
def auditor() -> Auditor:
    return Auditor.for_tests(geoip=False)


def handed_off(auditor: Auditor) -> int:
    assert auditor.audit_log is not None
    return len(auditor.audit_log.events)


# -- ASGI -----------------------------------------------------------------------------------------------------------


def fastapi_app(auditor: Auditor) -> FastAPI:
    app = FastAPI()

    @app.post("/items")
    @audited("item.create")
    async def create() -> dict[str, str]:
        audit.actor(ALICE)
        audit.organization(ORG)
        return {"id": "item_1"}

    @app.get("/export")
    @audited("export.download")
    async def export() -> StreamingResponse:
        audit.actor(ALICE)
        audit.organization(ORG)

        async def rows() -> AsyncIterator[bytes]:
            for chunk in CHUNKS:
                yield chunk
            audit.metadata(rows=len(CHUNKS))  # annotated after the last row: lost by an early hand-off

        return StreamingResponse(rows(), media_type="text/plain")

    auditor.install(app)
    return app


async def serve_asgi(app: FastAPI, auditor: Auditor, method: str, path: str) -> list[tuple[str, bool, int]]:
    """One request as an ASGI server makes it: (message type, more_body, events handed off when it arrived)."""
    timeline: list[tuple[str, bool, int]] = []
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("192.0.2.1", 50000),
        "server": ("testserver", 80),
    }
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:  # after the request body: the client is connected until the response is complete
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        timeline.append((message["type"], bool(message.get("more_body", False)), handed_off(auditor)))

    await app(scope, receive, send)
    return timeline


@pytest.mark.anyio
async def test_asgi_hands_off_after_the_final_body_message(auditor: Auditor) -> None:
    timeline = await serve_asgi(fastapi_app(auditor), auditor, "POST", "/items")

    assert timeline == [("http.response.start", False, 0), ("http.response.body", False, 0)]
    assert handed_off(auditor) == 1
    assert auditor.audit_log is not None
    assert auditor.audit_log.actions == ["item.create"]


@pytest.mark.anyio
async def test_asgi_streaming_hands_off_after_the_last_chunk(auditor: Auditor) -> None:
    timeline = await serve_asgi(fastapi_app(auditor), auditor, "GET", "/export")

    bodies = [(more, count) for kind, more, count in timeline if kind == "http.response.body"]
    assert [count for _more, count in bodies] == [0] * len(bodies)  # nothing handed off while the body flows
    assert bodies[-1][0] is False  # the final message closes the body...
    assert sum(more for more, _count in bodies) == len(CHUNKS)  # ...after every chunk went out on its own
    assert handed_off(auditor) == 1  # ...and only then is the event handed off
    assert auditor.audit_log is not None
    [event] = auditor.audit_log.events
    assert event.metadata == {"rows": len(CHUNKS)}


# -- WSGI -----------------------------------------------------------------------------------------------------------


def flask_app(auditor: Auditor) -> Flask:
    app = Flask(__name__)

    @app.get("/export")
    @audited("export.download")
    def export() -> Response:
        audit.actor(ALICE)
        audit.organization(ORG)

        def rows() -> Iterator[bytes]:
            yield from CHUNKS
            audit.metadata(rows=len(CHUNKS))

        return Response(stream_with_context(rows()), mimetype="text/plain")

    auditor.install(app)
    return app


def start_wsgi(app: Flask, path: str) -> Iterator[bytes]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": None,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        assert status.startswith("200")
        return None

    return iter(app(environ, start_response))


def test_wsgi_stream_hands_off_once_exhausted(auditor: Auditor) -> None:
    body = start_wsgi(flask_app(auditor), "/export")
    counts = []
    for chunk in body:
        assert chunk in CHUNKS
        counts.append(handed_off(auditor))  # the server has this chunk, and is about to ask for the next

    assert counts == [0] * len(CHUNKS)
    assert handed_off(auditor) == 1  # the iterator is exhausted
    close = getattr(body, "close", None)
    assert close is not None
    close()  # the server's close() (PEP 3333) after exhaustion: not a second hand-off
    assert handed_off(auditor) == 1
    assert auditor.audit_log is not None
    [event] = auditor.audit_log.events
    assert event.metadata == {"rows": len(CHUNKS)}


def test_wsgi_stream_closed_early_hands_off_at_close(auditor: Auditor) -> None:
    body = start_wsgi(flask_app(auditor), "/export")
    assert next(body) == CHUNKS[0]
    assert handed_off(auditor) == 0
    close = getattr(body, "close", None)
    assert close is not None
    close()  # the client went away after the first chunk
    assert handed_off(auditor) == 1
