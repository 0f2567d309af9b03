"""`StripeEntitlements`: the Audit Logging add-on sold and tracked through Stripe subscriptions.

- Subscribe Now: `checkout_url()` creates a Checkout Session (mode subscription, the add-on's price) that carries the
  organization id three times: `client_reference_id` and `metadata` of the session (seen by
  ``checkout.session.completed``), and `subscription_data.metadata` (copied by Stripe onto the subscription, so every
  later ``customer.subscription.*`` event and every API read says which organization it is for).
- Webhooks: `handle_webhook(payload, signature)` verifies the signature (`stripe.Webhook.construct_event`, through
  our client) and updates the cached state; events may arrive out of order, so an event older than what is cached
  for that subscription is ignored.
- Reads: `status()` answers from the cache while it is fresher than `ttl`; a stale entry is fetched again from
  Stripe. The TTL is what keeps several processes right when only one of them received a webhook, and what notices
  changes that send none. If Stripe is unreachable the stale answer is kept (and retried every `retry_interval`);
  with nothing cached, `EntitlementsUnavailable`.
- Cancellation takes effect at the end of the billing period: a subscription with `cancel_at_period_end` (or
  `cancel_at`) stays active until that moment on `clock`, even before Stripe has processed the cancellation.

Which subscriptions belong to an organization: those of its Stripe customer (learned from webhooks, or given by the
app's `customer_id(organization_id)` hook, e.g. from its billing table) carrying the add-on's price, or else, with no
customer known, the ones Stripe's search finds by ``metadata['organization_id']``.

One organization per customer, and the first binding wins: once a customer is bound to an organization (by a webhook
or a read), no later event re-binds it. Otherwise one signed event naming another organization would hand it every
untagged subscription of that customer, and their cancellations. A conflicting event is ignored for the binding,
logged (a warning) and counted (``customer_conflicts`` in `stats()`). A subscription counts for exactly one
organization: the one its metadata names, else its customer's; never another organization through the customer. The
bindings live in this process: the app's `customer_id` hook is the durable answer.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

try:
    import stripe
except ModuleNotFoundError as exc:  # the Stripe SDK is the optional [stripe] extra: say how to install it
    if exc.name != "stripe":
        raise
    raise ModuleNotFoundError(
        "StripeEntitlements needs the Stripe SDK: pip install 'centure-audit-middleware[stripe]'", name="stripe"
    ) from None

from .entitlements import INACTIVE, EntitlementStatus, EntitlementsUnavailable, WebhookError
from .stripe_http import StdlibHTTPClient

if TYPE_CHECKING:
    from stripe import HTTPClient
    from stripe.params.checkout import SessionCreateParams

__all__ = ["ORGANIZATION_METADATA_KEY", "StripeEntitlements", "WebhookError"]

logger = logging.getLogger("centure_audit_middleware.admin")

#: The metadata key that ties a Checkout Session and a subscription to an organization.
ORGANIZATION_METADATA_KEY: Final = "organization_id"
#: Subscription statuses that keep the add-on on. ``past_due`` is included on purpose: Stripe is still retrying the
#: payment (smart retries) and ends the subscription itself if they all fail; cutting audit logging off during dunning
#: would punish a customer for a card that expired yesterday.
ACTIVE_STATUSES: Final = frozenset({"active", "trialing", "past_due"})
_SUBSCRIPTION_EVENTS: Final = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)


@dataclass(frozen=True, slots=True)
class _Subscription:
    id: str
    status: str
    cancel_at_period_end: bool
    cancel_at: int | None
    current_period_end: int | None
    #: Stripe time (Unix seconds) of the information: the event's `created`, or when we fetched it.
    as_of: float

    def ends_at(self) -> int | None:
        """When access ends, if a cancellation is scheduled."""
        if self.cancel_at:
            return self.cancel_at
        return self.current_period_end if self.cancel_at_period_end else None


@dataclass(slots=True)
class _OrgState:
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    customer_id: str | None = None
    #: On the injected clock; -inf: never fetched (the next read fetches).
    fetched_at: float = -math.inf


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _id_of(value: object) -> str | None:
    """A Stripe reference: an id string, or an expanded object with an id."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        ref = value.get("id")
        return ref if isinstance(ref, str) else None
    return None


def _items(subscription: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    return [item for item in data or () if isinstance(item, Mapping)]


def _addon_item(subscription: Mapping[str, Any], price_id: str) -> Mapping[str, Any] | None:
    for item in _items(subscription):
        # Current API versions say `price`; older ones (and localstripe) say `plan`: a plan id is a price id.
        if price_id in (_id_of(item.get("price")), _id_of(item.get("plan"))):
            return item
    return None


def _organization_of(subscription: Mapping[str, Any]) -> str | None:
    metadata = subscription.get("metadata")
    org = metadata.get(ORGANIZATION_METADATA_KEY) if isinstance(metadata, Mapping) else None
    return org if isinstance(org, str) and org else None


def _parse(subscription: Mapping[str, Any], price_id: str, as_of: float) -> _Subscription | None:
    """The add-on subscription, or None if `subscription` is not for the add-on's price."""
    item = _addon_item(subscription, price_id)
    sub_id = subscription.get("id")
    if item is None or not isinstance(sub_id, str):
        return None
    # API versions from 2025-03-31 moved the billing period onto the items; older ones keep it on the subscription.
    period_end = _as_int(item.get("current_period_end")) or _as_int(subscription.get("current_period_end"))
    return _Subscription(
        id=sub_id,
        status=str(subscription.get("status") or ""),
        cancel_at_period_end=subscription.get("cancel_at_period_end") is True,
        cancel_at=_as_int(subscription.get("cancel_at")),
        current_period_end=period_end,
        as_of=as_of,
    )


def _to_datetime(timestamp: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp is not None else None


def evaluate(subscriptions: Iterable[_Subscription], now: float) -> EntitlementStatus:
    """The organization's status at `now` from its add-on subscriptions: a subscription that renews wins over one
    that is ending; among ending ones, the one ending last."""
    best: EntitlementStatus | None = None
    best_end = -math.inf
    for sub in subscriptions:
        if sub.status not in ACTIVE_STATUSES:
            continue
        ends = sub.ends_at()
        if ends is not None and now >= ends:
            continue  # cancelled at period end, and the period is over (Stripe may not have caught up yet)
        if ends is None:
            return EntitlementStatus(True, False, _to_datetime(sub.current_period_end))
        if ends > best_end:
            best, best_end = EntitlementStatus(True, True, _to_datetime(ends)), ends
    return best or INACTIVE


def _search_query(organization_id: str) -> str:
    # Stripe's search language quotes values with single quotes and escapes with a backslash.
    escaped = organization_id.replace("\\", "\\\\").replace("'", "\\'")
    return f"metadata['{ORGANIZATION_METADATA_KEY}']:'{escaped}'"


class StripeEntitlements:
    """Entitlements from Stripe subscriptions to the add-on's `price_id`. Thread-safe; one instance per process.

    `api_base` points the SDK elsewhere (localstripe, a recording server in tests); `clock` (Unix seconds) drives the
    TTL and the end of cancelled periods, so tests can move time forward.
    """

    def __init__(
        self,
        api_key: str,
        price_id: str,
        *,
        webhook_secret: str | None = None,
        api_base: str | None = None,
        ttl: float = 300.0,
        retry_interval: float = 30.0,
        customer_id: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
        max_network_retries: int = 1,
        http_client: HTTPClient | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("StripeEntitlements needs a Stripe API key")
        if not price_id:
            raise ValueError("StripeEntitlements needs the add-on's price id")
        self.price_id = price_id
        self.ttl = ttl
        self.retry_interval = retry_interval
        self._webhook_secret = webhook_secret
        self._customer_hook = customer_id
        self._clock = clock
        self._http = http_client or StdlibHTTPClient(timeout)  # see stripe_http for why not the SDK's default
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )
        self._lock = threading.Lock()
        self._orgs: dict[str, _OrgState] = {}
        self._org_by_customer: dict[str, str] = {}
        #: Which organization's state holds each subscription: a subscription counts for one organization at a time.
        self._org_by_subscription: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    # -- reads ---------------------------------------------------------------------------------------------------
    def status(self, organization_id: str) -> EntitlementStatus:
        now = self._clock()
        with self._lock:
            state = self._orgs.get(organization_id)
            fresh = state is not None and now - state.fetched_at < self.ttl
            subscriptions = list(state.subscriptions.values()) if state is not None else []
        if not fresh:
            subscriptions = self._refresh_or_keep(organization_id, now)
        return evaluate(subscriptions, now)

    def is_active(self, organization_id: str) -> bool:
        return self.status(organization_id).active

    def invalidate(self, organization_id: str | None = None) -> None:
        """Forget the freshness of one organization's entry (or all): the next read asks Stripe."""
        with self._lock:
            states = self._orgs.values() if organization_id is None else [self._orgs.get(organization_id)]
            for state in states:
                if state is not None:
                    state.fetched_at = -math.inf

    def refresh(self, organization_id: str) -> EntitlementStatus:
        """Fetch the organization's subscriptions from Stripe now (`stripe.StripeError` if that fails)."""
        return evaluate(self._fetch(organization_id), self._clock())

    def stats(self) -> dict[str, int]:
        """``fetches``, ``fetch_failures``, ``webhooks``, ``webhooks_applied``, ``webhooks_ignored``,
        ``webhooks_rejected``, ``checkouts``, and ``customer_conflicts``: signed events that named another organization
        for a customer already bound to one (the binding was kept; see the module documentation)."""
        with self._lock:
            return dict(self._counts)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    # -- bindings (all with the lock held) -------------------------------------------------------------------------
    def _owner(self, subscription: Mapping[str, Any]) -> str | None:
        """The one organization `subscription` counts for: the one its metadata names, else its customer's."""
        customer = _id_of(subscription.get("customer"))
        return _organization_of(subscription) or (self._org_by_customer.get(customer) if customer else None)

    def _claim(self, customer: str, organization_id: str, event_type: str) -> bool:
        """Bind `customer` to `organization_id` unless it is bound to another one: the stored binding wins."""
        bound = self._org_by_customer.setdefault(customer, organization_id)
        if bound == organization_id:
            return True
        self._counts["customer_conflicts"] = self._counts.get("customer_conflicts", 0) + 1
        logger.warning(
            "Stripe %s names organization %s, but customer %s belongs to organization %s: binding kept",
            event_type,
            organization_id,
            customer,
            bound,
        )
        return False

    def _hold(self, organization_id: str, subscription: _Subscription) -> None:
        """Put `subscription` in the organization's state, and out of any other's (its metadata changed)."""
        holder = self._org_by_subscription.get(subscription.id)
        if holder is not None and holder != organization_id and holder in self._orgs:
            self._orgs[holder].subscriptions.pop(subscription.id, None)
        self._org_by_subscription[subscription.id] = organization_id
        self._orgs.setdefault(organization_id, _OrgState()).subscriptions[subscription.id] = subscription

    def _held(self, subscription_id: str) -> _Subscription | None:
        """What is known of the subscription, whichever organization holds it."""
        holder = self._org_by_subscription.get(subscription_id)
        state = self._orgs.get(holder) if holder is not None else None
        return state.subscriptions.get(subscription_id) if state is not None else None

    def _refresh_or_keep(self, organization_id: str, now: float) -> list[_Subscription]:
        try:
            return self._fetch(organization_id)
        except stripe.StripeError as exc:
            self._count("fetch_failures")
            with self._lock:
                state = self._orgs.get(organization_id)
                if state is None or (state.fetched_at == -math.inf and not state.subscriptions):
                    raise EntitlementsUnavailable(f"Stripe: {type(exc).__name__}") from None
                # Serve the stale answer, and ask again after `retry_interval` rather than on every read.
                state.fetched_at = now - self.ttl + self.retry_interval
                kept = list(state.subscriptions.values())
            logger.warning("Stripe unreachable (%s); using the cached add-on state", type(exc).__name__)
            return kept

    def _fetch(self, organization_id: str) -> list[_Subscription]:
        self._count("fetches")
        with self._lock:
            state = self._orgs.get(organization_id)
            customer = state.customer_id if state is not None else None
        if customer is None and self._customer_hook is not None:
            customer = self._customer_hook(organization_id)
        as_of = time.time()  # Stripe time, to order against webhook events' `created`
        found: list[Mapping[str, Any]]
        if customer is not None:
            listed = self._client.v1.subscriptions.list(params={"customer": customer, "status": "all", "limit": 100})
            found = [sub.to_dict() for sub in listed.data]
        else:
            searched = self._client.v1.subscriptions.search(
                params={"query": _search_query(organization_id), "limit": 100}
            )
            found = [sub.to_dict() for sub in searched.data]
        with self._lock:
            # A read binds a customer nobody has yet (the app's hook named it, or the search found it through this
            # organization's metadata); it never re-binds one.
            if customer is not None:
                self._org_by_customer.setdefault(customer, organization_id)
            state = self._orgs.setdefault(organization_id, _OrgState())
            state.subscriptions = {}
            for raw in found:
                parsed = _parse(raw, self.price_id, as_of)
                # A customer shared with other organizations lists theirs too: only this organization's count.
                if parsed is None or self._owner(raw) != organization_id:
                    continue
                self._hold(organization_id, parsed)
                if customer is None:
                    customer = _id_of(raw.get("customer"))
                    if customer is not None:
                        self._org_by_customer.setdefault(customer, organization_id)
            state.fetched_at = self._clock()
            if customer is not None and self._org_by_customer.get(customer) == organization_id:
                state.customer_id = customer
            return list(state.subscriptions.values())

    # -- checkout ------------------------------------------------------------------------------------------------
    def checkout_url(self, organization_id: str, success_url: str, cancel_url: str) -> str:
        """A Stripe Checkout page selling the add-on to `organization_id` (the admin is redirected there)."""
        with self._lock:
            state = self._orgs.get(organization_id)
            customer = state.customer_id if state is not None else None
        if customer is None and self._customer_hook is not None:
            customer = self._customer_hook(organization_id)
        metadata = {ORGANIZATION_METADATA_KEY: organization_id}
        params: SessionCreateParams = {
            "mode": "subscription",
            "line_items": [{"price": self.price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": organization_id,
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
        }
        if customer is not None:
            # The organization's existing customer: one customer, one invoice history, one saved card.
            params["customer"] = customer
        session = self._client.v1.checkout.sessions.create(params=params)
        self._count("checkouts")
        if not session.url:
            raise RuntimeError("Stripe returned a Checkout Session without a url")
        return session.url

    # -- webhooks ------------------------------------------------------------------------------------------------
    def handle_webhook(self, payload: bytes, signature: str | None) -> str:
        """Verify and apply one webhook; returns its event type. `WebhookError` (answer 400) if it can't be trusted.

        Unknown event types are accepted and ignored (answer 2xx, or Stripe retries them for days)."""
        if not self._webhook_secret:
            raise WebhookError("Stripe webhooks are not configured (no webhook_secret)")
        self._count("webhooks")
        try:
            event = self._client.construct_event(payload, signature, self._webhook_secret)
        except (ValueError, stripe.SignatureVerificationError) as exc:
            self._count("webhooks_rejected")
            raise WebhookError(f"invalid Stripe webhook: {type(exc).__name__}") from None
        data = event.to_dict()
        event_type = str(data.get("type") or "")
        body = data.get("data")
        obj = body.get("object") if isinstance(body, Mapping) else None
        created = _as_int(data.get("created")) or time.time()
        applied = False
        if isinstance(obj, Mapping):
            if event_type in _SUBSCRIPTION_EVENTS:
                applied = self._apply_subscription(obj, created, event_type)
            elif event_type == "checkout.session.completed":
                applied = self._apply_checkout(obj)
        self._count("webhooks_applied" if applied else "webhooks_ignored")
        return event_type

    def _apply_subscription(self, obj: Mapping[str, Any], created: float, event_type: str) -> bool:
        parsed = _parse(obj, self.price_id, created)
        if parsed is None:
            return False  # another product's subscription
        customer = _id_of(obj.get("customer"))
        with self._lock:
            org = self._owner(obj)
            if org is None:
                return False
            known = self._held(parsed.id)
            if known is not None and known.as_of > parsed.as_of:
                return False  # delivered out of order: we already know something newer
            if org not in self._orgs:
                # The webhook says all we need about this subscription: no fetch until the TTL runs out.
                self._orgs[org] = _OrgState(fetched_at=self._clock())
            self._hold(org, parsed)
            if customer is not None and self._claim(customer, org, event_type):
                self._orgs[org].customer_id = customer
        return True

    def _apply_checkout(self, obj: Mapping[str, Any]) -> bool:
        org = obj.get("client_reference_id")
        if not isinstance(org, str) or not org:
            org = _organization_of(obj)
        customer = _id_of(obj.get("customer"))
        if org is None:
            return False
        with self._lock:
            state = self._orgs.setdefault(org, _OrgState())
            if customer is not None and self._claim(customer, org, "checkout.session.completed"):
                state.customer_id = customer
            # The subscription's own event may come later (or first): either way, read it from Stripe next time.
            state.fetched_at = -math.inf
        return True

    def close(self) -> None:
        self._http.close()  # type: ignore[no-untyped-call]  # the SDK's base class leaves close() unannotated
