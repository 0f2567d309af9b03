"""Tests for the proxy-aware client IP resolver (DESIGN §5 "Security"), modelled on werkzeug's ProxyFix tests."""

from __future__ import annotations

import pytest

from centure_audit_middleware import client_ip
from centure_audit_middleware.client_ip import MAX_HOPS, ClientIPResolver, HeaderFamily, normalize_ip

# 10.0.0.0/8 and fd00::/8 are "our" proxies; 198.51.100.7 is the real client; 6.6.6.6 is what an attacker claims.
NETS = ["10.0.0.0/8", "fd00::/8"]
NONE = ClientIPResolver()
XFF = ClientIPResolver(NETS)
FWD = ClientIPResolver(NETS, header="forwarded")
HOPS1 = ClientIPResolver(trusted_hops=1)
HOPS2 = ClientIPResolver(trusted_hops=2)
HOPS3 = ClientIPResolver(trusted_hops=3)
HOPS2_FWD = ClientIPResolver(trusted_hops=2, header="forwarded")
HOPS0 = ClientIPResolver(trusted_hops=0)

Headers = dict[str, str | tuple[str, ...]]


def _client(resolver: ClientIPResolver, peer: str | None, headers: Headers) -> str | None:
    """Resolve like the request context does: read only the resolver's header, join repeated lines with ", "."""
    value = headers.get(resolver.header_name.decode("latin-1"))
    joined = ", ".join(value) if isinstance(value, tuple) else value
    return resolver.resolve(peer, joined)


def xff(value: str | tuple[str, ...]) -> Headers:
    return {"x-forwarded-for": value}


def fwd(value: str | tuple[str, ...]) -> Headers:
    return {"forwarded": value}


BOTH: Headers = {"x-forwarded-for": "198.51.100.7", "forwarded": "for=6.6.6.6"}
BOTH_REVERSED: Headers = {"x-forwarded-for": "6.6.6.6", "forwarded": "for=198.51.100.7"}
BIG = 100_000 // len("6.6.6.6, ")
C = "198.51.100.7"  # the client


@pytest.mark.parametrize(
    ("resolver", "peer", "headers", "expected"),
    [
        # -- no proxy / untrusted peer: headers are never believed ------------------------------------------------
        pytest.param(NONE, "203.0.113.9", xff(C), "203.0.113.9", id="no-proxies-configured-ignores-xff"),
        pytest.param(XFF, "203.0.113.9", xff("6.6.6.6"), "203.0.113.9", id="untrusted-peer-xff-ignored"),
        pytest.param(XFF, "203.0.113.9", xff("10.0.0.1"), "203.0.113.9", id="untrusted-peer-claims-trusted-ip"),
        pytest.param(FWD, "203.0.113.9", fwd("for=6.6.6.6"), "203.0.113.9", id="untrusted-peer-forwarded-ignored"),
        # -- X-Forwarded-For, trusted peer --------------------------------------------------------------------------
        pytest.param(XFF, "10.0.0.1", xff(C), C, id="trusted-peer-single-client"),
        pytest.param(XFF, "10.0.0.1", {}, "10.0.0.1", id="trusted-peer-no-header"),
        pytest.param(XFF, "10.0.0.1", xff(""), "10.0.0.1", id="trusted-peer-empty-header"),
        pytest.param(XFF, "10.0.0.1", xff(" , ,  ,"), "10.0.0.1", id="header-only-commas-and-spaces"),
        pytest.param(XFF, "10.0.0.1", xff(f"6.6.6.6, {C}"), C, id="attacker-prepended-value"),
        pytest.param(XFF, "10.0.0.1", xff(f"10.9.9.9, {C}"), C, id="attacker-prepended-trusted-looking-value"),
        pytest.param(XFF, "10.0.0.1", xff(f"6.6.6.6, {C}, 10.0.0.3, 10.0.0.2"), C, id="skips-trusted-chain"),
        pytest.param(XFF, "10.0.0.1", xff("10.0.0.5, 10.0.0.4"), "10.0.0.5", id="all-trusted-leftmost-wins"),
        pytest.param(XFF, "10.0.0.1", xff(f"{C}, garbage, 10.0.0.2"), "10.0.0.2", id="garbage-between-hops-stops"),
        pytest.param(XFF, "10.0.0.1", xff(f"{C}, not-an-ip"), "10.0.0.1", id="garbage-rightmost-keeps-peer"),
        pytest.param(XFF, "10.0.0.1", xff(f"6.6.6.6, unknown, {C}"), C, id="garbage-left-of-client-irrelevant"),
        pytest.param(XFF, "10.0.0.1", xff(f"{C}, unknown, 10.0.0.2"), "10.0.0.2", id="unknown-stops-walk"),
        pytest.param(XFF, "10.0.0.1", xff(f"{C}, _hidden"), "10.0.0.1", id="obfuscated-id-in-xff"),
        pytest.param(XFF, "10.0.0.1", xff(f"{C}:54321"), C, id="port-on-v4"),
        pytest.param(XFF, "10.0.0.1", xff(f"{C}:54321, 10.0.0.2:80"), C, id="ports-on-client-and-trusted-hop"),
        pytest.param(XFF, "10.0.0.1", xff("[2001:db8::7]:443"), "2001:db8::7", id="bracketed-v6-with-port"),
        pytest.param(XFF, "10.0.0.1", xff("[2001:db8::7]"), "2001:db8::7", id="bracketed-v6-no-port"),
        pytest.param(XFF, "10.0.0.1", xff("2001:DB8:0:0:0:0:0:7"), "2001:db8::7", id="v6-canonicalised"),
        pytest.param(XFF, "10.0.0.1", xff(f'"{C}"'), C, id="quoted-xff-entry"),
        pytest.param(XFF, "fd00::1", xff(C), C, id="trusted-v6-peer"),
        pytest.param(XFF, "fd00::1", xff(f"{C}, [fd00::2]:8080"), C, id="trusted-v6-hop-bracketed-with-port"),
        pytest.param(XFF, "::ffff:10.0.0.1", xff(C), C, id="ipv4-mapped-trusted-peer"),
        pytest.param(XFF, "::ffff:203.0.113.9", xff(C), "203.0.113.9", id="ipv4-mapped-untrusted-peer"),
        pytest.param(XFF, "10.0.0.1", xff(f"::ffff:{C}"), C, id="ipv4-mapped-client-in-header"),
        pytest.param(XFF, "10.0.0.1", xff(f"{C}, ::ffff:10.0.0.2"), C, id="ipv4-mapped-trusted-hop-skipped"),
        pytest.param(XFF, "10.0.0.1", xff("fe80::1%eth0"), "fe80::1", id="zone-id-stripped"),
        pytest.param(XFF, "10.0.0.1", xff(f"{C}, [fd00::2%25eth0]:80"), C, id="zone-id-on-trusted-hop"),
        pytest.param(XFF, "10.0.0.1:5000", xff(C), C, id="peer-with-port"),
        pytest.param(XFF, None, xff(C), None, id="peer-none-unix-socket"),
        pytest.param(XFF, "", xff(C), None, id="peer-empty"),
        pytest.param(XFF, "unix:/tmp/app.sock", xff(C), None, id="peer-garbage"),
        pytest.param(NONE, "  203.0.113.9 ", {}, "203.0.113.9", id="peer-normalised-when-disabled"),
        pytest.param(XFF, "10.0.0.1", xff(("6.6.6.6", C, "10.0.0.2")), C, id="multiple-header-lines-joined"),
        pytest.param(XFF, "10.0.0.1", xff((C, "")), C, id="multiple-header-lines-one-empty"),
        pytest.param(XFF, "10.0.0.1", xff("6.6.6.6, " * BIG + C), C, id="100kb-header-attacker-padding"),
        pytest.param(XFF, "10.0.0.1", xff("x" * 100_000), "10.0.0.1", id="100kb-garbage-entry"),
        pytest.param(XFF, "10.0.0.1", xff("," * 100_000), "10.0.0.1", id="100kb-of-commas"),
        # -- only the configured family is read, both directions -----------------------------------------------
        pytest.param(XFF, "10.0.0.1", BOTH, C, id="both-families-xff-configured"),
        pytest.param(FWD, "10.0.0.1", BOTH_REVERSED, C, id="both-families-forwarded-configured"),
        pytest.param(XFF, "10.0.0.1", fwd("for=6.6.6.6"), "10.0.0.1", id="xff-configured-forwarded-smuggled"),
        pytest.param(FWD, "10.0.0.1", xff("6.6.6.6"), "10.0.0.1", id="forwarded-configured-xff-smuggled"),
        pytest.param(FWD, "10.0.0.1", fwd(C), "10.0.0.1", id="forwarded-configured-xff-syntax-is-not-for"),
        # -- RFC 7239 Forwarded ---------------------------------------------------------------------------------
        pytest.param(FWD, "10.0.0.1", fwd(f"for={C}"), C, id="forwarded-basic"),
        pytest.param(FWD, "10.0.0.1", fwd(f"FOR={C}"), C, id="forwarded-uppercase-for"),
        pytest.param(FWD, "10.0.0.1", fwd(f"For={C};Proto=https"), C, id="forwarded-mixed-case"),
        pytest.param(FWD, "10.0.0.1", fwd(f"by=10.0.0.1;for={C};proto=https;host=x"), C, id="forwarded-by-proto"),
        pytest.param(FWD, "10.0.0.1", fwd(f" for={C} ; proto=https "), C, id="forwarded-whitespace-around-pairs"),
        pytest.param(FWD, "10.0.0.1", fwd(f"for=6.6.6.6, for={C};by=10.0.0.2, for=10.0.0.2"), C, id="fwd-chain"),
        pytest.param(FWD, "10.0.0.1", fwd('for="[2001:db8::7]:4711"'), "2001:db8::7", id="forwarded-quoted-v6-port"),
        pytest.param(FWD, "10.0.0.1", fwd(f'for="{C}:8080"'), C, id="forwarded-quoted-v4-port"),
        pytest.param(FWD, "10.0.0.1", fwd(f'for="[::ffff:{C}]"'), C, id="forwarded-ipv4-mapped"),
        pytest.param(FWD, "10.0.0.1", fwd('for="[fe80::1%25eth0]"'), "fe80::1", id="forwarded-zone-id"),
        pytest.param(FWD, "10.0.0.1", fwd(f'for={C};host="a;b,c", for=10.0.0.2'), C, id="fwd-quoted-semicolon-comma"),
        pytest.param(FWD, "10.0.0.1", fwd(f'for="6.6.6.6, for={C}"'), "10.0.0.1", id="fwd-comma-inside-quoted-for"),
        pytest.param(
            FWD, "10.0.0.1", fwd(f'for={C};ext="x\\",for=6.6.6.6", for=10.0.0.2'), C, id="fwd-escaped-quote-in-value"
        ),
        pytest.param(FWD, "10.0.0.1", fwd('for="198.51.100\\.7"'), C, id="fwd-escaped-char-in-for"),
        pytest.param(FWD, "10.0.0.1", fwd(f"for={C}, for=_hidden, for=10.0.0.2"), "10.0.0.2", id="fwd-obfuscated-id"),
        pytest.param(FWD, "10.0.0.1", fwd(f"for={C}, for=_SEVKISEK"), "10.0.0.1", id="fwd-obfuscated-rightmost"),
        pytest.param(FWD, "10.0.0.1", fwd(f'for={C}, for="_gazonk:_123"'), "10.0.0.1", id="fwd-obfuscated-port"),
        pytest.param(FWD, "10.0.0.1", fwd("for=unknown, for=10.0.0.2"), "10.0.0.2", id="fwd-for-unknown"),
        pytest.param(FWD, "10.0.0.1", fwd(f"for={C}, proto=https;by=10.0.0.2"), "10.0.0.1", id="fwd-missing-for"),
        pytest.param(FWD, "10.0.0.1", fwd("proto=https"), "10.0.0.1", id="fwd-only-element-without-for"),
        pytest.param(FWD, "10.0.0.1", fwd(f'for={C}, for="10.0.0.2'), "10.0.0.1", id="fwd-unterminated-quote"),
        pytest.param(FWD, "10.0.0.1", fwd(f'for="6.6.6.6, for={C}'), "10.0.0.1", id="fwd-unterminated-swallows-rest"),
        pytest.param(FWD, "10.0.0.1", fwd(f'for="{C}"junk'), "10.0.0.1", id="fwd-junk-after-quoted-string"),
        pytest.param(FWD, "10.0.0.1", fwd(f"for=6.6.6.6;for={C}"), "10.0.0.1", id="fwd-duplicate-for-in-element"),
        pytest.param(FWD, "10.0.0.1", fwd(f"for={C},, ,for=10.0.0.2"), C, id="fwd-empty-elements-ignored"),
        pytest.param(FWD, "10.0.0.1", fwd(("for=6.6.6.6", f"for={C}")), C, id="fwd-multiple-header-lines"),
        pytest.param(FWD, "10.0.0.1", fwd("for=6.6.6.6, " * BIG + f"for={C}"), C, id="fwd-100kb-header"),
        pytest.param(
            FWD,
            "10.0.0.1",
            fwd('for="[2001:db8::6]:1";x="a,b", ' * (BIG // 3) + f"for={C}, for=10.0.0.2"),
            C,
            id="fwd-100kb-header-with-quotes",
        ),
        pytest.param(FWD, "10.0.0.1", fwd('"' * 100_000), "10.0.0.1", id="fwd-100kb-of-quotes"),
        # -- trusted_hops (ProxyFix x_for=N semantics) ---------------------------------------------------------
        pytest.param(HOPS1, "203.0.113.9", xff(f"6.6.6.6, {C}"), C, id="hops1-rightmost"),
        pytest.param(HOPS2, "203.0.113.9", xff(f"6.6.6.6, {C}, 10.0.0.2"), C, id="hops2"),
        pytest.param(HOPS3, "203.0.113.9", xff(f"6.6.6.6, {C}, 10.0.0.3, 10.0.0.2"), C, id="hops3"),
        pytest.param(HOPS1, "203.0.113.9", {}, "203.0.113.9", id="hops1-no-header"),
        pytest.param(HOPS1, "203.0.113.9", xff(" , "), "203.0.113.9", id="hops1-only-commas"),
        pytest.param(HOPS2, "203.0.113.9", xff(C), "203.0.113.9", id="hops2-too-few-values"),
        pytest.param(HOPS3, "203.0.113.9", xff(f"{C}, 10.0.0.2"), "203.0.113.9", id="hops3-too-few-values"),
        pytest.param(HOPS2, "203.0.113.9", xff(f"{C}, 10.0.0.2, ,"), C, id="hops2-empty-items-not-counted"),
        pytest.param(HOPS2, "203.0.113.9", xff("unknown, 10.0.0.2"), "10.0.0.2", id="hops2-garbage-client"),
        pytest.param(HOPS2, "203.0.113.9", xff(f"{C}, garbage"), "203.0.113.9", id="hops2-garbage-proxy-hop"),
        pytest.param(HOPS2, "203.0.113.9", xff(f"{C}:1234, [fd00::2]:80"), C, id="hops2-ports"),
        pytest.param(HOPS2_FWD, "203.0.113.9", fwd(f"for=6.6.6.6, for={C}, for=10.0.0.2"), C, id="hops2-forwarded"),
        pytest.param(HOPS2_FWD, "203.0.113.9", BOTH, "203.0.113.9", id="hops2-forwarded-ignores-xff"),
        pytest.param(HOPS1, None, xff(C), None, id="hops1-peer-none"),
        pytest.param(HOPS1, "garbage", xff(C), None, id="hops1-peer-garbage"),
        pytest.param(HOPS0, "203.0.113.9", xff(C), "203.0.113.9", id="hops0-disabled"),
    ],
)
def test_resolve(resolver: ClientIPResolver, peer: str | None, headers: Headers, expected: str | None) -> None:
    assert _client(resolver, peer, headers) == expected


def test_only_rightmost_hops_examined() -> None:
    # Every entry is trusted, so the walk runs off the end of the window: the leftmost *examined* entry wins,
    # not the leftmost of the whole (attacker-extensible) header.
    entries = [f"10.1.{i // 256}.{i % 256}" for i in range(7000)]
    assert XFF.resolve("10.0.0.1", ", ".join(entries)) == entries[-MAX_HOPS]
    assert FWD.resolve("10.0.0.1", ", ".join(f"for={e}" for e in entries)) == entries[-MAX_HOPS]
    # With a quote anywhere the value takes the quote-aware scan: same window.
    assert FWD.resolve("10.0.0.1", ", ".join(f'for="{e}"' for e in entries)) == entries[-MAX_HOPS]


@pytest.mark.parametrize(
    ("header", "entry"),
    [
        pytest.param("x-forwarded-for", "10.1.1.1", id="xff"),
        pytest.param("forwarded", "for=10.1.1.1", id="forwarded"),
        pytest.param("forwarded", 'for="10.1.1.1"', id="forwarded-quoted"),
    ],
)
def test_oversized_header_parses_bounded_number_of_hops(
    header: HeaderFamily, entry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = ClientIPResolver(NETS, header=header)  # fresh: no cached trust decisions
    calls: list[str | None] = []
    real = client_ip.normalize_ip

    def counting(value: str | None) -> str | None:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(client_ip, "normalize_ip", counting)
    assert resolver.resolve("10.0.0.1", ", ".join([entry] * 20_000)) == "10.1.1.1"
    # The peer and at most MAX_HOPS header entries, each parsed once more on a trust-cache miss; 20,000 without a cap.
    assert 0 < len(calls) <= 2 * (MAX_HOPS + 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1.2.3.4", "1.2.3.4", id="v4"),
        pytest.param("  1.2.3.4\t", "1.2.3.4", id="v4-whitespace"),
        pytest.param('"1.2.3.4"', "1.2.3.4", id="v4-quoted"),
        pytest.param("1.2.3.4:8080", "1.2.3.4", id="v4-port"),
        pytest.param("1.2.3.4:_obf", "1.2.3.4", id="v4-obfuscated-port"),
        pytest.param("1.2.3.4:", None, id="v4-empty-port"),
        pytest.param("1.2.3.4:http", None, id="v4-bad-port"),
        pytest.param("1.2.3.4:123456", None, id="v4-port-too-long"),
        pytest.param("01.2.3.4", None, id="v4-leading-zero"),
        pytest.param("1.2.3", None, id="v4-short"),
        pytest.param("256.1.1.1", None, id="v4-out-of-range"),
        pytest.param("1.2.3.4%eth0", None, id="v4-zone-id"),
        pytest.param("::1", "::1", id="v6-loopback"),
        pytest.param("2001:DB8::0:1", "2001:db8::1", id="v6-canonical"),
        pytest.param("[2001:db8::1]", "2001:db8::1", id="v6-brackets"),
        pytest.param("[2001:db8::1]:443", "2001:db8::1", id="v6-brackets-port"),
        pytest.param('"[2001:db8::1]:443"', "2001:db8::1", id="v6-quoted-brackets-port"),
        pytest.param("[2001:db8::1", None, id="v6-unclosed-bracket"),
        pytest.param("[2001:db8::1]443", None, id="v6-junk-after-bracket"),
        pytest.param("[2001:db8::1]:", None, id="v6-brackets-empty-port"),
        pytest.param("fe80::1%eth0", "fe80::1", id="v6-zone"),
        pytest.param("[fe80::1%25eth0]:80", "fe80::1", id="v6-zone-rfc6874"),
        pytest.param("fe80::1%", None, id="v6-empty-zone"),
        pytest.param("::ffff:1.2.3.4", "1.2.3.4", id="ipv4-mapped"),
        pytest.param("[::ffff:1.2.3.4]:80", "1.2.3.4", id="ipv4-mapped-bracketed"),
        pytest.param("::ffff:0102:0304", "1.2.3.4", id="ipv4-mapped-hex"),
        pytest.param("unknown", None, id="unknown"),
        pytest.param("_hidden", None, id="obfuscated"),
        pytest.param("", None, id="empty"),
        pytest.param('""', None, id="empty-quotes"),
        pytest.param("   ", None, id="spaces"),
        pytest.param(None, None, id="none"),
        pytest.param("1.2.3.4, 5.6.7.8", None, id="list-is-not-one-address"),
        pytest.param("١.٢.٣.٤", None, id="non-ascii-digits"),
        pytest.param("1" * 10_000, None, id="huge"),
    ],
)
def test_normalize_ip(value: str | None, expected: str | None) -> None:
    assert normalize_ip(value) == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("10.1.2.3", True, id="in-v4-net"),
        pytest.param("11.0.0.1", False, id="outside-v4-net"),
        pytest.param("fd00::5", True, id="in-v6-net"),
        pytest.param("fe00::5", False, id="outside-v6-net"),
        pytest.param("::ffff:10.1.2.3", True, id="ipv4-mapped-address"),
        pytest.param("[fd00::5]:443", True, id="bracketed-with-port"),
        pytest.param("garbage", False, id="garbage"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_trusted(address: str, expected: bool) -> None:
    assert XFF.is_trusted(address) is expected
    assert XFF.is_trusted(address) is expected  # second call answered from the cache, same answer


@pytest.mark.parametrize(
    ("proxies", "address", "expected"),
    [
        pytest.param(["192.0.2.1"], "192.0.2.1", True, id="single-v4-address"),
        pytest.param(["192.0.2.1"], "192.0.2.2", False, id="single-v4-address-neighbour"),
        pytest.param(["2001:db8::1"], "2001:db8::1", True, id="single-v6-address"),
        pytest.param([" 192.0.2.0/24 "], "192.0.2.200", True, id="entry-whitespace"),
        pytest.param(["::ffff:10.0.0.0/104"], "10.9.9.9", True, id="ipv4-mapped-network"),
        pytest.param(["::ffff:10.0.0.0/104"], "11.0.0.1", False, id="ipv4-mapped-network-outside"),
        pytest.param(["::ffff:192.0.2.1"], "192.0.2.1", True, id="ipv4-mapped-single-address"),
    ],
)
def test_trusted_proxy_forms(proxies: list[str], address: str, expected: bool) -> None:
    assert ClientIPResolver(proxies).is_trusted(address) is expected


def test_is_trusted_is_false_in_hops_mode() -> None:
    assert HOPS2.is_trusted("10.0.0.1") is False


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("10.0.0.0/33", id="prefix-too-long"),
        pytest.param("not-a-network", id="garbage"),
        pytest.param("10.0.0.1/8", id="host-bits-set"),
        pytest.param("", id="empty"),
        pytest.param("10.0.0.0/8/8", id="double-prefix"),
        pytest.param("[fd00::1]", id="bracketed"),
    ],
)
def test_invalid_trusted_proxy_raises_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid trusted proxy") as info:
        ClientIPResolver(["10.0.0.0/8", bad])
    assert repr(bad) in str(info.value)


def test_single_string_instead_of_list_raises() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        ClientIPResolver("10.0.0.0/8")


def test_both_proxies_and_hops_raises() -> None:
    with pytest.raises(ValueError, match="not both"):
        ClientIPResolver(["10.0.0.0/8"], trusted_hops=1)


@pytest.mark.parametrize(
    ("hops", "error"),
    [
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(MAX_HOPS + 1, ValueError, id="above-cap"),
        pytest.param(True, TypeError, id="bool"),
    ],
)
def test_invalid_trusted_hops_raises(hops: int, error: type[Exception]) -> None:
    with pytest.raises(error, match="trusted_hops"):
        ClientIPResolver(trusted_hops=hops)


def test_invalid_header_family_raises() -> None:
    with pytest.raises(ValueError, match="x-real-ip"):
        ClientIPResolver(NETS, header="x-real-ip")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("resolver", "enabled"),
    [
        pytest.param(NONE, False, id="default"),
        pytest.param(ClientIPResolver([]), False, id="empty-list"),
        pytest.param(ClientIPResolver([], trusted_hops=2), True, id="empty-list-with-hops"),
        pytest.param(XFF, True, id="networks"),
        pytest.param(HOPS1, True, id="hops1"),
        pytest.param(HOPS0, False, id="hops0"),
    ],
)
def test_enabled(resolver: ClientIPResolver, enabled: bool) -> None:
    assert resolver.enabled is enabled


@pytest.mark.parametrize(
    ("resolver", "header_name", "environ_key"),
    [
        pytest.param(NONE, b"x-forwarded-for", "HTTP_X_FORWARDED_FOR", id="default-xff"),
        pytest.param(XFF, b"x-forwarded-for", "HTTP_X_FORWARDED_FOR", id="xff"),
        pytest.param(FWD, b"forwarded", "HTTP_FORWARDED", id="forwarded"),
        pytest.param(HOPS2_FWD, b"forwarded", "HTTP_FORWARDED", id="hops-forwarded"),
    ],
)
def test_header_names(resolver: ClientIPResolver, header_name: bytes, environ_key: str) -> None:
    assert resolver.header_name == header_name
    assert resolver.environ_key == environ_key
