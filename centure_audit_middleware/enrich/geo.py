"""GeoIP: where a client IP address is, from a local MaxMind-format database, off the request path.

Nothing downloads at run time (DESIGN §8). `GeoLocator.open()` finds a database by explicit path, then
``$CENTURE_AUDIT_GEOIP_DB`` (``$CENTURE_AUDIT_GEOIP_ASN_DB`` for the ASN database), then the usual install
locations (``/usr/share/GeoIP``, ``/var/lib/GeoIP``, ``/usr/local/share/GeoIP``); otherwise geo is off and ONE
warning says so. It reads the MaxMind City, Country and ASN schemas: GeoIP2, GeoLite2 and DB-IP Lite (which
ships the same schema) alike.

Speed (DESIGN §5): lookups go through `maxminddb`'s C extension and read the raw record dict: building geoip2's
model objects costs more than the lookup itself (~16 µs against ~6 µs). The "no location" test uses
`socket.inet_pton` and a bisect over the special-purpose ranges, not `ipaddress` (whose parse and `is_global`
measured ~7 µs each, more than the lookup). Answers, "no location" included, are cached per address text in a
bounded LRU cache, so the busy IPs of a burst cost one dict probe. `benchmarks/enrichment.py` has the figures.

Updates: geoipupdate and similar tools replace the file by renaming a new one over it. The locator stats the
file at most once per `check_interval` seconds (from the lookup that happens to come due, never from a timer
thread) and, when the inode, size or mtime changed, opens the new file, then swaps in a new immutable state
(readers + a fresh cache) with one reference assignment: a lookup in flight finishes on the old readers, which
are unmapped when their last reference goes. They are never closed under a reader: maxminddb says closing a
reader while reads are in progress may raise.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from ..events import GeoInfo, MetadataValue, truncate

if TYPE_CHECKING:
    from types import TracebackType

try:
    import maxminddb
except ImportError:  # pragma: no cover - maxminddb is a hard dependency; this keeps a broken install running
    maxminddb = None  # type: ignore[assignment]

__all__ = [
    "DBIP_ATTRIBUTION",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_CHECK_INTERVAL",
    "DEFAULT_SEARCH_DIRS",
    "ENV_ASN_DB",
    "ENV_DB",
    "GEOLITE_ATTRIBUTION",
    "GEO_METADATA_KEYS",
    "GeoLocator",
    "geo_metadata",
]

logger = logging.getLogger("centure_audit_middleware.enrich")

ENV_DB: Final = "CENTURE_AUDIT_GEOIP_DB"
ENV_ASN_DB: Final = "CENTURE_AUDIT_GEOIP_ASN_DB"
# "off" in either variable turns that database off without the "nothing found" warning (an operator's choice).
_ENV_OFF: Final = "off"

DEFAULT_SEARCH_DIRS: tuple[Path, ...] = (
    Path("/usr/share/GeoIP"),  # Debian/Ubuntu geoipupdate package
    Path("/var/lib/GeoIP"),  # geoipupdate on RHEL/Fedora, many Docker images
    Path("/usr/local/share/GeoIP"),  # geoipupdate built from source, Homebrew on Intel macOS
)
DEFAULT_CACHE_SIZE: Final = 4096
DEFAULT_CHECK_INTERVAL: Final = 5.0

# CC BY 4.0 requires this credit wherever DB-IP Lite data is shown.
DBIP_ATTRIBUTION: Final = "IP Geolocation by DB-IP (https://db-ip.com)"
# The GeoLite2 EULA asks for this sentence.
GEOLITE_ATTRIBUTION: Final = (
    "This product includes GeoLite2 data created by MaxMind, available from https://www.maxmind.com"
)

# A textual IPv6 address with a zone id stays far below this; anything longer is garbage and is not cached.
_MAX_IP_TEXT: Final = 100
_IPV4_SPACE: Final = 1 << 32

_Signature: TypeAlias = tuple[int, int, int, int]
_Fields: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Database:
    """One opened database file, as of the signature read just before it was opened."""

    path: Path
    reader: Any  # maxminddb.extension.Reader or the pure-Python maxminddb.Reader; same API
    signature: _Signature
    database_type: str
    build_epoch: int
    attribution: str | None
    native: bool


_CachedLookup: TypeAlias = "functools._lru_cache_wrapper[GeoInfo | None]"


@dataclass(frozen=True, slots=True)
class _State:
    """What lookups read, swapped as a whole on reload so that a lookup never mixes two generations."""

    main: _Database | None
    asn: _Database | None
    lookup: _CachedLookup


def _signature(path: Path) -> _Signature:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _attribution(database_type: str, description: Mapping[str, str]) -> str | None:
    # Credit whenever the vendor is detected: a credit that isn't strictly required (a paid DB-IP edition) is
    # harmless, a missing required one breaks the licence. DB-IP's types look like "DBIP-City-Lite" and
    # "DBIP-ASN-Lite (compat=GeoLite2-ASN)", so test DB-IP before GeoLite.
    text = " ".join([database_type, *description.values()]).lower()
    if "dbip" in text or "db-ip" in text:
        return DBIP_ATTRIBUTION
    if database_type.startswith("GeoLite"):
        return GEOLITE_ATTRIBUTION
    return None


_COORDINATE_TYPES: Final = (float, int)


def _english_name(entity: object) -> str | None:
    if type(entity) is dict:
        names = entity.get("names")
        if type(names) is dict:
            name = names.get("en")
            if type(name) is str and name:
                return name
    return None


def _fill(record: object, out: _Fields) -> None:
    """Copy what `record` knows into `out` without overwriting what an earlier database already said.

    One function for every schema: City/Country records are nested maps, ASN (and ISP) records are flat, and a
    main database that is itself an ASN database therefore just works. Written flat, with exact type tests,
    because it runs on every cache miss: records come from the decoder as plain dicts, lists, str, int, float.
    """
    if type(record) is not dict:
        return
    country = record.get("country")
    if type(country) is dict:
        code = country.get("iso_code")
        if type(code) is str and code and "country_code" not in out:
            out["country_code"] = code
        if "country" not in out and (name := _english_name(country)):
            out["country"] = name
    subdivisions = record.get("subdivisions")
    if (
        type(subdivisions) is list
        and subdivisions
        and "subdivision" not in out
        and (name := _english_name(subdivisions[0]))
    ):
        out["subdivision"] = name
    if "city" in record and "city" not in out and (name := _english_name(record["city"])):
        out["city"] = name
    location = record.get("location")
    if type(location) is dict:
        latitude: Any = location.get("latitude")
        longitude: Any = location.get("longitude")
        # Doubles in every vendor's files; an integer from a hand-made database is still a coordinate.
        if type(latitude) in _COORDINATE_TYPES and type(longitude) in _COORDINATE_TYPES and "latitude" not in out:
            out["latitude"], out["longitude"] = float(latitude), float(longitude)
        radius = location.get("accuracy_radius")
        if type(radius) is int and "accuracy_radius_km" not in out:
            out["accuracy_radius_km"] = radius
        zone = location.get("time_zone")
        if type(zone) is str and zone and "time_zone" not in out:
            out["time_zone"] = zone
    # Flat ASN/ISP schema; Enterprise/ISP-style records nest the same keys under "traits".
    for source in (record, record.get("traits")):
        if type(source) is dict and "autonomous_system_number" in source:
            number = source.get("autonomous_system_number")
            if type(number) is int and "asn" not in out:
                out["asn"] = number
            organization = source.get("autonomous_system_organization")
            if type(organization) is str and organization and "as_organization" not in out:
                out["as_organization"] = organization


def _merged_ranges(networks: Iterable[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sorted, non-overlapping (starts, ends) of `networks`, for a bisect membership test."""
    parsed = [ipaddress.ip_network(n) for n in networks]
    merged = list(ipaddress.collapse_addresses(parsed))  # type: ignore[type-var]  # one address family per call
    return (
        tuple(int(n.network_address) for n in merged),
        tuple(int(n.broadcast_address) for n in merged),
    )


# IPv4 addresses with no location: IANA's special-purpose registry (not globally reachable), multicast and the
# reserved 240/4 (which holds 255.255.255.255).
_IPV4_NO_LOCATION: Final = _merged_ranges(
    [
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, limited broadcast
    ]
)
# IPv6: only 2000::/3 is global unicast (everything else is unspecified, loopback, ULA fc00::/7, link-local
# fe80::/10, multicast ff00::/8 or reserved); inside it, these special-purpose blocks have no location either.
_IPV6_GLOBAL_UNICAST_TOP3: Final = 0b001
_IPV6_NO_LOCATION: Final = _merged_ranges(
    [
        "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ORCHID)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    ]
)
_IPV4_MAPPED_PREFIX: Final = 0xFFFF


def _in_ranges(value: int, ranges: tuple[tuple[int, ...], tuple[int, ...]]) -> bool:
    starts, ends = ranges
    index = bisect.bisect_right(starts, value) - 1
    return index >= 0 and value <= ends[index]


def _query_text(text: str) -> str | None:
    """The address text to look up, or None when there is no location to find (an explicit "no location").

    `socket.inet_pton` validates strictly (no "1.2.3", no zone ids: only link-local addresses carry those) in
    ~0.3 µs, and a bisect over the special-purpose ranges replaces `ipaddress`'s parse and `is_global`, which
    measured ~7 µs each. The reader gets the text: its own parse is cheaper than building an address object.
    """
    text = text.strip()
    if ":" in text:
        try:
            packed = socket.inet_pton(socket.AF_INET6, text)
        except OSError:
            return None
        value = int.from_bytes(packed, "big")
        # IPv4-mapped ::ffff:a.b.c.d, and the deprecated IPv4-compatible ::a.b.c.d, which MaxMind databases also
        # answer from the IPv4 tree (:: and ::1 stay IPv6: unspecified and loopback).
        if value >> 32 == _IPV4_MAPPED_PREFIX or 1 < value < _IPV4_SPACE:
            ipv4 = value & (_IPV4_SPACE - 1)
            return None if _in_ranges(ipv4, _IPV4_NO_LOCATION) else socket.inet_ntop(socket.AF_INET, packed[12:])
        if value >> 125 != _IPV6_GLOBAL_UNICAST_TOP3 or _in_ranges(value, _IPV6_NO_LOCATION):
            return None
        return text
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return None
    return None if _in_ranges(int.from_bytes(packed, "big"), _IPV4_NO_LOCATION) else text


def _resolve(text: str, readers: tuple[Any, ...]) -> GeoInfo | None:
    query = _query_text(text)
    if query is None:
        return None
    fields: _Fields = {}
    for reader in readers:
        try:
            record = reader.get(query)
        except ValueError:
            # An IPv6 address in an IPv4-only database: simply not there.
            continue
        _fill(record, fields)
    return GeoInfo(**fields) if fields else None


def _make_lookup(main: _Database | None, asn: _Database | None, cache_size: int) -> _CachedLookup:
    # A closure over the readers, not over the state: no reference cycle, so an old generation is freed (and
    # unmapped) by reference counting as soon as the last lookup using it returns.
    readers = tuple(db.reader for db in (main, asn) if db is not None)

    def resolve(text: str) -> GeoInfo | None:
        return _resolve(text, readers) if readers else None

    return functools.lru_cache(maxsize=cache_size)(resolve)


def _is_off(value: str | os.PathLike[str] | None) -> bool:
    return isinstance(value, str) and value.strip().lower() == _ENV_OFF


def _search(dirs: Iterable[Path], words: tuple[str, ...]) -> Path | None:
    """The best *word*.mmdb file (case-insensitive) in the first directory holding one, trying words in order."""
    listed: list[tuple[Path, list[Path]]] = []
    for directory in dirs:
        try:
            files = [p for p in directory.iterdir() if p.suffix.lower() == ".mmdb" and p.is_file()]
        except OSError:
            continue
        listed.append((directory, files))
    for word in words:  # a City database anywhere beats a Country database
        for _directory, files in listed:
            matches = [p for p in files if word in p.name.lower()]
            if matches:
                # Commercial GeoIP2 first (more precise), then the newest file (DB-IP Lite names carry the month).
                return min(matches, key=lambda p: (not p.name.startswith("GeoIP2"), -_mtime(p), p.name))
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # vanished while we looked
        return 0.0


def _choose(
    explicit: str | os.PathLike[str] | None,
    env_value: str | None,
    dirs: Iterable[Path],
    words: tuple[str, ...],
) -> tuple[Path | None, str]:
    if explicit is not None and not _is_off(explicit):
        return Path(explicit), "explicit path"
    if explicit is not None:
        return None, "off"
    if env_value:
        return (None, "off") if _is_off(env_value) else (Path(env_value), "environment")
    found = _search(dirs, words)
    return (found, "search") if found is not None else (None, "not found")


class GeoLocator:
    """Looks up client IP addresses in a MaxMind-format City/Country database and an optional ASN database.

    Thread-safe. `lookup` never raises: it returns a `GeoInfo`, or None for "no location" (private, loopback,
    link-local, reserved, multicast, unspecified and unknown addresses, garbage, geo off).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        asn_path: str | os.PathLike[str] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        check_interval: float | None = DEFAULT_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        mode: int | None = None,
    ) -> None:
        """Open exactly `path` (City, Country or ASN database) and `asn_path`; no discovery (see `open`).

        A configured file that is missing or unreadable logs one warning and is watched: when it appears (or is
        replaced) it is opened at the next check. `check_interval=None` turns the watching off. `clock` is
        injectable for tests; `mode` is a maxminddb open mode (default `MODE_AUTO`: the C extension).
        """
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        if check_interval is not None and check_interval < 0:
            raise ValueError("check_interval must be >= 0 or None")
        self._paths = tuple(Path(p) if p is not None else None for p in (path, asn_path))
        self._cache_size = cache_size
        self._check_interval = check_interval
        self._clock = clock
        self._mode = mode
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._closed = False
        # The signature of a file that failed to open, so that a broken file is reported once, not every check.
        self._failed: dict[Path, _Signature | None] = {}
        main, asn = (self._open(p) if p is not None else None for p in self._paths)
        self._state = _State(main, asn, _make_lookup(main, asn, cache_size))
        watching = check_interval is not None and any(p is not None for p in self._paths)
        self._next_check = clock() + check_interval if watching and check_interval is not None else math.inf

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        asn_path: str | os.PathLike[str] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        check_interval: float | None = DEFAULT_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        mode: int | None = None,
        environ: Mapping[str, str] | None = None,
        search_dirs: Iterable[str | os.PathLike[str]] | None = None,
    ) -> GeoLocator:
        """Find the databases and open them: explicit path, then the environment, then the usual locations.

        The main database: `path`, else ``$CENTURE_AUDIT_GEOIP_DB``, else ``*City*.mmdb`` then
        ``*Country*.mmdb`` in `search_dirs` (default `DEFAULT_SEARCH_DIRS`). The ASN database likewise:
        `asn_path`, ``$CENTURE_AUDIT_GEOIP_ASN_DB``, ``*ASN*.mmdb``. "off" for either turns it off quietly.
        When nothing is found, geo is off and one warning says where it looked.
        """
        env = os.environ if environ is None else environ
        dirs = tuple(Path(d) for d in (DEFAULT_SEARCH_DIRS if search_dirs is None else search_dirs))
        main, main_how = _choose(path, env.get(ENV_DB), dirs, ("city", "country"))
        asn, asn_how = _choose(asn_path, env.get(ENV_ASN_DB), dirs, ("asn",))
        if main is None and asn is None and main_how != "off":
            where = ", ".join(str(d) for d in dirs)
            logger.warning(
                "No GeoIP database found (no explicit path, $%s unset, nothing in %s): geo enrichment is off",
                ENV_DB,
                where or "no search directories",
            )
        elif main is not None or asn is not None:
            logger.info("GeoIP databases: %s (%s), ASN %s (%s)", main or "none", main_how, asn or "none", asn_how)
        return cls(main, asn_path=asn, cache_size=cache_size, check_interval=check_interval, clock=clock, mode=mode)

    @classmethod
    def disabled(cls) -> GeoLocator:
        """A locator that knows nothing, without any warning (geo turned off on purpose)."""
        return cls(None, check_interval=None)

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when at least one database is open (City/Country or ASN)."""
        state = self._state
        return state.main is not None or state.asn is not None

    @property
    def attribution(self) -> str | None:
        """The credit the open databases' licences require (DB-IP Lite, GeoLite2), or None."""
        state = self._state
        credits = [db.attribution for db in (state.main, state.asn) if db is not None and db.attribution]
        return "; ".join(dict.fromkeys(credits)) or None

    def status(self) -> dict[str, str | int | bool | None]:
        """A flat description for `centure-audit geoip` and diagnostics."""
        state = self._state
        out: dict[str, str | int | bool | None] = {"enabled": self.enabled, "attribution": self.attribution}
        for name, db, configured in (("db", state.main, self._paths[0]), ("asn_db", state.asn, self._paths[1])):
            path = db.path if db is not None else configured
            out[f"{name}_path"] = str(path) if path is not None else None
            out[f"{name}_type"] = db.database_type if db is not None else None
            out[f"{name}_build_epoch"] = db.build_epoch if db is not None else None
            out[f"{name}_native_reader"] = db.native if db is not None else None
        info = state.lookup.cache_info()
        out["cache_size"] = info.currsize
        out["cache_max"] = info.maxsize
        return out

    def clear_cache(self) -> None:
        """Forget cached answers (benchmarks use it to measure cold lookups)."""
        self._state.lookup.cache_clear()

    # -- lookups ----------------------------------------------------------------------------------------------

    def lookup(self, ip: str | None) -> GeoInfo | None:
        """Where `ip` is, or None for "no location" (see the class docstring). Never raises."""
        if not isinstance(ip, str) or not ip or len(ip) > _MAX_IP_TEXT:
            return None
        if self._clock() >= self._next_check:
            self._check_soon()
        state = self._state
        try:
            return state.lookup(ip)
        except Exception as exc:  # a corrupt record raises InvalidDatabaseError; one bad answer is "unknown"
            self._warn_once("lookup-error", "GeoIP lookup failed (%s: %s); answering 'no location'", type(exc), exc)
            return None

    __call__ = lookup

    # -- reloading --------------------------------------------------------------------------------------------

    def _check_soon(self) -> None:
        # Only one thread stats the files; the others keep answering from the current state meanwhile.
        if not self._lock.acquire(blocking=False):
            return
        try:
            now = self._clock()
            if now < self._next_check:
                return
            assert self._check_interval is not None  # _next_check is finite only when watching
            self._next_check = now + self._check_interval
            self._refresh_locked()
        except Exception as exc:  # lookups never raise, reloads included; the current state keeps answering
            self._warn_once("reload-error", "GeoIP reload check failed (%r); keeping the open databases", exc)
        finally:
            self._lock.release()

    def refresh(self) -> bool:
        """Check the files now; reopen any that was replaced. Returns True when the answers may have changed."""
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        if self._closed:
            return False
        state = self._state
        current = (state.main, state.asn)
        fresh: list[_Database | None] = []
        changed = False
        for configured, db in zip(self._paths, current, strict=True):
            if configured is None:
                fresh.append(None)
                continue
            try:
                signature = _signature(db.path if db is not None else configured)
            except OSError:
                # Missing for a moment (a non-atomic update) or for good: keep answering from what is open.
                fresh.append(db)
                continue
            if db is not None and signature == db.signature:
                fresh.append(db)
                continue
            reopened = self._open(db.path if db is not None else configured)
            if reopened is None:
                fresh.append(db)  # a broken replacement: keep the old generation (already warned once)
                continue
            fresh.append(reopened)
            changed = True
            logger.info("GeoIP database %s reloaded (%s)", reopened.path, reopened.database_type)
        if changed:
            main, asn = fresh
            # One assignment publishes readers and an empty cache together; stale answers can't leak across.
            self._state = _State(main, asn, _make_lookup(main, asn, self._cache_size))
        return changed

    def _open(self, path: Path) -> _Database | None:
        if maxminddb is None:  # pragma: no cover - broken install
            self._warn_once("no-maxminddb", "maxminddb is not importable: geo enrichment is off")
            return None
        try:
            signature = _signature(path)
        except OSError as exc:
            if path not in self._failed:
                self._failed[path] = None
                logger.warning(
                    "GeoIP database %s is not readable (%s): geo from it is off until the file appears", path, exc
                )
            return None
        try:
            mode = maxminddb.MODE_AUTO if self._mode is None else self._mode
            reader = maxminddb.open_database(str(path), mode)
        except Exception as exc:  # InvalidDatabaseError, OSError, ValueError: all mean "not usable now"
            if self._failed.get(path, ()) != signature:
                self._failed[path] = signature
                logger.warning("GeoIP database %s cannot be opened (%s): keeping the previous state", path, exc)
            return None
        self._failed.pop(path, None)
        metadata = reader.metadata()
        native = type(reader).__module__ == "maxminddb.extension"
        if not native:
            self._warn_once(
                "pure-python",
                "maxminddb is using its pure-Python reader (C extension unavailable, or a pure-Python mode asked "
                "for): geo lookups are several times slower; install a maxminddb wheel with the C extension",
            )
        database_type = str(metadata.database_type)
        description = metadata.description if isinstance(metadata.description, dict) else {}
        return _Database(
            path=path,
            reader=reader,
            signature=signature,
            database_type=database_type,
            build_epoch=int(metadata.build_epoch),
            attribution=_attribution(database_type, description),
            native=native,
        )

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    # -- lifecycle --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the databases; later lookups answer None. Call it when no lookup is in flight (shutdown)."""
        with self._lock:
            self._closed = True
            self._next_check = math.inf
            state = self._state
            self._state = _State(None, None, _make_lookup(None, None, 1))
        for db in (state.main, state.asn):
            if db is not None:
                db.reader.close()

    def __enter__(self) -> GeoLocator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._state
        names = [f"{db.database_type}@{db.path}" for db in (state.main, state.asn) if db is not None]
        return f"GeoLocator({', '.join(names) or 'off'})"


# -- WorkOS metadata --------------------------------------------------------------------------------------------

# Documented keys (all match WorkOS's ^[a-zA-Z0-9_-]{0,40}$). Coordinates are opt-in: see geo_metadata.
GEO_METADATA_KEYS: Final[Mapping[str, str]] = {
    "country_code": "geo_country_code",
    "country": "geo_country",
    "subdivision": "geo_region",
    "city": "geo_city",
    "time_zone": "geo_time_zone",
    "asn": "geo_asn",
    "as_organization": "geo_as_org",
}
_COORDINATE_KEYS: Final[Mapping[str, str]] = {
    "latitude": "geo_latitude",
    "longitude": "geo_longitude",
    "accuracy_radius_km": "geo_accuracy_radius_km",
}


def geo_metadata(info: GeoInfo | None, *, include_coordinates: bool = False) -> dict[str, MetadataValue]:
    """The WorkOS event-metadata form of `info`: ``geo_country_code``, ``geo_country``, ``geo_region``,
    ``geo_city``, ``geo_time_zone``, ``geo_asn`` (int), ``geo_as_org``; absent fields are left out, and None
    gives an empty dict.

    Coordinates (``geo_latitude``, ``geo_longitude``, ``geo_accuracy_radius_km``) are left out unless asked
    for: the audit trail goes to every admin of the customer organisation and to their SIEM, where a city
    centroid with a radius of tens of kilometres reads as a precise position without adding anything the city
    name doesn't say (data minimisation). The local store keeps the full `GeoInfo` either way.
    """
    if info is None:
        return {}
    keys = dict(GEO_METADATA_KEYS)
    if include_coordinates:
        keys.update(_COORDINATE_KEYS)
    out: dict[str, MetadataValue] = {}
    for field_name, key in keys.items():
        value = getattr(info, field_name)
        if value is None:
            continue
        out[key] = truncate(value) if isinstance(value, str) else value
    return out
