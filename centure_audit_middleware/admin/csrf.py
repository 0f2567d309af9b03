"""CSRF protection for the admin page's POST forms: a signed double-submit token.

The browser holds a random value in an HttpOnly, SameSite=Strict cookie; each form carries a token that is an HMAC
(keyed by the app's `secret_key`) of that value, the organization the page was rendered for, the app's session id
(when the app gives one) and the time it was issued. A POST passes only with the cookie and a token matching it.

Why signed rather than the plain double-submit pattern: a plain one trusts any cookie that equals the form field,
and an attacker who can write cookies for the domain (a sibling subdomain, a man-in-the-middle on plain HTTP) can set
both. Without `secret_key` nobody can make a token for a cookie value. Binding to the organization makes a token
minted on one organization's page useless on another's; binding to the session (optional `session` hook) makes a
token and cookie lifted from one login useless in another. The issue time bounds how long a leaked token lives.

`Sec-Fetch-Site: cross-site` is refused outright as well: every current browser sends it, and no legitimate form
post to this page comes from another site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["COOKIE_NAME", "FIELD_NAME", "CsrfProtect"]

COOKIE_NAME: Final = "centure_audit_csrf"
FIELD_NAME: Final = "csrf_token"
#: The secret key must be at least this long: a short one could be found by brute force from observed tokens.
MIN_SECRET_BYTES: Final = 16
_PURPOSE: Final = b"centure-audit-middleware/admin/csrf/v1"
_COOKIE_BYTES: Final = 32
_MAX_TOKEN_LENGTH: Final = 200


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class CsrfProtect:
    """Issues and checks the tokens. `max_age`: seconds a token stays valid (a page left open longer needs a
    reload); `clock`: Unix seconds, injectable for tests."""

    def __init__(
        self, secret_key: str | bytes, *, max_age: float = 8 * 3600, clock: Callable[[], float] = time.time
    ) -> None:
        raw = secret_key.encode("utf-8") if isinstance(secret_key, str) else bytes(secret_key)
        if len(raw) < MIN_SECRET_BYTES:
            raise ValueError(f"secret_key must be at least {MIN_SECRET_BYTES} bytes (use secrets.token_urlsafe(32))")
        # A key of our own, derived from the app's: the app's secret may sign its sessions too, and a MAC made here
        # must never be valid there (or the other way round).
        self._key = hmac.new(raw, _PURPOSE, hashlib.sha256).digest()
        self.max_age = max_age
        self._clock = clock

    @staticmethod
    def new_cookie_value() -> str:
        return secrets.token_urlsafe(_COOKIE_BYTES)

    @staticmethod
    def valid_cookie_value(value: str | None) -> bool:
        return value is not None and 32 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum()

    def _mac(self, issued: int, cookie_value: str, organization_id: str, session: str) -> str:
        # JSON keeps the fields apart whatever characters they hold: "a|b" + "c" never collides with "a" + "b|c".
        message = json.dumps([issued, cookie_value, organization_id, session], separators=(",", ":")).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def token(self, cookie_value: str, *, organization_id: str, session: str = "") -> str:
        """The form token for a page rendered for `organization_id` to the browser holding `cookie_value`."""
        issued = int(self._clock())
        return f"{issued}.{self._mac(issued, cookie_value, organization_id, session)}"

    def verify(
        self,
        token: str | None,
        cookie_value: str | None,
        *,
        organization_id: str,
        session: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether a POST carrying `token`, with `cookie_value` in its cookie and `headers` (lower-case names),
        may act for `organization_id`."""
        if headers is not None and headers.get("sec-fetch-site", "").lower() == "cross-site":
            return False
        if not token or not self.valid_cookie_value(cookie_value) or len(token) > _MAX_TOKEN_LENGTH:
            return False
        assert cookie_value is not None  # for the type checker: valid_cookie_value said so
        issued_text, _, mac = token.partition(".")
        if not (issued_text.isascii() and issued_text.isdigit()) or not mac:
            return False
        issued = int(issued_text)
        age = self._clock() - issued
        if age > self.max_age or age < -60:  # a minute of clock skew between workers
            return False
        expected = self._mac(issued, cookie_value, organization_id, session)
        return hmac.compare_digest(expected.encode(), mac.encode())
