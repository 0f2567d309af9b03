"""The HTTP client `StripeEntitlements` hands the Stripe SDK: the standard library, with a timeout.

Why not the SDK's defaults: its `requests` client keeps one session per thread (the page's worker threads, the
delivery threads) that nothing can close from outside; its `urllib` client has no timeout at all, so a hung
connection would hang an admin's page; its `httpx` client passes bodies in a way httpx deprecates. Entitlement reads
are rare (a TTL cache sits in front), so a fresh connection per call costs nothing that matters.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import stripe

__all__ = ["StdlibHTTPClient"]


class StdlibHTTPClient(stripe.HTTPClient):
    name = "urllib.request"

    def __init__(self, timeout: float = 10.0) -> None:
        super().__init__()
        self.timeout = timeout

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        data = post_data.encode("utf-8") if isinstance(post_data, str) else post_data
        request = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method.upper())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), response.status, {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.read(), exc.code, {k.lower(): v for k, v in exc.headers.items()}
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets
            # Only the error's class: its text can hold the URL, and the SDK retries on should_retry alone.
            message = f"could not reach Stripe: {type(exc).__name__}"
            raise stripe.APIConnectionError(message, should_retry=True) from exc  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own connection."""
