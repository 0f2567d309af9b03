"""uvicorn's proxy headers and the Auditor's trusted proxies: one of the two resolves X-Forwarded-For, never both.

uvicorn (by default: --proxy-headers, --forwarded-allow-ips=127.0.0.1) rewrites `scope["client"]` from the header
before any app middleware runs. If the Auditor also trusts proxies, it then decides trust on an address that is not
the socket peer; the adapters warn once per process. The two correct set-ups, and the warning, are driven here through
real uvicorn servers behind a "proxy" (a client on 127.0.0.1 sending X-Forwarded-For), and the decision itself
in-process through uvicorn's own middleware.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from centure_audit_middleware import AuditMiddleware, Auditor, audit
from centure_audit_middleware.adapters import starlette as starlette_adapter
from centure_audit_middleware.adapters.starlette import PROXY_HEADERS_WARNING
from centure_audit_middleware.sinks import MemorySink

from .reliability_support import REPO_ROOT, Proc, ProcessGroup, free_port

CLIENT = "203.0.113.7"  # what the proxy writes in X-Forwarded-For: the real client
WARNING_START = PROXY_HEADERS_WARNING.split("(")[0]


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Once per process": each test starts as a new process would.
    monkeypatch.setattr(starlette_adapter, "_proxy_warning_given", False)


# -- the decision, in-process -----------------------------------------------------------------------------------
class Setup(NamedTuple):
    uvicorn_trusts: str | None  # --forwarded-allow-ips, or None: served without uvicorn's proxy headers
    trusted_proxies: tuple[str, ...] = ()
    trusted_hops: int | None = None


SETUPS = [
    pytest.param(Setup("127.0.0.1", ("127.0.0.1",)), True, id="both-trust-the-local-proxy"),
    pytest.param(Setup("127.0.0.1,::1", trusted_hops=1), True, id="both-hops-mode"),
    pytest.param(Setup("*", ("10.0.0.0/8",)), True, id="uvicorn-trusts-everyone"),
    pytest.param(Setup("10.1.0.0/16", ("10.0.0.0/8",)), True, id="overlapping-networks"),
    pytest.param(Setup("127.0.0.1", ("10.0.0.0/8",)), False, id="disjoint-uvicorn-never-rewrites-our-proxies"),
    pytest.param(Setup("127.0.0.1"), False, id="only-uvicorn-resolves"),
    pytest.param(Setup(None, ("127.0.0.1",)), False, id="only-the-auditor-resolves"),
]


def whoami_app(auditor: Auditor) -> Starlette:
    async def whoami(request: Request) -> Response:
        return JSONResponse({"client_ip": audit.request.client_ip, "peer": audit.request.peer})

    app = Starlette(routes=[Route("/whoami", whoami)])
    auditor.install(app)
    return app


def behind_uvicorn(app: Starlette, trusted: str) -> Any:
    """The app as `uvicorn --forwarded-allow-ips=<trusted>` serves it (its types are stricter than Starlette's)."""
    return ProxyHeadersMiddleware(cast(Any, app), trusted)


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(WARNING_START)]


@pytest.fixture
def auditor_for(tmp_path: Path) -> Iterator[Any]:
    made: list[Auditor] = []

    def make(setup: Setup) -> Auditor:
        auditor = Auditor(
            sinks=[MemorySink()],
            outbox=tmp_path / f"outbox{len(made)}.db",
            geoip=False,
            trusted_proxies=setup.trusted_proxies,
            trusted_hops=setup.trusted_hops,
        )
        made.append(auditor)
        return auditor

    yield make
    for auditor in made:
        auditor.close(timeout=5)


@pytest.mark.anyio
@pytest.mark.parametrize(("setup", "warns"), SETUPS)
async def test_warns_when_both_resolve(
    setup: Setup, warns: bool, auditor_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = whoami_app(auditor_for(setup))
    served = app if setup.uvicorn_trusts is None else behind_uvicorn(app, setup.uvicorn_trusts)
    transport = httpx.ASGITransport(app=served, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for _ in range(3):
            response = await client.get("/whoami", headers={"x-forwarded-for": CLIENT})
            assert response.status_code == 200
    assert len(warnings_in(caplog)) == (1 if warns else 0)


@pytest.mark.anyio
async def test_checked_on_the_first_call_only_then_out_of_the_way(
    auditor_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup("127.0.0.1", ("127.0.0.1",))
    apps = [whoami_app(auditor_for(setup)) for _ in range(2)]
    for app in apps:
        transport = httpx.ASGITransport(app=behind_uvicorn(app, "127.0.0.1"), client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.get("/whoami", headers={"x-forwarded-for": CLIENT})
        # Starlette now calls the audit middleware directly: no request after the first pays for the check.
        assert type(app.middleware_stack) is AuditMiddleware
    assert len(warnings_in(caplog)) == 1  # two apps, one process, one warning


def test_a_failing_check_never_breaks_serving(monkeypatch: pytest.MonkeyPatch, auditor_for: Any) -> None:
    def broken() -> None:
        raise RuntimeError("frames not as expected")

    monkeypatch.setattr(starlette_adapter, "_uvicorn_proxy_headers", broken)
    resolver = auditor_for(Setup("127.0.0.1", ("127.0.0.1",))).client_ip_resolver
    assert starlette_adapter.check_proxy_headers(resolver) is False  # no exception, no warning


@pytest.mark.parametrize(
    ("middleware", "expected"),
    [
        pytest.param(
            SimpleNamespace(trusted_hosts={"127.0.0.1"}, always_trust=False), (False, ["127.0.0.1"]), id="0.30"
        ),
        pytest.param(SimpleNamespace(trusted_hosts={"*"}, always_trust=True), (True, ["*"]), id="0.30-star"),
        pytest.param(
            ProxyHeadersMiddleware(cast(Any, None), "10.0.0.0/8, ::1"), (False, ["10.0.0.0/8", "::1"]), id="now"
        ),
    ],
)
def test_reads_uvicorn_trust_of_each_version(middleware: Any, expected: tuple[bool, list[str]]) -> None:
    always, entries = starlette_adapter._uvicorn_trusted(middleware)
    assert (always, sorted(entries)) == expected


# -- real uvicorn servers ---------------------------------------------------------------------------------------
class Deployment(NamedTuple):
    uvicorn_flags: tuple[str, ...]
    trusted: str  # the Auditor's trusted_proxies, comma-separated
    client_ip: str  # what the audit layer records
    peer: str  # the raw peer it keeps beside it
    warns: bool


DEPLOYMENTS = [
    pytest.param(Deployment((), "", CLIENT, CLIENT, False), id="uvicorn-resolves-auditor-trusts-none"),
    pytest.param(Deployment(("--no-proxy-headers",), "127.0.0.1", CLIENT, "127.0.0.1", False), id="auditor-resolves"),
    pytest.param(
        Deployment(("--no-proxy-headers",), "", "127.0.0.1", "127.0.0.1", False), id="nobody-resolves-header-ignored"
    ),
    # Both: the recorded IP happens to be right here, but the raw peer is already the header's value, and with
    # wider uvicorn trust (--forwarded-allow-ips='*') the Auditor would trust a client-written address.
    pytest.param(Deployment((), "127.0.0.1", CLIENT, CLIENT, True), id="both-resolve-warns-once"),
]


@pytest.fixture
def group(tmp_path: Path) -> Iterator[ProcessGroup]:
    processes = ProcessGroup(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


def start_uvicorn(group: ProcessGroup, tmp_path: Path, flags: tuple[str, ...], trusted: str) -> Proc:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FORWARDED_ALLOW_IPS"}  # uvicorn's own default: 127.0.0.1
    env.update(PYTHONPATH=str(REPO_ROOT), PROXY_APP_OUTBOX=str(tmp_path / "outbox.db"), PROXY_APP_TRUSTED=trusted)
    argv = [sys.executable, "-m", "uvicorn", "tests.apps.proxy_app:app", "--port", str(port), "--no-access-log"]
    proc = group.spawn("uvicorn", [*argv, *flags], env, port=port)
    proc.wait_ready()
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_real_uvicorn_behind_a_local_proxy(deployment: Deployment, group: ProcessGroup, tmp_path: Path) -> None:
    server = start_uvicorn(group, tmp_path, deployment.uvicorn_flags, deployment.trusted)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answers = [client.get("/whoami", headers={"x-forwarded-for": CLIENT}).json() for _ in range(3)]
    assert answers == [{"client_ip": deployment.client_ip, "peer": deployment.peer}] * 3
    assert server.output().count(WARNING_START) == (1 if deployment.warns else 0), server.output()


def test_warning_text_names_both_fixes() -> None:
    text = PROXY_HEADERS_WARNING % "127.0.0.1"
    assert "--no-proxy-headers" in text and "no trusted_proxies" in text
    logging.getLogger("centure_audit_middleware").debug("%s", text)  # a valid %-format: logging would not fail on it
