"""Proxy-aware client IP resolution (DESIGN §5 "Security").

The client IP is the socket peer unless the peer is a trusted proxy. Only then is ONE forwarding header family
read, either ``X-Forwarded-For`` or RFC 7239 ``Forwarded``, never both: a client can send whatever headers it
likes, and a proxy only overwrites or appends to the family it knows about, so reading the other family would let
a client smuggle an address past it.

Trust is configured either as a list of networks (the hop list is walked right to left, skipping trusted proxies;
the first untrusted hop is the client) or as a fixed number of hops, like werkzeug's ``ProxyFix(x_for=N)``.

Every value is parsed with :mod:`ipaddress`; nothing here raises on request data.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from typing import Final, Literal

__all__ = ["MAX_HOPS", "ClientIPResolver", "HeaderFamily", "normalize_ip"]

HeaderFamily = Literal["x-forwarded-for", "forwarded"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Only the rightmost MAX_HOPS entries of a forwarding header are examined. Our own proxies append on the right, so
# the entries that matter are the last few; anything further left was supplied by the client and can only be
# reached by skipping trusted hops, which no real deployment has 32 of. The cap keeps a 100 KB header linear and
# cheap instead of parsing thousands of attacker-chosen entries.
MAX_HOPS: Final = 32

# Enough for the longest IPv6 text with brackets, port and a generous zone id; anything longer is garbage, and
# rejecting it early keeps ipaddress from chewing on huge strings.
_MAX_ADDRESS_LEN: Final = 128

# RFC 7239 node-port: a decimal port or an obfuscated one ("_abc").
_PORT_RE: Final = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")
# One list item: any run of characters other than the separator, where a quoted-string (with backslash escapes)
# may contain the separator. An unterminated quote runs to the end of the input; the value parser then rejects
# it. Possessive quantifiers (Python 3.11) rule out backtracking, so matching is linear on any input.
_ELEMENT_RE: Final = re.compile(r'(?:[^",]++|"(?:[^"\\]++|\\.)*+"?+)++', re.DOTALL)
_PAIR_RE: Final = re.compile(r'(?:[^";]++|"(?:[^"\\]++|\\.)*+"?+)++', re.DOTALL)
_QUOTED_RE: Final = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_UNESCAPE_RE: Final = re.compile(r"\\(.)", re.DOTALL)


def normalize_ip(value: str | None) -> str | None:
    """Parse one address as it appears in a peer or a forwarding header.

    Strips whitespace, surrounding quotes, an ``:port`` on IPv4, ``[v6]`` and ``[v6]:port``, a zone id
    (``%eth0``), and turns IPv4-mapped IPv6 (``::ffff:1.2.3.4``) into the IPv4 form. Returns the canonical text
    (ipaddress's ``str``) or None for anything that is not an IP (garbage, ``unknown``, obfuscated identifiers
    like ``_hidden``, empty).
    """
    if not value:
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    if not text or len(text) > _MAX_ADDRESS_LEN:
        return None
    return _parse_address(text)


# ipaddress parsing costs several microseconds and the same few addresses (proxies, busy clients) recur; the cache
# is bounded in entries and, through _MAX_ADDRESS_LEN, in key size, so attacker-chosen values cannot bloat it.
@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> str | None:
    if text[0] == "[":
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and _PORT_RE.fullmatch(rest, 1))):
            return None
        text = host
    elif text.count(":") == 1:  # "a.b.c.d:port"; a bare IPv6 address always has at least two colons
        text, _, port = text.partition(":")
        if not _PORT_RE.fullmatch(port):
            return None
    text, percent, zone = text.partition("%")
    if percent and not zone:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    elif percent:  # zone ids only exist on IPv6
        return None
    return str(ip)


def _xff_hops(value: str) -> list[str | None]:
    """X-Forwarded-For entries, rightmost MAX_HOPS only, normalised (None for garbage); empty items dropped."""
    parts = value.rsplit(",", MAX_HOPS)
    if len(parts) > MAX_HOPS:
        del parts[0]  # the unexamined remainder on the left
    # Empty list items are ignored, as RFC 9110 §5.6.1 says; they also appear when empty header lines are joined.
    return [normalize_ip(part) for part in parts if part.strip()]


def _forwarded_for(element: str) -> str | None:
    """The address in one RFC 7239 element's ``for=`` parameter, or None when it has no usable one."""
    found: str | None = None
    seen = False
    for pair in _PAIR_RE.findall(element):
        name, equals, raw = pair.partition("=")
        if not equals or name.strip().lower() != "for":
            continue
        if seen:  # RFC 7239 §4: a parameter MUST NOT occur twice; which one is real is unknowable
            return None
        seen = True
        raw = raw.strip()
        if raw.startswith('"'):
            quoted = _QUOTED_RE.fullmatch(raw)
            if quoted is None:  # unterminated or trailing junk
                return None
            raw = _UNESCAPE_RE.sub(r"\1", quoted.group(1))
        found = normalize_ip(raw)
    return found


def _forwarded_hops(value: str) -> list[str | None]:
    """The ``for=`` of each Forwarded element, rightmost MAX_HOPS only, normalised (None for a non-IP hop).

    An element without ``for=`` is a hop that did not say who its client was, so it counts as a non-IP hop (the
    walk stops there) rather than being skipped. Empty elements (",,") are ignored like in any HTTP list.
    """
    # Without quotes, splitting from the right is exact and cheap (the usual case). A quoted-string may hide a ',',
    # so then the whole value is scanned from the left; findall runs in C and is linear (a few ms for a
    # pathological 100 KB value, which servers' header size limits normally refuse anyway).
    elements = _ELEMENT_RE.findall(value) if '"' in value else value.rsplit(",", MAX_HOPS)
    return [_forwarded_for(element) for element in elements[-MAX_HOPS:] if element.strip()]


class ClientIPResolver:
    """Resolve the client IP from the socket peer and one forwarding header family.

    Configure either ``trusted_proxies`` (networks or single addresses, IPv4 or IPv6) or ``trusted_hops`` (the
    number of proxies in front of the app, the peer being the first), not both: the two answer the same question
    differently and combining them has no single obvious meaning, so passing both raises ValueError.
    ``trusted_hops=0`` (or an empty list) disables proxy handling, like ``ProxyFix(x_for=0)``.
    """

    def __init__(
        self,
        trusted_proxies: Iterable[str] = (),
        *,
        trusted_hops: int | None = None,
        header: HeaderFamily = "x-forwarded-for",
    ) -> None:
        if isinstance(trusted_proxies, str):
            raise TypeError(f"trusted_proxies must be a list of networks, not a single string: {trusted_proxies!r}")
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"header must be 'x-forwarded-for' or 'forwarded', not {header!r}")
        networks = [_parse_network(entry) for entry in trusted_proxies]
        if trusted_hops is not None:
            if networks:
                raise ValueError("pass either trusted_proxies or trusted_hops, not both")
            if isinstance(trusted_hops, bool) or not isinstance(trusted_hops, int):
                raise TypeError(f"trusted_hops must be an int, not {trusted_hops!r}")
            if not 0 <= trusted_hops <= MAX_HOPS:
                raise ValueError(f"trusted_hops must be between 0 and {MAX_HOPS}, not {trusted_hops}")
        self.header: HeaderFamily = header
        self.header_name: bytes = header.encode("ascii")
        self.environ_key: str = "HTTP_" + header.upper().replace("-", "_")
        self.trusted_hops: int | None = trusted_hops
        self.enabled: bool = bool(networks) or bool(trusted_hops)
        self._v4 = tuple(n for n in networks if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in networks if isinstance(n, ipaddress.IPv6Network))
        # The same few peers (the proxies) come back on every request, so remember decisions; bounded because
        # header values are attacker-chosen.
        self._trusted_cached = functools.lru_cache(maxsize=1024)(self._is_trusted_uncached)

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` (any form normalize_ip accepts) is in ``trusted_proxies``; always False in
        ``trusted_hops`` mode, where trust comes from position, not address."""
        text = normalize_ip(address)
        return text is not None and self._trusted_cached(text)

    def may_trust(self, network: str) -> bool:
        """Whether a peer in ``network`` (an address or a CIDR network) could be taken for a trusted proxy: always
        in ``trusted_hops`` mode, where any peer is the first proxy; with ``trusted_proxies``, when the two overlap.
        Never with proxy handling off, nor for text that is not an address or network (a unix socket path)."""
        if not self.enabled:
            return False
        if self.trusted_hops is not None:
            return True
        try:
            given = ipaddress.ip_network(network.strip(), strict=False)
        except ValueError:
            return False
        mapped = given.network_address.ipv4_mapped if isinstance(given, ipaddress.IPv6Network) else None
        if mapped is not None and given.prefixlen >= 96:  # compared in IPv4 form, as resolve() does
            given = ipaddress.IPv4Network(f"{mapped}/{given.prefixlen - 96}", strict=False)
        if isinstance(given, ipaddress.IPv4Network):
            return any(given.overlaps(trusted) for trusted in self._v4)
        return any(given.overlaps(trusted) for trusted in self._v6)

    def _is_trusted_uncached(self, text: str) -> bool:
        """Trust decision for an address already in normalize_ip's canonical form."""
        ip = ipaddress.ip_address(text)
        networks = self._v4 if isinstance(ip, ipaddress.IPv4Address) else self._v6
        return any(ip in network for network in networks)

    def resolve(self, peer: str | None, header_value: str | None) -> str | None:
        """Return the normalised client IP, or None when unknown.

        ``peer`` is the socket peer as the server gives it (None for unix sockets, possibly garbage);
        ``header_value`` the configured header's value, several lines joined with ", " in arrival order.
        """
        client = normalize_ip(peer)
        # A peer that is not an IP (unix socket, garbage) cannot be a trusted proxy, in either mode.
        if client is None or not self.enabled or not header_value:
            return client
        if self.trusted_hops is None and not self._trusted_cached(client):
            return client
        hops = _xff_hops(header_value) if self.header == "x-forwarded-for" else _forwarded_hops(header_value)
        if self.trusted_hops is not None:
            # ProxyFix semantics: with N proxies the client is the N-th value from the right; with fewer values
            # the header was not written by all of them, so it is ignored and the peer is used.
            if len(hops) < self.trusted_hops:
                return client
            hops = hops[-self.trusted_hops :]
        for hop in reversed(hops):
            if hop is None:
                # A non-IP hop (garbage, "unknown", "_hidden", element without for=) breaks the chain: we cannot
                # tell whether the next value to its left was written by a proxy or by the client, so we stop and
                # keep the last address we could vouch for instead of jumping to an attacker-supplied value.
                return client
            client = hop
            if self.trusted_hops is None and not self._trusted_cached(hop):
                return hop
        # Every examined hop was trusted (or, in hops mode, exactly N were walked): the leftmost one is the client.
        return client


def _parse_network(entry: str) -> _Network:
    """One trusted_proxies entry as a network; raises ValueError naming the entry when it is not one."""
    if not isinstance(entry, str):
        raise TypeError(f"trusted_proxies entries must be strings, not {entry!r}")
    try:
        network = ipaddress.ip_network(entry.strip())
    except ValueError as exc:
        # strict parsing: "10.0.0.1/8" is refused rather than guessed at (/8 or /32?), since it decides trust.
        raise ValueError(f"invalid trusted proxy {entry!r}: {exc}") from None
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is not None and network.prefixlen >= 96:
        # Addresses are compared in IPv4 form (normalize_ip unmaps them), so the network must be too.
        return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network
