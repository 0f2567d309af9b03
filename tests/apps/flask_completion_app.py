"""The Flask app of the WSGI completion tests (tests/test_flask_completion.py): when is a request's record complete?

`create_app(auditor, sink)` builds it in-process (Werkzeug's test client, the Werkzeug dev server in a thread);
servers in another process (gunicorn, waitress) load ``tests.apps.flask_completion_app:app``, built on first access
with its outbox at ``$FLASK_COMPLETION_OUTBOX``. Every audited route takes a `run` id as its target, so that the tests
sharing one server tell their events apart; the unaudited `GET /_events` flushes the pipeline and answers what the
MemorySink received, `GET /health` answers once the server is up.

The streamed routes annotate the event from their generators, in the last chunk and after it: an event completed
before the body was produced lacks that metadata (or the generator fails, annotating a finished record).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, stream_with_context

from centure_audit_middleware import Actor, Auditor, Target, audit, audited
from centure_audit_middleware.sinks import MemorySink

__all__ = ["ACTOR", "CHUNK", "ENDLESS_CHUNKS", "ORG", "ROWS", "create_app"]

ACTOR = Actor("user_completion", name="Completion Test")
ORG = "org_01TEST"
ROWS = 3
#: The endless stream: CHUNK bytes at a time, paced, up to ENDLESS_CHUNKS (~10 s): a client that hangs up mid-way is
#: noticed by the server long before the end (the metadata says where it ended).
CHUNK = 16 * 1024
ENDLESS_CHUNKS = 2000


def create_app(auditor: Auditor, sink: MemorySink) -> Flask:
    app = Flask(__name__)

    @app.before_request
    def identify() -> None:
        if audit.active:
            audit.actor(ACTOR)
            audit.organization(ORG)

    @app.post("/items/<run>")
    @audited("item.update", targets=[Target.from_path("item", "run")])
    def update(run: str) -> Any:
        audit.metadata(source="view")
        return jsonify(updated=run)

    @app.get("/export/<run>")
    @audited("export.download", targets=[Target.from_path("export", "run")])
    def export(run: str) -> Response:
        def rows() -> Iterator[str]:
            for i in range(ROWS):
                if i == ROWS - 1:
                    audit.metadata(last_row=i)  # while producing the last chunk
                yield f"row {i}\n"
            audit.metadata(rows=ROWS)  # after the last chunk: runs when the server asks for one more

        return Response(stream_with_context(rows()), mimetype="text/plain")

    @app.get("/broken/<run>")
    @audited("export.broken", targets=[Target.from_path("export", "run")], record_failures=True)
    def broken(run: str) -> Response:
        def rows() -> Iterator[str]:
            yield "row 0\n"
            raise RuntimeError("the export's data source failed mid-stream")

        return Response(stream_with_context(rows()), mimetype="text/plain")

    @app.get("/endless/<run>")
    @audited("export.endless", targets=[Target.from_path("export", "run")])
    def endless(run: str) -> Response:
        def chunks() -> Iterator[bytes]:
            produced = 0
            try:
                while produced < ENDLESS_CHUNKS:
                    produced += 1
                    yield b"x" * CHUNK
                    time.sleep(0.005)
            except GeneratorExit:
                audit.metadata(ended="closed", chunks=produced)  # the server closed us: the client went away
                raise
            audit.metadata(ended="exhausted", chunks=produced)

        return Response(stream_with_context(chunks()), mimetype="application/octet-stream")

    @app.get("/health")
    def health() -> Any:
        return jsonify(ok=True)

    @app.get("/_events")
    def events() -> Any:
        assert auditor.flush(timeout=10), auditor.stats()
        return jsonify(
            [
                {
                    "action": e.action,
                    "target": e.targets[0].id if e.targets else None,
                    "metadata": dict(e.metadata),
                    "status": e.request.status if e.request is not None else None,
                }
                for e in sink.events
            ]
        )

    auditor.install(app)
    return app


_apps: dict[str, Flask] = {}


def __getattr__(name: str) -> Any:
    # Built on first access, so that importing create_app in the test process starts no auditor.
    if name != "app":
        raise AttributeError(name)
    if "app" not in _apps:
        sink = MemorySink()
        auditor = Auditor(sinks=[sink], outbox=os.environ["FLASK_COMPLETION_OUTBOX"], geoip=False, commit_interval=0.01)
        _apps["app"] = create_app(auditor, sink)
    return _apps["app"]
