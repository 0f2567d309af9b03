"""`centure-audit demo` (issue 12, item 9): it says why each request that recorded nothing recorded nothing, offers
Subscribe Now to the unsubscribed organization's admin, and `--serve` keeps it all up until Ctrl-C.

The command runs as users run it, in a subprocess (uvicorn, werkzeug's server and the emulator on loopback). The
checkout flow, which needs cookies and a CSRF token, is driven in-process through the mounted page.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from centure_audit_middleware import Auditor
from centure_audit_middleware.demo.admin import mount_admin
from centure_audit_middleware.demo.apps import build_fastapi_app
from centure_audit_middleware.events import AuditEvent
from centure_audit_middleware.sinks import MemorySink, StoreSink
from centure_audit_middleware.store import EventQuery, EventStore, open_store
from centure_audit_middleware.testing import WorkOSEmulator

DEMO = [sys.executable, "-m", "centure_audit_middleware.cli", "demo"]

#: What the tour's requests that record nothing must say, by the request they are beside.
WHY = {
    ("GET", "/projects/proj_atlas"): "not recorded: GET /projects/{project_id} is not audited",
    ("GET", "/projects"): "not recorded: GET /projects changes nothing: on a form view, @audited records the state-",
    ("POST", "/projects/proj_atlas/api-keys?dry_run=true"): "not recorded: the handler called audit.skip()",
    ("POST", "/projects/proj_atlas/api-keys"): "not recorded: refused (401)",
    ("POST", "/projects"): "not recorded: no actor (nobody signed in): counted in stats()['skipped']['no_actor']",
}

_REQUEST = re.compile(r"^  (?P<status>\d{3}) (?P<method>[A-Z]+)\s+127\.0\.0\.1:\d+(?P<path>\S+)\s+(?P<token>\S+)")


def _tour(output: str) -> list[tuple[str, str, str, str, str]]:
    """(status, method, path, token, outcome) of every request the tour printed."""
    lines = output.splitlines()
    out = []
    for i, line in enumerate(lines):
        match = _REQUEST.match(line)
        if match:
            outcome = lines[i + 1].strip()
            assert outcome.startswith("-> "), line
            out.append((match["status"], match["method"], match["path"], match["token"], outcome[3:]))
    return out


@pytest.mark.slow
def test_the_tour_says_what_each_request_recorded_or_why_it_recorded_nothing(tmp_path: Path) -> None:
    run = subprocess.run([*DEMO, "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    tour = _tour(run.stdout)
    recorded = [t for t in tour if t[4].startswith("recorded ")]
    not_recorded = [t for t in tour if not t[4].startswith("recorded ")]
    assert len(recorded) == 7 and len(not_recorded) == 5, run.stdout
    for status, method, path, token, outcome in not_recorded:
        # The anonymous POST /projects (a login redirect) and the recorded ones share a path: tell them by token.
        assert outcome.startswith(WHY[(method, path)]), (status, method, path, token, outcome)
    assert {(t[0], t[3]) for t in not_recorded if t[2] == "/projects" and t[1] == "POST"} == {("302", "(none)")}
    assert "Not recorded: 5 requests, each for the reason printed beside it" in run.stdout
    assert "stats()['skipped']: {'no_actor': 1}" in run.stdout
    # What the tour says was recorded is what the store holds.
    with open_store(tmp_path / "audit.db") as store:
        stored = sorted(e.action for org in ("org_01CENTUREACME", "org_01CENTUREGLOBEX") for e in _events(store, org))
    assert stored == sorted(t[4].removeprefix("recorded ") for t in recorded)
    assert "the WorkOS emulator accepted 7 events, 0 twice" in run.stdout
    # uvicorn leaves X-Forwarded-For to the Auditor: no warning that both resolve it.
    assert "uvicorn resolves X-Forwarded-For itself" not in run.stderr


def _events(store: EventStore, organization_id: str) -> list[AuditEvent]:
    return list(store.iter_events(EventQuery(organization_id=organization_id)))


def test_the_help_documents_serve() -> None:
    help_text = subprocess.run([*DEMO, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--serve" in help_text and "Ctrl-C" in help_text and "Audit Logs page" in " ".join(help_text.split())


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`centure-audit demo --serve`, once it says it is serving; the process and everything it printed so far."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*DEMO, "--serve", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    stdout = proc.stdout
    assert stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    printed: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while not printed or printed[-1].strip() != "Serving until Ctrl-C.":
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, "".join(printed)
            printed.append(line)
        yield proc, "".join(printed)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=30)  # it reads to the end of the output, then the pipe can be closed
        stdout.close()


@pytest.mark.slow
def test_serve_keeps_the_page_up_with_subscribe_now_for_the_unsubscribed_organization(
    serving: tuple[subprocess.Popen[str], str],
) -> None:
    proc, printed = serving
    logins = dict(re.findall(r"(http://127\.0\.0\.1:\d+/admin/demo-login\?token=(tok_\w+))", printed))
    links = {token: url for url, token in logins.items()}
    assert set(links) == {"tok_ada", "tok_linus"}, printed
    for token, expected, absent in (
        ("tok_linus", "Subscribe Now", "View Audit Logs"),
        ("tok_ada", "View Audit Logs", "Subscribe Now"),
    ):
        with httpx.Client(follow_redirects=True, timeout=10) as browser:  # keeps the login cookie
            page = browser.get(links[token])
        assert page.status_code == 200 and expected in page.text and absent not in page.text, token
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=30) == 0


def _csrf(html: str) -> str:
    return html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def test_subscribe_now_goes_through_the_demo_checkout_and_enables_the_add_on(
    tmp_path: Path, workos_emulator: WorkOSEmulator
) -> None:
    with open_store(tmp_path / "audit.db") as store:
        auditor = Auditor(
            sinks=[MemorySink(), StoreSink(store)], outbox=tmp_path / "outbox.db", geoip=False, commit_interval=0.01
        )
        app = build_fastapi_app()
        page_path = mount_admin(app, store=store, auditor=auditor, emulator=workos_emulator)
        auditor.install(app)
        try:
            with TestClient(app) as client:
                assert (
                    client.get("/admin/demo-checkout", headers={"Authorization": "Bearer tok_grace"}).status_code == 403
                )
                client.get("/admin/demo-login", params={"token": "tok_linus"})
                page = client.get(page_path)
                assert "Subscribe Now" in page.text and "View Audit Logs" not in page.text
                subscribe = client.post(f"{page_path}/subscribe", data={"csrf_token": _csrf(page.text)})
                assert subscribe.status_code == 200 and "Pay (demo)" in subscribe.text  # followed to the checkout
                assert str(subscribe.url).endswith("/admin/demo-checkout")
                paid = client.post("/admin/demo-checkout", follow_redirects=False)
                assert (paid.status_code, paid.headers["location"]) == (303, f"{page_path}?checkout=success")
                page = client.get(page_path)
                assert "View Audit Logs" in page.text and "Subscribe Now" not in page.text
        finally:
            auditor.close(timeout=5)
