"""StripeEntitlements: Checkout Sessions at the HTTP level, subscriptions and signed webhooks against localstripe."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

stripe = pytest.importorskip("stripe")
pytest.importorskip("localstripe")

from starlette.applications import Starlette  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from centure_audit_middleware.admin import AuditLogsPage, EntitlementsUnavailable, WebhookError  # noqa: E402
from centure_audit_middleware.admin.hooks import AdminHooks  # noqa: E402
from centure_audit_middleware.admin.starlette import page_router  # noqa: E402
from centure_audit_middleware.admin.stripe_entitlements import StripeEntitlements  # noqa: E402
from centure_audit_middleware.admin.stripe_http import StdlibHTTPClient  # noqa: E402
from centure_audit_middleware.admin.testing import LocalStripe, sign_webhook  # noqa: E402

API_KEY = "sk_test_centure_admin"
SECRET = "whsec_centure_admin_tests"
PRICE = "price_audit_logging"


class Clock:
    """An injectable clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[_Server, threading.Thread]:
    server = _Server(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits up to one interval, and every test stops a server or two.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def _stop(server: _Server, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(5)


class Recorder:
    """A loopback stand-in for api.stripe.com: records each request, answers with the canned JSON for its path."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode()
                path = urlsplit(self.path).path
                recorder.requests.append(
                    {
                        "method": self.command,
                        "path": path,
                        "query": parse_qs(urlsplit(self.path).query),
                        "form": parse_qs(body),
                        "headers": dict(self.headers),
                    }
                )
                payload = json.dumps(recorder.answers.get(path, {"error": {"message": "no such route"}})).encode()
                self.send_response(200 if path in recorder.answers else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.server, self.thread = _serve(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        _stop(self.server, self.thread)


class WebhookReceiver:
    """The app's webhook endpoint, reduced to what matters: the raw body and signature go to handle_webhook."""

    def __init__(self, entitlements: StripeEntitlements) -> None:
        self.received: list[tuple[int, str]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    kind = entitlements.handle_webhook(body, self.headers.get("stripe-signature"))
                    status = 200
                except WebhookError:
                    kind, status = "", 400
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._changed:
                    receiver.received.append((status, kind))
                    receiver._changed.notify_all()

        self.server, self.thread = _serve(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhook"

    def wait_for(self, kind: str, timeout: float = 10.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: (200, kind) in self.received, timeout), self.received

    def close(self) -> None:
        _stop(self.server, self.thread)


@pytest.fixture(scope="module")
def fake_stripe() -> Iterator[LocalStripe]:
    with LocalStripe() as fake:
        yield fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def org() -> str:
    # Unique per test: localstripe may still deliver an earlier test's event to the newest webhook URL.
    return f"org_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def stripe_client(fake_stripe: LocalStripe) -> Any:
    return stripe.StripeClient(API_KEY, base_addresses={"api": fake_stripe.url}, http_client=StdlibHTTPClient())


@pytest.fixture
def entitlements(fake_stripe: LocalStripe, clock: Clock) -> Iterator[StripeEntitlements]:
    ent = StripeEntitlements(API_KEY, PRICE, api_base=fake_stripe.url, webhook_secret=SECRET, ttl=60, clock=clock)
    yield ent
    ent.close()


@pytest.fixture
def receiver(entitlements: StripeEntitlements, fake_stripe: LocalStripe) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(entitlements)
    fake_stripe.add_webhook("admin-tests", receiver.url, SECRET)
    yield receiver
    receiver.close()


def subscribe(client: Any, org: str, price: str = PRICE, *, tagged: bool = True) -> Any:
    """An organization's paid subscription to `price` in localstripe, as Checkout would leave it (`tagged=False`: as
    the app's own billing code might make it, without the organization in its metadata)."""
    try:
        client.v1.plans.retrieve(price)
    except stripe.InvalidRequestError:
        product = client.v1.products.create(params={"name": "Audit Logging"})
        client.v1.plans.create(
            params={"id": price, "product": product.id, "amount": 1000, "currency": "usd", "interval": "month"}
        )
    customer = client.v1.customers.create(params={"email": f"billing@{org}.example"})
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"}
    method = client.v1.payment_methods.create(params={"type": "card", "card": card})
    client.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": method.id}})
    metadata = {"organization_id": org} if tagged else {}
    return client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"plan": price}], "metadata": metadata}
    )


def signed(entitlements: StripeEntitlements, event: dict[str, Any], *, secret: str = SECRET) -> str:
    payload = json.dumps(event).encode()
    return entitlements.handle_webhook(payload, sign_webhook(payload, secret))


def subscription_event(kind: str, created: int, org: str, **fields: Any) -> dict[str, Any]:
    subscription = {
        "id": "sub_handmade",
        "object": "subscription",
        "customer": "cus_handmade",
        "status": "active",
        "cancel_at_period_end": False,
        "cancel_at": None,
        "metadata": {"organization_id": org},
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": PRICE}, "current_period_end": 2_000_000}]},
        **fields,
    }
    return {
        "id": f"evt_{created}",
        "object": "event",
        "type": kind,
        "created": created,
        "data": {"object": subscription},
    }


# -- Checkout Sessions: the exact request, against a recording server -------------------------------------------


def test_checkout_url_creates_a_subscription_session_for_the_addon_price() -> None:
    session = {
        "id": "cs_test_a1b2c3",
        "object": "checkout.session",
        "mode": "subscription",
        "status": "open",
        "url": "https://checkout.stripe.com/c/pay/cs_test_a1b2c3#fidkdWxOYHwnPyd1blpxYHZxWjA0",
        "client_reference_id": "org_01ACME",
    }
    recorder = Recorder({"/v1/checkout/sessions": session})
    ent = StripeEntitlements(API_KEY, PRICE, api_base=recorder.url)
    try:
        url = ent.checkout_url(
            "org_01ACME", "https://app.example/audit-logs?checkout=success", "https://app.example/audit-logs"
        )
    finally:
        ent.close()
        recorder.close()

    assert url == session["url"]
    (request,) = recorder.requests
    assert (request["method"], request["path"]) == ("POST", "/v1/checkout/sessions")
    assert request["headers"]["Authorization"] == f"Bearer {API_KEY}"
    form = {key: values[0] for key, values in request["form"].items()}
    assert form == {
        "mode": "subscription",
        "line_items[0][price]": PRICE,
        "line_items[0][quantity]": "1",
        "success_url": "https://app.example/audit-logs?checkout=success",
        "cancel_url": "https://app.example/audit-logs",
        "client_reference_id": "org_01ACME",
        "metadata[organization_id]": "org_01ACME",
        "subscription_data[metadata][organization_id]": "org_01ACME",
    }


def test_checkout_reuses_the_organizations_customer() -> None:
    recorder = Recorder({"/v1/checkout/sessions": {"id": "cs_1", "object": "checkout.session", "url": "https://x"}})
    ent = StripeEntitlements(API_KEY, PRICE, api_base=recorder.url, customer_id=lambda org: "cus_known")
    try:
        ent.checkout_url("org_1", "https://a/ok", "https://a/no")
    finally:
        ent.close()
        recorder.close()
    assert recorder.requests[0]["form"]["customer"] == ["cus_known"]


def test_without_a_known_customer_the_subscription_is_found_by_search(clock: Clock) -> None:
    period_end = int(time.time()) + 20 * 86400
    found = {
        "object": "search_result",
        "data": [
            {
                "id": "sub_1",
                "object": "subscription",
                "customer": "cus_9",
                "status": "active",
                "cancel_at_period_end": True,
                "cancel_at": None,
                "metadata": {"organization_id": "org_it's"},
                # The current API's shape: the price and the billing period on the item.
                "items": {
                    "object": "list",
                    "data": [{"id": "si", "price": {"id": PRICE}, "current_period_end": period_end}],
                },
            },
            {
                "id": "sub_2",
                "object": "subscription",
                "customer": "cus_9",
                "status": "active",
                "metadata": {"organization_id": "org_it's"},
                "items": {"object": "list", "data": [{"id": "si2", "price": {"id": "price_other"}}]},
            },
        ],
        "has_more": False,
    }
    recorder = Recorder({"/v1/subscriptions/search": found})
    ent = StripeEntitlements(API_KEY, PRICE, api_base=recorder.url, clock=clock)
    try:
        status = ent.status("org_it's")
    finally:
        ent.close()
        recorder.close()
    assert status.active and status.cancel_at_period_end
    assert status.current_period_end == dt.datetime.fromtimestamp(period_end, dt.UTC)
    (request,) = recorder.requests
    assert request["method"] == "GET"
    assert unquote(request["query"]["query"][0]) == "metadata['organization_id']:'org_it\\'s'"


def test_stripe_unreachable_with_nothing_cached_is_unavailable_not_inactive(clock: Clock) -> None:
    recorder = Recorder({})
    url = recorder.url
    recorder.close()  # nothing listens there any more
    ent = StripeEntitlements(API_KEY, PRICE, api_base=url, clock=clock, max_network_retries=0, webhook_secret=SECRET)
    try:
        with pytest.raises(EntitlementsUnavailable):
            ent.status("org_down")
        # Once a webhook said something, an outage serves that (stale) answer instead of an error.
        signed(ent, subscription_event("customer.subscription.created", int(time.time()), "org_down"))
        clock.offset = 3600
        assert ent.status("org_down").active
        assert ent.stats()["fetch_failures"] == 2
    finally:
        ent.close()


# -- signed webhooks -------------------------------------------------------------------------------------------


def test_webhooks_without_a_valid_signature_are_refused(entitlements: StripeEntitlements, org: str) -> None:
    event = subscription_event("customer.subscription.created", int(time.time()), org)
    payload = json.dumps(event).encode()
    with pytest.raises(WebhookError):
        entitlements.handle_webhook(payload, None)
    with pytest.raises(WebhookError):
        entitlements.handle_webhook(payload, sign_webhook(payload, "whsec_someone_else"))
    with pytest.raises(WebhookError):
        entitlements.handle_webhook(payload + b" ", sign_webhook(payload, SECRET))  # body changed after signing
    with pytest.raises(WebhookError):
        entitlements.handle_webhook(payload, sign_webhook(payload, SECRET, timestamp=int(time.time()) - 3600))
    assert entitlements.stats()["webhooks_rejected"] == 4
    assert entitlements.stats().get("webhooks_applied", 0) == 0


def test_no_secret_no_webhooks() -> None:
    ent = StripeEntitlements(API_KEY, PRICE, api_base="http://127.0.0.1:9")
    try:
        with pytest.raises(WebhookError, match="not configured"):
            ent.handle_webhook(b"{}", "t=1,v1=00")
    finally:
        ent.close()


def test_events_delivered_out_of_order_do_not_roll_back(entitlements: StripeEntitlements, org: str) -> None:
    now = int(time.time())
    ending = now + 86400
    signed(entitlements, subscription_event("customer.subscription.updated", now, org, cancel_at=ending))
    # The older "created" event arrives last: it must not undo the cancellation.
    signed(entitlements, subscription_event("customer.subscription.created", now - 30, org))
    status = entitlements.status(org)
    assert status.active and status.cancel_at_period_end
    assert status.current_period_end == dt.datetime.fromtimestamp(ending, dt.UTC)
    assert entitlements.stats()["webhooks_ignored"] == 1


def test_other_products_and_unknown_events_are_ignored(entitlements: StripeEntitlements, org: str) -> None:
    other = subscription_event("customer.subscription.created", int(time.time()), org)
    other["data"]["object"]["items"]["data"][0]["price"] = {"id": "price_something_else"}
    assert signed(entitlements, other) == "customer.subscription.created"
    assert signed(entitlements, {"id": "evt_x", "type": "invoice.paid", "created": 1, "data": {"object": {}}})
    assert entitlements.stats()["webhooks_ignored"] == 2


# -- against localstripe ---------------------------------------------------------------------------------------


def test_subscription_webhook_turns_the_addon_on(
    entitlements: StripeEntitlements, receiver: WebhookReceiver, stripe_client: Any, org: str
) -> None:
    subscription = subscribe(stripe_client, org)
    receiver.wait_for("customer.subscription.created")
    status = entitlements.status(org)
    assert status.active and not status.cancel_at_period_end
    assert status.current_period_end == dt.datetime.fromtimestamp(subscription.current_period_end, dt.UTC)
    assert entitlements.stats().get("fetches", 0) == 0  # the webhook said it all


def test_cancellation_takes_effect_at_the_end_of_the_period(
    entitlements: StripeEntitlements, receiver: WebhookReceiver, stripe_client: Any, org: str, clock: Clock
) -> None:
    subscription = subscribe(stripe_client, org)
    receiver.wait_for("customer.subscription.created")
    stripe_client.v1.subscriptions.update(subscription.id, params={"cancel_at_period_end": True})
    # localstripe sends no "updated" event: the cached answer stands until the TTL runs out, then Stripe is read.
    assert not entitlements.status(org).cancel_at_period_end
    clock.offset = entitlements.ttl + 1
    status = entitlements.status(org)
    assert status.active and status.cancel_at_period_end
    assert status.current_period_end == dt.datetime.fromtimestamp(subscription.current_period_end, dt.UTC)
    assert entitlements.stats()["fetches"] == 1
    # The period ends: off, although Stripe still says "active" until it processes the cancellation.
    clock.offset = subscription.current_period_end - time.time() + 1
    assert not entitlements.is_active(org)


def test_deleting_the_subscription_turns_the_addon_off(
    entitlements: StripeEntitlements, receiver: WebhookReceiver, stripe_client: Any, org: str
) -> None:
    subscription = subscribe(stripe_client, org)
    receiver.wait_for("customer.subscription.created")
    assert entitlements.is_active(org)
    stripe_client.v1.subscriptions.cancel(subscription.id)
    receiver.wait_for("customer.subscription.deleted")
    assert not entitlements.is_active(org)


def test_checkout_completion_ties_the_customer_to_the_organization(
    entitlements: StripeEntitlements, stripe_client: Any, org: str
) -> None:
    subscription = subscribe(stripe_client, org, price=PRICE)
    completed = {
        "id": "evt_cs",
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": "cs_test_1",
                "object": "checkout.session",
                "client_reference_id": org,
                "customer": subscription.customer,
                "subscription": subscription.id,
            }
        },
    }
    assert signed(entitlements, completed) == "checkout.session.completed"
    # Read from localstripe by customer: no search needed (localstripe has none).
    assert entitlements.is_active(org)
    assert entitlements.stats()["fetches"] == 1


def test_the_apps_customer_hook_is_used_for_reads(fake_stripe: LocalStripe, stripe_client: Any, clock: Clock) -> None:
    org = f"org_{uuid.uuid4().hex[:12]}"
    subscription = subscribe(stripe_client, org)
    lookup: Callable[[str], str | None] = lambda o: subscription.customer if o == org else None  # noqa: E731
    ent = StripeEntitlements(API_KEY, PRICE, api_base=fake_stripe.url, customer_id=lookup, clock=clock)
    try:
        assert ent.is_active(org)
    finally:
        ent.close()


# -- one organization per customer: the first binding wins -----------------------------------------------------


def checkout_completed(org: str, customer: str) -> dict[str, Any]:
    session = {"id": f"cs_{org}", "object": "checkout.session", "client_reference_id": org, "customer": customer}
    return {
        "id": f"evt_cs_{org}",
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "data": {"object": session},
    }


def stripe_event(kind: str, obj: Any, **fields: Any) -> dict[str, Any]:
    """An event carrying `obj` as localstripe has it (with `fields` changed), newer than any read made so far (whose
    Stripe time is the wall clock), as Stripe's own event would be."""
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": kind,
        "created": int(time.time()) + 1,
        "data": {"object": {**obj.to_dict(), **fields}},
    }


@pytest.mark.parametrize("conflict", ["checkout.session.completed", "customer.subscription.created"])
def test_a_signed_event_never_rebinds_a_customer_to_another_organization(
    fake_stripe: LocalStripe, stripe_client: Any, clock: Clock, conflict: str, caplog: pytest.LogCaptureFixture
) -> None:
    org_a, org_b = f"org_a_{uuid.uuid4().hex[:12]}", f"org_b_{uuid.uuid4().hex[:12]}"
    own = subscribe(stripe_client, org_a, tagged=False)  # A's, tied to A only through its customer
    b_customer = stripe_client.v1.customers.create(params={"email": f"billing@{org_b}.example"}).id
    lookup: Callable[[str], str | None] = lambda o: b_customer if o == org_b else None  # noqa: E731
    ent = StripeEntitlements(
        API_KEY, PRICE, api_base=fake_stripe.url, webhook_secret=SECRET, ttl=60, clock=clock, customer_id=lookup
    )
    try:
        signed(ent, checkout_completed(org_a, own.customer))
        assert ent.is_active(org_a)
        # A signed event naming B for A's customer: B's checkout on that customer, or B's subscription (not paid yet).
        if conflict == "checkout.session.completed":
            signed(ent, checkout_completed(org_b, own.customer))
        else:
            sub_b = {"id": "sub_b", "customer": own.customer, "status": "incomplete"}
            signed(ent, subscription_event(conflict, int(time.time()), org_b, **sub_b))
        assert ent.stats()["customer_conflicts"] == 1
        assert f"customer {own.customer} belongs to organization {org_a}" in caplog.text
        assert API_KEY not in caplog.text and SECRET not in caplog.text

        clock.offset = ent.ttl + 1  # both organizations are read from Stripe again
        assert not ent.is_active(org_b)  # B does not count A's subscription as its own
        assert ent.is_active(org_a)
        # A's cancellation (its event names no organization: the customer's binding decides) turns A off.
        cancelled = stripe_client.v1.subscriptions.cancel(own.id)
        signed(ent, stripe_event("customer.subscription.deleted", cancelled))
        assert not ent.is_active(org_a)
    finally:
        ent.close()


def test_a_subscription_tagged_for_another_organization_never_counts_for_the_customers(
    entitlements: StripeEntitlements, stripe_client: Any
) -> None:
    org_a, org_b = f"org_a_{uuid.uuid4().hex[:12]}", f"org_b_{uuid.uuid4().hex[:12]}"
    own = subscribe(stripe_client, org_a, tagged=False)
    signed(entitlements, checkout_completed(org_a, own.customer))
    assert entitlements.is_active(org_a)

    # Its metadata now names B (localstripe keeps no metadata edits of a subscription: the events say it).
    tagged_b = {"metadata": {"organization_id": org_b}}
    signed(entitlements, stripe_event("customer.subscription.updated", own, **tagged_b))
    assert not entitlements.is_active(org_a)  # not even from A's cache
    assert entitlements.is_active(org_b)
    assert entitlements.stats()["customer_conflicts"] == 1  # the customer stays A's

    cancelled = stripe_client.v1.subscriptions.cancel(own.id)
    signed(entitlements, stripe_event("customer.subscription.deleted", cancelled, **tagged_b))
    assert not entitlements.is_active(org_b)
    assert not entitlements.is_active(org_a)


# -- back from Checkout: Stripe is read at most once per organization per interval --------------------------------


class CountingHTTPClient(StdlibHTTPClient):
    """The HTTP client StripeEntitlements talks to Stripe through, noting each request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def request(
        self, method: str, url: str, headers: Any, post_data: Any = None, *, _usage: list[str] | None = None
    ) -> tuple[Any, int, Any]:
        self.sent.append(f"{method.upper()} {urlsplit(url).path}")
        return super().request(method, url, headers, post_data, _usage=_usage)


def test_back_from_checkout_reads_stripe_at_most_once_per_interval(
    fake_stripe: LocalStripe, stripe_client: Any, clock: Clock, org: str
) -> None:
    other = f"org_{uuid.uuid4().hex[:12]}"
    customers = {o: subscribe(stripe_client, o).customer for o in (org, other)}
    http = CountingHTTPClient()
    ent = StripeEntitlements(
        API_KEY,
        PRICE,
        api_base=fake_stripe.url,
        ttl=3600,  # only the page's refreshes read Stripe here
        clock=clock,
        customer_id=customers.get,
        http_client=http,
    )
    page = AuditLogsPage(entitlements=ent, secret_key=SECRET, clock=clock)
    assert page.checkout_refresh_interval == 30.0
    hooks = AdminHooks(is_admin=lambda request: True, organization=lambda request: request.headers["x-org"])
    router = page_router(page, hooks)
    back = {"checkout": "success"}
    try:
        with TestClient(Starlette(routes=list(router.routes))) as client:
            for _ in range(5):  # an admin reloading the return URL, or a script hammering it
                assert client.get("/audit-logs", params=back, headers={"x-org": org}).status_code == 200
            assert http.sent == ["GET /v1/subscriptions"]
            # Another organization has its own interval.
            assert client.get("/audit-logs", params=back, headers={"x-org": other}).status_code == 200
            assert http.sent == ["GET /v1/subscriptions"] * 2
            clock.offset = page.checkout_refresh_interval
            for _ in range(3):
                assert client.get("/audit-logs", params=back, headers={"x-org": org}).status_code == 200
            assert http.sent == ["GET /v1/subscriptions"] * 3
    finally:
        ent.close()
