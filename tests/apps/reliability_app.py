"""The app the process-level reliability tests serve: a FastAPI app and a Flask app, configured from the environment.

Served as ``tests.apps.reliability_app:fastapi_app`` (uvicorn, gunicorn's UvicornWorker) or ``:flask_app`` (gunicorn
sync / gthread). Each is built on first access, so a process only pays for (and installs an auditor into) the one it
serves; under ``gunicorn --preload`` that first access happens in the master, before the fork.

The auditor is ``Auditor.from_env()`` (WORKOS_API_KEY, WORKOS_BASE_URL, CENTURE_AUDIT_OUTBOX, CENTURE_AUDIT_STORE=off,
CENTURE_AUDIT_RECORD_FAILURES) plus explicit test settings read from ``RELIABILITY_*`` variables:

| variable | meaning |
| --- | --- |
| `RELIABILITY_AUDIT` | `0`: no auditor at all (the baseline a test compares responses against) |
| `RELIABILITY_FLUSH_TIMEOUT` | `Auditor(flush_timeout=)`, the shutdown flush budget (default 5 s) |
| `RELIABILITY_RETRY_MAX_DELAY` | `RetryPolicy(max_delay=)`, so that a drain after an outage is measured in seconds |
| `RELIABILITY_LEASE` | `Auditor(lease=...)` |
| `RELIABILITY_RECORD_AT_START` | record this many events (`start-<pid>-<i>`) as soon as the app is built |
| `RELIABILITY_COMMIT_INTERVAL` | `Auditor(commit_interval=)`: an hour leaves only durable records committed at once |
| `RELIABILITY_WORKOS_TIMEOUT` | the WorkOS sink's request timeout (default 10 s; then WorkOS is the only sink) |

``centure-audit relay --auditor tests.apps.reliability_app:auditor`` gives a relay the same configuration (retry
policy, lease, WorkOS timeout): `auditor` is `make_auditor()`, built on first access.
"""

from __future__ import annotations

import faulthandler
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from centure_audit_middleware import Actor, Auditor, Target, audit, audited
from centure_audit_middleware.delivery.policy import RetryPolicy

if TYPE_CHECKING:
    from fastapi import FastAPI
    from flask import Flask

__all__ = ["ACTION", "ACTOR", "DUMP_STACKS_SIGNAL", "ORG", "create_fastapi_app", "create_flask_app", "make_auditor"]

ACTION = "reliability.test"
ORG = "org_01TEST"
ACTOR = Actor("user_reliability", name="Reliability Test", metadata={"email": "reliability@example.com"})

#: A test that finds a process hung sends this signal before killing it: every thread's stack lands in the log.
DUMP_STACKS_SIGNAL = signal.SIGRTMIN + 3

_apps: dict[str, Any] = {}


def make_auditor() -> Auditor | None:
    """The auditor every reliability process uses, or None for the no-auditor baseline."""
    faulthandler.register(DUMP_STACKS_SIGNAL, all_threads=True)
    env = os.environ
    if env.get("RELIABILITY_AUDIT", "1") == "0":
        return None
    overrides: dict[str, Any] = {"geoip": False}  # no GeoIP database here: geo off without the warning
    if env.get("RELIABILITY_FLUSH_TIMEOUT"):
        overrides["flush_timeout"] = float(env["RELIABILITY_FLUSH_TIMEOUT"])
    if env.get("RELIABILITY_RETRY_MAX_DELAY"):
        max_delay = float(env["RELIABILITY_RETRY_MAX_DELAY"])
        overrides["retry"] = RetryPolicy(base=min(0.5, max_delay), max_delay=max_delay)
    if env.get("RELIABILITY_LEASE"):
        overrides["lease"] = float(env["RELIABILITY_LEASE"])
    if env.get("RELIABILITY_COMMIT_INTERVAL"):
        overrides["commit_interval"] = float(env["RELIABILITY_COMMIT_INTERVAL"])
    if env.get("RELIABILITY_WORKOS_TIMEOUT"):
        # A stall past the timeout (commit-then-stall) costs a sender thread this long, not the default 10 s.
        from centure_audit_middleware.sinks import WorkOSSink

        overrides["sinks"] = [WorkOSSink(timeout=float(env["RELIABILITY_WORKOS_TIMEOUT"]))]
    return Auditor.from_env(**overrides)


def _record_at_start(auditor: Auditor | None) -> None:
    # Under `gunicorn --preload` this runs in the master just before it forks the workers: the master's dispatcher
    # has these in its queue (or in flight) at the fork, which is the situation row 9 is about.
    if auditor is None:
        return
    for i in range(int(os.environ.get("RELIABILITY_RECORD_AT_START", "0"))):
        auditor.record(ACTION, actor=ACTOR, organization=ORG, targets=[Target("item", id=f"start-{os.getpid()}-{i}")])


def _identify() -> None:
    """The app's auth layer: tells the audit layer who acts for which organization (a no-op without auditor)."""
    if audit.active:
        audit.actor(ACTOR)
        audit.organization(ORG)


class Boom(RuntimeError):
    """An unhandled error in a view: the server answers 500."""


def create_fastapi_app(auditor: Auditor | None = None) -> FastAPI:
    """The FastAPI app, with `auditor` installed (default: `make_auditor()`)."""
    from fastapi import Depends, FastAPI, HTTPException

    app = FastAPI(dependencies=[Depends(_identify)])
    auditor = auditor if auditor is not None else make_auditor()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid()}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return auditor.stats() if auditor is not None else {}

    @app.post("/events/{n}")
    @audited(ACTION, targets=[Target.from_path("item", "n")])
    async def record_async(n: str, size: int = 0) -> dict[str, Any]:
        return {"n": n, "size": size}

    @app.post("/durable-events/{n}")
    @audited(ACTION, targets=[Target.from_path("item", "n")], durable=True)
    async def record_durable(n: str) -> dict[str, Any]:
        return {"n": n}

    @app.post("/sync-events/{n}")
    @audited(ACTION, targets=[Target.from_path("item", "n")])
    def record_sync(n: str) -> dict[str, Any]:
        # A sync view: FastAPI runs it in its thread pool, outside the event loop.
        return {"n": n}

    @app.post("/fail/{n}")
    @audited(ACTION, targets=[Target.from_path("item", "n")])
    async def fail(n: str, status: int = 403) -> dict[str, Any]:
        raise HTTPException(status_code=status, detail=f"refused {n}", headers={"x-refused": n})

    @app.post("/crash/{n}")
    @audited(ACTION, targets=[Target.from_path("item", "n")])
    async def crash(n: str) -> dict[str, Any]:
        raise Boom(f"crash {n}")

    if auditor is not None:
        auditor.install(app)
    _record_at_start(auditor)
    return app


def create_flask_app() -> Flask:
    from flask import Flask, abort, jsonify, request
    from werkzeug.wrappers import Response

    app = Flask(__name__)
    auditor = make_auditor()
    app.before_request(_identify)

    @app.get("/health")
    def health() -> Response:
        return jsonify(ok=True, pid=os.getpid())

    @app.get("/stats")
    def stats() -> Response:
        return jsonify(auditor.stats() if auditor is not None else {})

    @app.post("/events/<n>")
    @audited(ACTION, targets=[Target.from_path("item", "n")])
    def record(n: str) -> Response:
        return jsonify(n=n, size=request.args.get("size", 0, type=int))

    @app.post("/batch/<prefix>")
    def batch(prefix: str) -> Response:
        # Many events from one request (`audit.record`, actor and organization from the request): the fleet tests
        # record tens of thousands of events without as many HTTP round trips.
        targets = [f"{prefix}-{i}" for i in range(request.args.get("count", 1, type=int))]
        for target in targets:
            audit.record(ACTION, targets=[Target("item", id=target)])
        return jsonify(recorded=targets)

    @app.post("/fail/<n>")
    @audited(ACTION, targets=[Target.from_path("item", "n")])
    def fail(n: str) -> Response:
        abort(request.args.get("status", 403, type=int))

    @app.post("/crash/<n>")
    @audited(ACTION, targets=[Target.from_path("item", "n")])
    def crash(n: str) -> Response:
        raise Boom(f"crash {n}")

    if auditor is not None:
        auditor.install(app)
    _record_at_start(auditor)
    return app


def __getattr__(name: str) -> Any:
    # Built on first access (PEP 562): `uvicorn ...:fastapi_app` and gunicorn's `...:flask_app` both use getattr.
    factories: dict[str, Callable[[], Any]] = {
        "fastapi_app": create_fastapi_app,
        "flask_app": create_flask_app,
        "auditor": make_auditor,
    }
    if name not in factories:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _apps:
        _apps[name] = factories[name]()
    return _apps[name]
