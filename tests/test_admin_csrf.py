"""The signed double-submit CSRF token: bound to the cookie, the organization, the session and a time window."""

from __future__ import annotations

import pytest

from centure_audit_middleware.admin.csrf import CsrfProtect


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def csrf(clock: Clock) -> CsrfProtect:
    return CsrfProtect("0123456789abcdef-secret", max_age=3600, clock=clock)


def test_a_token_is_valid_for_its_cookie_organization_and_session(csrf: CsrfProtect) -> None:
    cookie = csrf.new_cookie_value()
    token = csrf.token(cookie, organization_id="org_1", session="sess_1")
    assert csrf.verify(token, cookie, organization_id="org_1", session="sess_1")
    other_cookie = csrf.new_cookie_value()
    assert not csrf.verify(token, other_cookie, organization_id="org_1", session="sess_1")
    assert not csrf.verify(token, cookie, organization_id="org_2", session="sess_1")
    assert not csrf.verify(token, cookie, organization_id="org_1", session="sess_2")
    assert not csrf.verify(token, None, organization_id="org_1", session="sess_1")


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: t.split(".")[0], id="no-mac"),
        pytest.param(lambda t: "." + t.split(".")[1], id="no-time"),
        pytest.param(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), id="mac-changed"),
        pytest.param(lambda t: str(int(t.split(".")[0]) + 1) + "." + t.split(".")[1], id="time-changed"),
        pytest.param(lambda t: "²" + t, id="unicode-digit"),
        pytest.param(lambda t: t * 10, id="oversized"),
    ],
)
def test_altered_tokens_fail(csrf: CsrfProtect, mangle: object) -> None:
    cookie = csrf.new_cookie_value()
    token = csrf.token(cookie, organization_id="org_1")
    assert callable(mangle)
    assert not csrf.verify(mangle(token), cookie, organization_id="org_1")


def test_tokens_expire(csrf: CsrfProtect, clock: Clock) -> None:
    cookie = csrf.new_cookie_value()
    token = csrf.token(cookie, organization_id="org_1")
    clock.now += 3599
    assert csrf.verify(token, cookie, organization_id="org_1")
    clock.now += 2
    assert not csrf.verify(token, cookie, organization_id="org_1")


def test_a_different_secret_key_makes_different_tokens(clock: Clock) -> None:
    ours = CsrfProtect("0123456789abcdef-secret", clock=clock)
    theirs = CsrfProtect("another-secret-of-16-bytes", clock=clock)
    cookie = ours.new_cookie_value()
    assert not ours.verify(theirs.token(cookie, organization_id="org_1"), cookie, organization_id="org_1")


def test_cross_site_posts_fail_whatever_the_token(csrf: CsrfProtect) -> None:
    cookie = csrf.new_cookie_value()
    token = csrf.token(cookie, organization_id="org_1")
    for site, ok in (("same-origin", True), ("none", True), ("same-site", True), ("cross-site", False)):
        assert csrf.verify(token, cookie, organization_id="org_1", headers={"sec-fetch-site": site}) is ok


def test_cookie_values_are_checked(csrf: CsrfProtect) -> None:
    assert csrf.valid_cookie_value(csrf.new_cookie_value())
    for bad in (None, "", "short", "x" * 100, "a" * 40 + ";b"):
        assert not csrf.valid_cookie_value(bad)


def test_short_secret_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CsrfProtect("short")
