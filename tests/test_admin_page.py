"""The Audit Logs page at the HTTP level, on both frameworks: the FastAPI/Starlette router and the Flask blueprint.

Every test runs twice (``fastapi`` and ``flask``) through the same `Web` wrapper: the page's behaviour, its security
rules and its HTML are one contract for both.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from workos import WorkOSClient

from centure_audit_middleware import Actor, Auditor, Target
from centure_audit_middleware.admin import StaticEntitlements
from centure_audit_middleware.admin.csrf import COOKIE_NAME, CsrfProtect
from centure_audit_middleware.events import AuditEvent, EventContext
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.store import EventQuery, EventStore, open_store
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import delivered

ORG = "org_01ACME"
OTHER = "org_01OTHER"
SECRET_KEY = "test-secret-key-for-the-admin-page"
ADMIN = {"x-user": "user_ada", "x-role": "admin", "x-org": ORG}
MEMBER = {"x-user": "user_bob", "x-role": "member", "x-org": ORG}
PAGE = "/settings/audit-logs"
BASE_TIME = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)

FRAMEWORKS = ["fastapi", "flask"]


def _header(request: Any, name: str) -> str | None:
    value = request.headers.get(name)
    return value if isinstance(value, str) else None


def default_hooks() -> dict[str, Any]:
    """The app's auth layer, reduced to headers: who the user is, whether they are an admin, of which org."""
    return {
        "is_admin": lambda r: _header(r, "x-role") == "admin",
        "organization": lambda r: _header(r, "x-org"),
        "actor": lambda r: Actor(user, name="Ada Lovelace") if (user := _header(r, "x-user")) else None,
        "organization_name": lambda r: "Acme Robotics",
    }


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class Web:
    """One client API over Starlette's TestClient and Flask's test client (cookies kept, redirects not followed)."""

    def __init__(self, framework: str, client: Any) -> None:
        self.framework = framework
        self.client = client

    def _wrap(self, response: Any) -> Resp:
        if self.framework == "flask":
            headers = {k.lower(): v for k, v in response.headers.items()}
            cookies = response.headers.getlist("Set-Cookie")
            return Resp(response.status_code, headers, cookies, response.get_data())
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Resp(response.status_code, headers, response.headers.get_list("set-cookie"), response.content)

    def get(self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Resp:
        headers = ADMIN if headers is None else headers
        if self.framework == "flask":
            return self._wrap(self.client.get(path, query_string=params or {}, headers=headers))
        return self._wrap(self.client.get(path, params=params or {}, headers=headers, follow_redirects=False))

    def post(
        self, path: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None, raw: bytes = b""
    ) -> Resp:
        headers = ADMIN if headers is None else headers
        if self.framework == "flask":
            if raw:
                return self._wrap(self.client.post(path, data=raw, headers=headers))
            return self._wrap(self.client.post(path, data=data or {}, headers=headers))
        if raw:
            return self._wrap(self.client.post(path, content=raw, headers=headers, follow_redirects=False))
        return self._wrap(self.client.post(path, data=data or {}, headers=headers, follow_redirects=False))

    def cookie(self) -> str | None:
        if self.framework == "flask":
            found = self.client.get_cookie(COOKIE_NAME, path=PAGE)
            return found.value if found is not None else None
        value = self.client.cookies.get(COOKIE_NAME)
        return value if isinstance(value, str) else None

    def clear_cookies(self) -> None:
        if self.framework == "flask":
            self.client.delete_cookie(COOKIE_NAME, path=PAGE)
        else:
            self.client.cookies.clear()

    def token(self, headers: dict[str, str] | None = None) -> str:
        """Open the page (setting the CSRF cookie) and return its form token."""
        page = self.get(PAGE, headers=headers)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if found:
            return found.group(1)
        # A page without forms (no add-on, nothing to sell): mint the token its forms would carry.
        cookie = self.cookie()
        assert cookie, page.text
        org = (headers or ADMIN)["x-org"]
        return CsrfProtect(SECRET_KEY).token(cookie, organization_id=org)


def event(
    n: int,
    *,
    org: str = ORG,
    action: str = "api_key.create",
    actor: str = "user_ada",
    actor_name: str = "Ada Lovelace",
    target: tuple[str, str] = ("project", "proj_atlas"),
    metadata: dict[str, Any] | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    return AuditEvent(
        id=f"evt_{org}_{n:03d}",
        organization_id=org,
        action=action,
        occurred_at=when or BASE_TIME + dt.timedelta(hours=n),
        actor=Actor(actor, name=actor_name, metadata={"email": f"{actor}@acme.example"}),
        targets=(Target(target[0], id=target[1], name=target[1].title()),),
        context=EventContext(location="203.0.113.9", user_agent="Mozilla/5.0 test"),
        metadata=metadata or {"source": "/projects"},
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with open_store(tmp_path / "audit.db") as store:
        yield store


@pytest.fixture
def emulator(workos_emulator: WorkOSEmulator) -> WorkOSEmulator:
    workos_emulator.add_organization(ORG)
    workos_emulator.add_organization(OTHER)
    return workos_emulator


@pytest.fixture
def entitlements() -> StaticEntitlements:
    return StaticEntitlements({ORG})


class CheckoutEntitlements(StaticEntitlements):
    """Static entitlements that can also sell: records what Subscribe Now asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, str]] = []

    def checkout_url(self, organization_id: str, success_url: str, cancel_url: str) -> str:
        self.asked.append((organization_id, success_url, cancel_url))
        return "https://checkout.stripe.com/c/pay/cs_test_123"


WebFactory = Callable[..., Web]


@pytest.fixture(params=FRAMEWORKS)
def make_web(
    request: pytest.FixtureRequest,
    auditor: Auditor,
    store: EventStore,
    workos_client: WorkOSClient,
    emulator: WorkOSEmulator,
    entitlements: StaticEntitlements,
) -> Iterator[WebFactory]:
    framework: str = request.param
    exits: list[Callable[[], None]] = []

    def factory(**overrides: Any) -> Web:
        options: dict[str, Any] = {
            **default_hooks(),
            "entitlements": entitlements,
            "secret_key": SECRET_KEY,
            "store": store,
            "workos": workos_client,
            "auditor": auditor,
            "page_size": 3,
            **overrides,
        }
        if framework == "flask":
            from flask import Flask

            from centure_audit_middleware.admin.flask import audit_logs_blueprint

            app = Flask(__name__)
            app.register_blueprint(audit_logs_blueprint(**options), url_prefix="/settings")
            auditor.install(app)
            return Web(framework, app.test_client())
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        from centure_audit_middleware.admin.starlette import audit_logs_router

        api = FastAPI()
        api.mount("/settings", audit_logs_router(**options))
        auditor.install(api)
        client = TestClient(api, client=("198.51.100.7", 4000))
        client.__enter__()
        exits.append(lambda: client.__exit__(None, None, None))
        return Web(framework, client)

    yield factory
    for close in exits:
        close()


@pytest.fixture
def web(make_web: WebFactory) -> Web:
    return make_web()


# -- access ----------------------------------------------------------------------------------------------------

ADMIN_GETS = [
    PAGE,
    f"{PAGE}/events/evt_{ORG}_001",
    f"{PAGE}/export.csv",
    f"{PAGE}/api/events",
    f"{PAGE}/api/events/evt_{ORG}_001",
    f"{PAGE}/api/status",
]
ADMIN_POSTS = [f"{PAGE}/subscribe", f"{PAGE}/portal/audit_logs", f"{PAGE}/portal/log_streams"]


def test_without_hooks_everyone_is_refused(make_web: WebFactory, store: EventStore, emulator: WorkOSEmulator) -> None:
    store.append([event(1)])
    web = make_web(is_admin=None, organization=None)
    for path in ADMIN_GETS:
        assert web.get(path).status == 403, path
    for path in ADMIN_POSTS:
        assert web.post(path, {"csrf_token": "x"}).status == 403, path
    assert not [r for r in emulator.requests if "portal" in r.path]


def test_non_admins_get_403_and_never_a_link(web: Web, store: EventStore, emulator: WorkOSEmulator) -> None:
    store.append([event(1)])
    admin_token = web.token()  # a valid token and cookie, lifted from an admin's page
    for path in ADMIN_GETS:
        response = web.get(path, headers=MEMBER)
        assert response.status == 403, path
        assert response.headers["cache-control"] == "no-store"
        assert "evt_" not in response.text and "Ada" not in response.text
    for path in ADMIN_POSTS:
        response = web.post(path, {"csrf_token": admin_token}, headers=MEMBER)
        assert response.status == 403, path
        assert "location" not in response.headers
    nobody = {"x-role": "admin"}  # an "admin" of no organization
    assert web.get(PAGE, headers=nobody).status == 403
    assert not [r for r in emulator.requests if "portal" in r.path]


def test_a_failing_hook_refuses(make_web: WebFactory, caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: Any) -> bool:
        raise RuntimeError("session store down")

    web = make_web(is_admin=broken)
    assert web.get(PAGE).status == 403
    assert "is_admin hook failed" in caplog.text


# -- subscription gate -----------------------------------------------------------------------------------------


def test_without_the_addon_the_banner_offers_subscribe_now(make_web: WebFactory, store: EventStore) -> None:
    store.append([event(1)])
    web = make_web(entitlements=CheckoutEntitlements(), price_note="$10 per month per organization.")
    page = web.get(PAGE)
    assert page.status == 200
    assert "Audit Logging is not enabled" in page.text
    assert '<button type="submit" class="primary">Subscribe Now</button>' in page.text
    assert "$10 per month per organization." in page.text
    assert "View Audit Logs" not in page.text
    assert "evt_" not in page.text  # no event table without the add-on
    assert web.get(f"{PAGE}/api/events").status == 403
    assert web.get(f"{PAGE}/export.csv").status == 403
    assert web.get(f"{PAGE}/api/status").json() == {
        "organization_id": ORG,
        "active": False,
        "cancel_at_period_end": False,
        "current_period_end": None,
    }


def test_subscribe_now_redirects_to_stripe_checkout(make_web: WebFactory) -> None:
    sales = CheckoutEntitlements()
    web = make_web(entitlements=sales)
    response = web.post(f"{PAGE}/subscribe", {"csrf_token": web.token(), "organization_id": OTHER})
    assert response.status == 303
    assert response.headers["location"] == "https://checkout.stripe.com/c/pay/cs_test_123"
    assert response.headers["cache-control"] == "no-store"
    origin = "http://testserver" if web.framework == "fastapi" else "http://localhost"
    assert sales.asked == [(ORG, f"{origin}{PAGE}?checkout=success", f"{origin}{PAGE}?checkout=cancelled")]


def test_return_urls_use_the_configured_public_url(make_web: WebFactory) -> None:
    sales = CheckoutEntitlements()
    web = make_web(entitlements=sales, public_url="https://app.centure.example/")
    page = web.get(PAGE)
    (cookie,) = page.set_cookies
    assert cookie.endswith("; Secure")  # TLS ends at the proxy, the public URL says https: the cookie is Secure
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    token = CsrfProtect(SECRET_KEY).token(value, organization_id=ORG)
    # The test client keeps Secure cookies off plain HTTP, so the browser's cookie is replayed by hand.
    headers = {**ADMIN, "cookie": f"{COOKIE_NAME}={value}"}
    assert web.post(f"{PAGE}/subscribe", {"csrf_token": token}, headers=headers).status == 303
    assert sales.asked[0][1] == f"https://app.centure.example{PAGE}?checkout=success"


def test_without_a_way_to_sell_the_banner_has_no_button(make_web: WebFactory) -> None:
    web = make_web(entitlements=StaticEntitlements())
    page = web.get(PAGE)
    assert "Subscribe Now" not in page.text and "account manager" in page.text
    assert web.post(f"{PAGE}/subscribe", {"csrf_token": web.token()}).status == 404
    web = make_web(entitlements=StaticEntitlements(), subscribe_url="/billing")
    response = web.post(f"{PAGE}/subscribe", {"csrf_token": web.token()})
    assert (response.status, response.headers["location"]) == (303, "/billing")


def test_back_from_checkout_shows_a_notice(make_web: WebFactory) -> None:
    web = make_web(entitlements=CheckoutEntitlements())
    assert "being activated" in web.get(PAGE, {"checkout": "success"}).text
    assert "nothing was charged" in web.get(PAGE, {"checkout": "cancelled"}).text


# -- portal links ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intent", "action"),
    [
        ("audit_logs", "audit_logs.create_management_portal_url"),
        ("log_streams", "log_streams.create_management_portal_url"),
    ],
)
def test_portal_buttons_redirect_to_a_fresh_link_and_record_the_access(
    web: Web,
    emulator: WorkOSEmulator,
    auditor: Auditor,
    sink: MemorySink,
    caplog: pytest.LogCaptureFixture,
    intent: str,
    action: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # everything every logger says, ours, the SDK's, httpx's
    page = web.get(PAGE)
    assert "View Audit Logs" in page.text and "Configure Log Streams" in page.text
    assert f'action="{PAGE}/portal/{intent}" target="_blank"' in page.text
    response = web.post(f"{PAGE}/portal/{intent}", {"csrf_token": web.token(), "organization": OTHER})
    assert response.status == 303
    link = response.headers["location"]
    assert link.startswith(f"{emulator.url}portal/") and f"intent={intent}" in link
    assert response.headers["cache-control"] == "no-store"
    (request,) = [r for r in emulator.requests if r.path == "/portal/generate_link"]
    assert json.loads(request.body) == {"organization": ORG, "intent": intent}  # never the form's organization

    (recorded,) = delivered(auditor, sink)
    assert recorded.action == action
    assert recorded.organization_id == ORG
    assert recorded.actor.id == "user_ada"
    assert [(t.type, t.id, t.name) for t in recorded.targets] == [("organization", ORG, "Acme Robotics")]
    assert recorded.metadata["source"] == PAGE
    assert link not in recorded.to_json()
    token = link.split("/portal/", 1)[1].split("?", 1)[0]
    assert token not in caplog.text and link not in caplog.text


def test_portal_refused_without_the_addon(make_web: WebFactory, emulator: WorkOSEmulator) -> None:
    web = make_web(entitlements=StaticEntitlements())
    response = web.post(f"{PAGE}/portal/audit_logs", {"csrf_token": web.token()})
    assert response.status == 403 and "location" not in response.headers
    assert web.post(f"{PAGE}/portal/sso", {"csrf_token": web.token()}).status == 404
    assert not [r for r in emulator.requests if "portal" in r.path]


def test_workos_failure_is_an_error_page(web: Web, emulator: WorkOSEmulator) -> None:
    emulator.fail_next(500, path="/portal/generate_link")
    response = web.post(f"{PAGE}/portal/audit_logs", {"csrf_token": web.token()})
    assert response.status == 502 and "location" not in response.headers
    assert "could not be opened" in response.text


def test_portal_access_that_cannot_be_audited_gets_no_link(
    make_web: WebFactory, workos_client: WorkOSClient, entitlements: StaticEntitlements
) -> None:
    web = make_web(actor=None)  # the middleware has no actor either: the event could not be recorded
    response = web.post(f"{PAGE}/portal/audit_logs", {"csrf_token": web.token()})
    assert response.status == 500 and "location" not in response.headers


def test_cancelled_subscription_keeps_the_buttons_until_the_period_ends(
    web: Web, entitlements: StaticEntitlements
) -> None:
    entitlements.activate(ORG, cancel_at_period_end=True, current_period_end=dt.datetime(2026, 11, 30, tzinfo=dt.UTC))
    page = web.get(PAGE)
    assert "Your subscription ends on November 30, 2026." in page.text
    assert "View Audit Logs" in page.text and "Configure Log Streams" in page.text
    assert web.get(f"{PAGE}/api/status").json()["current_period_end"] == "2026-11-30T00:00:00Z"


# -- CSRF ------------------------------------------------------------------------------------------------------


def test_posts_without_a_valid_csrf_token_are_refused(web: Web, emulator: WorkOSEmulator) -> None:
    token = web.token()
    portal = f"{PAGE}/portal/audit_logs"
    issued, mac = token.split(".")
    forged = [
        {},  # no token
        {"csrf_token": ""},
        {"csrf_token": "not-a-token"},
        {"csrf_token": f"{issued}.{mac[:-2]}AA"},  # tampered signature
        {"csrf_token": f"{int(issued) - 9 * 3600}.{mac}"},  # re-dated
        {"csrf_token": f"{issued}.{mac}x" * 20},  # oversized
    ]
    for data in forged:
        assert web.post(portal, data).status == 403, data
    assert web.post(portal, {"csrf_token": token}, headers={**ADMIN, "sec-fetch-site": "cross-site"}).status == 403
    # A token minted on another organization's page is worthless here.
    other_token = web.token(headers={**ADMIN, "x-org": OTHER})
    assert web.post(portal, {"csrf_token": other_token}).status == 403
    # No cookie, no entry, even with the right token.
    web.clear_cookies()
    assert web.post(portal, {"csrf_token": token}).status == 403
    assert not [r for r in emulator.requests if "portal" in r.path]


def test_csrf_cookie_is_httponly_strict_and_scoped_to_the_page(web: Web) -> None:
    first = web.get(PAGE)
    (cookie,) = first.set_cookies
    assert cookie.startswith(f"{COOKIE_NAME}=")
    for flag in ("HttpOnly", "SameSite=Strict", f"Path={PAGE}"):
        assert flag in cookie
    assert web.get(PAGE).set_cookies == []  # issued once, then reused


# -- headers ---------------------------------------------------------------------------------------------------


def test_every_admin_response_is_no_store(web: Web, store: EventStore) -> None:
    store.append([event(1)])
    responses = [web.get(path) for path in ADMIN_GETS]
    responses.append(web.get(PAGE, headers=MEMBER))
    responses.append(web.post(f"{PAGE}/portal/audit_logs", {"csrf_token": web.token()}))
    responses.append(web.get(f"{PAGE}/events/nope"))
    for response in responses:
        assert response.headers["cache-control"] == "no-store", response.status
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    page = responses[0]
    assert page.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text


# -- organization scoping and hostile input --------------------------------------------------------------------


def test_the_organization_comes_only_from_the_hook(web: Web, store: EventStore) -> None:
    store.append([event(1), event(2, org=OTHER, actor="user_eve", actor_name="Eve Intruder")])
    for params in ({"organization_id": OTHER}, {"organization": OTHER}, {"org": OTHER}):
        page = web.get(PAGE, params)
        assert f"evt_{ORG}_001" in page.text and "Intruder" not in page.text
        api = web.get(f"{PAGE}/api/events", params).json()
        assert [e["organization_id"] for e in api["data"]] == [ORG]
        rows = list(csv.reader(io.StringIO(web.get(f"{PAGE}/export.csv", params).text)))
        assert [row[0] for row in rows[1:]] == [f"evt_{ORG}_001"]
    assert web.get(f"{PAGE}/events/evt_{OTHER}_002").status == 404
    assert web.get(f"{PAGE}/api/events/evt_{OTHER}_002").status == 404
    assert web.get(f"{PAGE}/api/status", {"organization_id": OTHER}).json()["organization_id"] == ORG


def test_hostile_filter_values_are_refused_or_escaped(web: Web, store: EventStore) -> None:
    store.append([event(1)])
    script = "<script>alert(1)</script>"
    page = web.get(PAGE, {"actor": script, "q": "' OR 1=1 --"})
    assert page.status == 200 and script not in page.text and "&lt;script&gt;" in page.text
    assert "No events match" in page.text
    for bad in ({"actor": "x" * 1001}, {"since": "yesterday"}, {"action": "a*b"}, {"cursor": "forged"}):
        response = web.get(PAGE, bad)
        assert response.status == 400, bad
        assert "<script" not in response.text
        assert web.get(f"{PAGE}/api/events", bad).status == 400
        if "cursor" not in bad:
            assert web.get(f"{PAGE}/export.csv", bad).status == 400
    assert web.get(f"{PAGE}/api/events", {"limit": "100000"}).status == 400
    # A cursor made for another organization's listing is refused, not followed.
    store.append([event(n, org=OTHER) for n in range(5)])
    foreign_cursor = store.query(EventQuery(OTHER, limit=1)).next_cursor
    assert foreign_cursor
    assert web.get(f"{PAGE}/api/events", {"cursor": foreign_cursor}).status == 400


def test_event_details_are_escaped(web: Web, store: EventStore) -> None:
    store.append([event(1, actor_name="<img src=x onerror=alert(1)>", metadata={"note": "</pre><script>x</script>"})])
    page = web.get(f"{PAGE}/events/evt_{ORG}_001")
    assert page.status == 200
    assert "<img src=x" not in page.text and "<script>x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "&quot;note&quot;: &quot;&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;&quot;" in page.text  # pretty JSON


# -- table, filters, pagination, export, API -------------------------------------------------------------------


def _ids(html: str) -> list[str]:
    return re.findall(r"/events/(evt_[A-Za-z0-9_]+)\"", html)


def test_filters_and_keyset_pagination(web: Web, store: EventStore) -> None:
    store.append(
        [
            event(1, action="project.create", target=("project", "proj_atlas")),
            event(2, action="api_key.create", actor="user_grace", actor_name="Grace Hopper"),
            event(3, action="mcp_proxy.update_status", target=("mcp_proxy", "mcp_7")),
            event(4, action="mcp_proxy.revoke", target=("mcp_proxy", "mcp_9")),
            event(5, action="api_key.create", when=BASE_TIME + dt.timedelta(days=3)),
        ]
    )
    first = web.get(PAGE)
    assert _ids(first.text) == [f"evt_{ORG}_{n:03d}" for n in (5, 4, 3)]
    next_link = re.search(r'<a rel="next" href="([^"]+)"', first.text)
    assert next_link
    href = next_link.group(1).replace("&amp;", "&")
    second = web.get(href.split("?")[0], dict(p.split("=", 1) for p in href.split("?")[1].split("&")))
    assert _ids(second.text) == [f"evt_{ORG}_002", f"evt_{ORG}_001"]
    assert 'rel="next"' not in second.text and "First page" in second.text

    def ids(**filters: str) -> list[str]:
        return [e["id"].rsplit("_", 1)[1] for e in web.get(f"{PAGE}/api/events", filters).json()["data"]]

    assert ids(actor="Grace Hopper") == ["002"]
    assert ids(actor="user_grace") == ["002"]
    assert ids(action="mcp_proxy.*") == ["004", "003"]
    assert ids(target_type="mcp_proxy", target_id="mcp_9") == ["004"]
    assert ids(since="2026-01-13") == ["005"]
    assert ids(until="2026-01-10") == ["004", "003", "002", "001"]  # the end date is included
    assert ids(q="ATLAS") == ["005", "002", "001"]  # free text, case-insensitive (target names)
    page = web.get(PAGE, {"action": "mcp_proxy.*"})
    assert 'value="mcp_proxy.*"' in page.text  # the form keeps the filter


def test_export_csv_streams_the_filtered_rows_as_an_attachment(web: Web, store: EventStore) -> None:
    store.append([event(n, action="mcp_proxy.create" if n % 2 else "api_key.create") for n in range(1, 8)])
    response = web.get(f"{PAGE}/export.csv", {"action": "mcp_proxy.create", "cursor": "ignored"})
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="audit-logs-org_01ACME-') and disposition.endswith('.csv"')
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:3] == ["id", "action", "occurred_at"]
    assert [row[0] for row in rows[1:]] == [f"evt_{ORG}_{n:03d}" for n in (7, 5, 3, 1)]  # all pages, not just one
    assert "Export CSV" in web.get(PAGE).text


def test_json_api(web: Web, store: EventStore) -> None:
    store.append([event(n) for n in range(1, 5)])
    first = web.get(f"{PAGE}/api/events", {"limit": "2"})
    assert first.headers["content-type"].startswith("application/json")
    body = first.json()
    assert [e["id"] for e in body["data"]] == [f"evt_{ORG}_004", f"evt_{ORG}_003"]
    rest = web.get(f"{PAGE}/api/events", {"limit": "2", "cursor": body["next_cursor"]}).json()
    assert [e["id"] for e in rest["data"]] == [f"evt_{ORG}_002", f"evt_{ORG}_001"]
    assert rest["next_cursor"] is None
    one = web.get(f"{PAGE}/api/events/evt_{ORG}_003").json()
    assert one["actor"]["id"] == "user_ada" and one["context"]["location"] == "203.0.113.9"
    assert web.get(f"{PAGE}/api/events/evt_nope").json()["error"] == "not_found"
    assert web.get(f"{PAGE}/api/status").json() == {
        "organization_id": ORG,
        "active": True,
        "cancel_at_period_end": False,
        "current_period_end": None,
    }


def test_without_a_store_there_is_no_table(make_web: WebFactory) -> None:
    web = make_web(store=None)
    page = web.get(PAGE)
    assert "View Audit Logs" in page.text and "<table" not in page.text
    assert web.get(f"{PAGE}/api/events").status == 404
    assert web.get(f"{PAGE}/export.csv").status == 404


# -- accessibility basics --------------------------------------------------------------------------------------


def test_page_markup_is_accessible(web: Web, store: EventStore) -> None:
    store.append([event(1)])
    html = web.get(PAGE).text
    assert html.startswith('<!doctype html><html lang="en">')
    assert '<main id="main"' in html and '<header class="top">' in html and 'aria-label="Pagination"' not in html
    assert 'class="skip" href="#main"' in html
    inputs = re.findall(r'<input id="([^"]+)"', html)
    assert len(inputs) == 7
    for input_id in inputs:
        assert f'<label for="{input_id}">' in html
    headers = re.findall(r"<th(\s[^>]*)?>", html)
    assert headers and all('scope="col"' in attrs for attrs in headers)
    assert html.count("<button") == 3  # two portal buttons, the filter button; no POST is a link
    assert "focus-visible" in html and "(opens in a new tab)" in html


# -- the Stripe webhook route ----------------------------------------------------------------------------------


def test_stripe_webhook_route_verifies_signatures(make_web: WebFactory) -> None:
    pytest.importorskip("stripe")
    from centure_audit_middleware.admin.stripe_entitlements import StripeEntitlements
    from centure_audit_middleware.admin.testing import sign_webhook

    secret = "whsec_page_tests"
    # Stripe itself is never reached: the webhook carries everything, and the TTL keeps the answer.
    stripe_ent = StripeEntitlements(
        "sk_test_x", "price_audit", api_base="http://127.0.0.1:9", webhook_secret=secret, max_network_retries=0
    )
    web = make_web(entitlements=stripe_ent)
    now = int(dt.datetime.now(dt.UTC).timestamp())
    subscription = {
        "id": "sub_1",
        "customer": "cus_1",
        "status": "active",
        "metadata": {"organization_id": ORG},
        "items": {"data": [{"id": "si_1", "price": {"id": "price_audit"}, "current_period_end": now + 86400}]},
    }
    payload = json.dumps(
        {"id": "evt_1", "type": "customer.subscription.created", "created": now, "data": {"object": subscription}}
    ).encode()
    hook = f"{PAGE}/billing/stripe-webhook"
    json_type = {"content-type": "application/json"}
    bad = web.post(hook, raw=payload, headers={**json_type, "stripe-signature": sign_webhook(payload, "whsec_other")})
    assert bad.status == 400
    assert web.get(f"{PAGE}/api/status").status == 503  # nothing known, and Stripe unreachable
    # No session, no CSRF token: Stripe's signature is the credential.
    good = web.post(hook, raw=payload, headers={**json_type, "stripe-signature": sign_webhook(payload, secret)})
    assert (good.status, good.json()) == (200, {"received": True})
    assert web.get(f"{PAGE}/api/status").json()["active"] is True
    assert "View Audit Logs" in web.get(PAGE).text
    stripe_ent.close()
