"""GeoLocator: lookups, "no location" answers, discovery, reload without restart, attribution, metadata keys.

Unit tests run on tiny databases built here with `enrich.geodb`; fidelity tests compare with geoip2 on MaxMind's
test databases in ../shared/data/geoip/ and skip when that folder is absent.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import maxminddb
import pytest

from centure_audit_middleware.enrich import geo as geo_module
from centure_audit_middleware.enrich.geo import (
    DBIP_ATTRIBUTION,
    ENV_ASN_DB,
    ENV_DB,
    GEO_METADATA_KEYS,
    GEOLITE_ATTRIBUTION,
    GeoLocator,
    geo_metadata,
)
from centure_audit_middleware.enrich.geodb import (
    DEMO_ASNS,
    DEMO_CITIES,
    DEMO_CLIENT_IPS,
    CityRecord,
    build_asn_database,
    build_city_database,
)
from centure_audit_middleware.events import GeoInfo

WORKOS_KEY = re.compile(r"^[a-zA-Z0-9_-]{0,40}$")
LOGGER = "centure_audit_middleware.enrich"
SHARED_GEOIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "geoip"


class FakeClock:
    """Monotonic time that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The developer's own GeoIP setup must not leak into discovery tests.
    monkeypatch.delenv(ENV_DB, raising=False)
    monkeypatch.delenv(ENV_ASN_DB, raising=False)
    empty = tmp_path / "no-geoip-here"
    empty.mkdir()
    monkeypatch.setattr(geo_module, "DEFAULT_SEARCH_DIRS", (empty,))


@pytest.fixture
def city_db(tmp_path: Path) -> Path:
    return build_city_database(tmp_path / "dbs" / "Test-City.mmdb", DEMO_CITIES)


@pytest.fixture
def asn_db(tmp_path: Path) -> Path:
    return build_asn_database(tmp_path / "dbs" / "Test-ASN.mmdb", DEMO_ASNS)


@pytest.fixture
def locator(city_db: Path, asn_db: Path) -> Iterator[GeoLocator]:
    with GeoLocator(city_db, asn_path=asn_db, check_interval=None) as located:
        yield located


# -- lookups ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "city", "country_code", "asn"),
    [
        pytest.param("81.2.69.160", "London", "GB", 20712, id="london-v4"),
        pytest.param("216.160.83.56", "Milton", "US", 209, id="milton"),
        pytest.param("89.160.20.112", "Linköping", "SE", 29518, id="linkoping-non-ascii"),
        pytest.param("175.16.199.7", "Changchun", "CN", None, id="no-asn-entry"),
        pytest.param("2001:218::1", "Tokyo", "JP", None, id="ipv6"),
        pytest.param("177.8.200.9", "São Paulo", "BR", 28573, id="sao-paulo"),
        pytest.param("1.120.33.44", "Sydney", "AU", 1221, id="sydney"),
        pytest.param("::ffff:81.2.69.160", "London", "GB", 20712, id="ipv4-mapped-v6"),
        pytest.param("::ffff:5102:45a0", "London", "GB", 20712, id="ipv4-mapped-v6-hex"),
        pytest.param("::81.2.69.160", "London", "GB", 20712, id="ipv4-compatible-v6"),
        pytest.param(" 86.246.12.34 ", "Paris", "FR", 3215, id="surrounding-spaces"),
    ],
)
def test_lookup_finds_city_country_and_asn(
    locator: GeoLocator, ip: str, city: str, country_code: str, asn: int | None
) -> None:
    info = locator.lookup(ip)
    assert info is not None
    assert (info.city, info.country_code, info.asn) == (city, country_code, asn)


def test_lookup_reads_every_field(locator: GeoLocator) -> None:
    assert locator.lookup("89.160.20.112") == GeoInfo(
        country_code="SE",
        country="Sweden",
        subdivision="Östergötland County",
        city="Linköping",
        latitude=58.4167,
        longitude=15.6167,
        accuracy_radius_km=76,
        time_zone="Europe/Stockholm",
        asn=29518,
        as_organization="Bredband2 AB",
    )


@pytest.mark.parametrize(
    "ip",
    [
        pytest.param("10.1.2.3", id="private-10"),
        pytest.param("172.16.5.4", id="private-172"),
        pytest.param("192.168.1.10", id="private-192"),
        pytest.param("127.0.0.1", id="loopback"),
        pytest.param("::1", id="loopback-v6"),
        pytest.param("169.254.1.1", id="link-local"),
        pytest.param("fe80::1", id="link-local-v6"),
        pytest.param("fe80::1%eth0", id="link-local-v6-zone"),
        pytest.param("fd00::1", id="unique-local-v6"),
        pytest.param("100.64.0.1", id="shared-cgnat"),
        pytest.param("240.0.0.1", id="reserved"),
        pytest.param("255.255.255.255", id="broadcast"),
        pytest.param("224.0.0.1", id="multicast"),
        pytest.param("ff02::1", id="multicast-v6"),
        pytest.param("0.0.0.0", id="unspecified"),
        pytest.param("::", id="unspecified-v6"),
        pytest.param("192.0.2.1", id="documentation"),
        pytest.param("2001:db8::1", id="documentation-v6"),
        pytest.param("::ffff:10.0.0.1", id="mapped-private"),
        pytest.param("8.8.8.8", id="public-not-in-db"),
        pytest.param("2a00:1450::1", id="public-v6-not-in-db"),
        pytest.param("", id="empty"),
        pytest.param("not an ip", id="garbage"),
        pytest.param("81.2.69", id="truncated"),
        pytest.param("81.2.69.160:443", id="with-port"),
        pytest.param("1" * 5000, id="huge"),
        pytest.param("unknown", id="workos-unknown"),
        pytest.param("1.2.3", id="inet-aton-short-form"),
        pytest.param("081.2.69.160", id="leading-zero"),
        pytest.param("4000::1", id="reserved-v6-outside-2000-3"),
        pytest.param("3fff::1", id="documentation-v6-rfc9637"),
        pytest.param("2001::1", id="teredo"),
    ],
)
def test_no_location_is_none(locator: GeoLocator, ip: str) -> None:
    assert locator.lookup(ip) is None


def test_no_location_check_agrees_with_ipaddress() -> None:
    # Our bisect over the special-purpose ranges replaces ipaddress's is_global (too slow); they must agree.
    # Only 192.0.0.0/24 differs on purpose (ipaddress keeps a few /29s of it "global"; none has a location).
    rng = random.Random(7)
    ietf = ipaddress.ip_network("192.0.0.0/24")
    samples = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(20000)]
    samples += [n.network_address + offset for n in _SPECIAL_V4 for offset in (0, 1, n.num_addresses - 1)]
    for address in samples:
        if address in ietf:
            continue
        expected_none = address.is_multicast or not address.is_global
        assert (geo_module._query_text(str(address)) is None) == expected_none, address


# Every special-purpose IPv4 block, plus neighbours that are global, to probe both edges of each range.
_SPECIAL_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "11.0.0.0/8",
        "100.128.0.0/9",
        "172.32.0.0/11",
        "223.255.255.0/24",
    )
]


def test_mapped_addresses_are_checked_as_ipv4() -> None:
    assert geo_module._query_text("::ffff:81.2.69.160") == "81.2.69.160"
    assert geo_module._query_text("::81.2.69.160") == "81.2.69.160"
    assert geo_module._query_text("::ffff:192.168.1.1") is None
    assert geo_module._query_text("2001:218::1") == "2001:218::1"


def test_none_and_non_strings_are_none(locator: GeoLocator) -> None:
    assert locator.lookup(None) is None
    assert locator.lookup(12345) is None  # type: ignore[arg-type]


def test_cache_is_bounded_and_used(city_db: Path) -> None:
    with GeoLocator(city_db, cache_size=4, check_interval=None) as located:
        for ip in DEMO_CLIENT_IPS.values():
            located.lookup(ip)
        located.lookup(DEMO_CLIENT_IPS["Sydney"])
        status = located.status()
        assert status["cache_size"] == 4
        assert status["cache_max"] == 4
        located.clear_cache()
        assert located.status()["cache_size"] == 0
        assert located.lookup(DEMO_CLIENT_IPS["Paris"]) is not None


def test_main_database_may_itself_be_asn(asn_db: Path) -> None:
    with GeoLocator(asn_db, check_interval=None) as located:
        assert located.enabled
        assert located.lookup("89.160.20.112") == GeoInfo(asn=29518, as_organization="Bredband2 AB")


def test_country_only_records(tmp_path: Path) -> None:
    country_only: dict[str, CityRecord] = {"81.2.69.0/24": {"country_code": "GB", "country": "United Kingdom"}}
    path = build_city_database(tmp_path / "Test-Country.mmdb", country_only, database_type="Centure-Test-Country")
    with GeoLocator(path, check_interval=None) as located:
        assert located.lookup("81.2.69.1") == GeoInfo(country_code="GB", country="United Kingdom")


def test_ipv4_only_database_answers_none_for_ipv6(tmp_path: Path) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=4, database_type="Centure-Test-City", languages=["en"], description="v4 only")
    writer.insert_network(IPSet(["81.2.69.0/24"]), {"country": {"iso_code": "GB"}})
    path = tmp_path / "v4.mmdb"
    writer.to_db_file(str(path))
    with GeoLocator(path, check_interval=None) as located:
        assert located.lookup("81.2.69.5") == GeoInfo(country_code="GB")
        assert located.lookup("2001:218::1") is None


def test_pure_python_reader_warns_once(city_db: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with GeoLocator(city_db, mode=maxminddb.MODE_MMAP, check_interval=0, clock=FakeClock()) as located:
        assert located.status()["db_native_reader"] is False
        assert located.lookup("81.2.69.160") is not None
        os.utime(city_db, ns=(1, 1))  # a new signature: reopened, still pure Python, still one warning
        assert located.refresh()
    assert len([r for r in _warnings(caplog) if "pure-Python" in r.getMessage()]) == 1


def test_c_extension_is_used_by_default(locator: GeoLocator) -> None:
    assert locator.status()["db_native_reader"] is True


def test_closed_locator_answers_none(city_db: Path) -> None:
    located = GeoLocator(city_db, check_interval=None)
    located.close()
    assert not located.enabled
    assert located.lookup("81.2.69.160") is None
    located.close()  # twice is fine


# -- discovery --------------------------------------------------------------------------------------------------


def _city(path: Path, city: str) -> Path:
    return build_city_database(path, {"81.2.69.0/24": {"country_code": "GB", "city": city}})


def test_explicit_path_beats_environment_and_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _city(tmp_path / "explicit.mmdb", "Explicit")
    monkeypatch.setenv(ENV_DB, str(_city(tmp_path / "env.mmdb", "Env")))
    search = tmp_path / "search"
    _city(search / "GeoLite2-City.mmdb", "Search")
    with GeoLocator.open(explicit, search_dirs=[search], check_interval=None) as located:
        info = located.lookup("81.2.69.1")
        assert info is not None
        assert info.city == "Explicit"


def test_environment_beats_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DB, str(_city(tmp_path / "env.mmdb", "Env")))
    search = tmp_path / "search"
    _city(search / "GeoLite2-City.mmdb", "Search")
    with GeoLocator.open(search_dirs=[search], check_interval=None) as located:
        info = located.lookup("81.2.69.1")
        assert info is not None
        assert info.city == "Env"


def test_common_locations_city_then_country_then_asn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "usr-share-GeoIP", tmp_path / "var-lib-GeoIP"
    first.mkdir()
    # A Country database in the first directory loses to a City database in the second.
    build_city_database(first / "GeoLite2-Country.mmdb", {"81.2.69.0/24": {"country_code": "GB"}})
    _city(second / "dbip-city-lite-2024-05.mmdb", "Search")
    build_asn_database(second / "GeoLite2-ASN.mmdb", DEMO_ASNS)
    (second / "README.txt").write_text("not a database")
    monkeypatch.setattr(geo_module, "DEFAULT_SEARCH_DIRS", (tmp_path / "missing", first, second))
    with GeoLocator.open(check_interval=None) as located:
        status = located.status()
        assert status["db_path"] == str(second / "dbip-city-lite-2024-05.mmdb")
        assert status["asn_db_path"] == str(second / "GeoLite2-ASN.mmdb")
        assert located.lookup("81.2.69.1") == GeoInfo(
            country_code="GB", city="Search", asn=20712, as_organization="Andrews & Arnold Ltd"
        )


def test_common_locations_country_when_no_city(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_city_database(tmp_path / "GeoLite2-Country.mmdb", {"81.2.69.0/24": {"country_code": "GB"}})
    monkeypatch.setattr(geo_module, "DEFAULT_SEARCH_DIRS", (tmp_path,))
    with GeoLocator.open(check_interval=None) as located:
        assert located.status()["db_path"] == str(tmp_path / "GeoLite2-Country.mmdb")


def test_asn_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, city_db: Path) -> None:
    monkeypatch.setenv(ENV_ASN_DB, str(build_asn_database(tmp_path / "asn.mmdb", DEMO_ASNS)))
    with GeoLocator.open(city_db, check_interval=None) as located:
        info = located.lookup("216.160.83.56")
        assert info is not None
        assert info.asn == 209


def test_nothing_found_is_off_with_exactly_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with GeoLocator.open() as located:
        assert not located.enabled
        assert located.lookup("81.2.69.160") is None
        assert located.lookup("216.160.83.56") is None
        assert located.attribution is None
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "geo enrichment is off" in warnings[0].getMessage()


def test_asn_off_does_not_hide_a_missing_main_database(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    monkeypatch.setenv(ENV_ASN_DB, "off")
    with GeoLocator.open() as located:
        assert not located.enabled
    assert len(_warnings(caplog)) == 1


def test_off_in_environment_is_quiet(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    monkeypatch.setenv(ENV_DB, "off")
    with GeoLocator.open() as located:
        assert not located.enabled
    assert _warnings(caplog) == []


def test_disabled_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert GeoLocator.disabled().lookup("81.2.69.160") is None
    assert _warnings(caplog) == []


def test_missing_explicit_file_warns_once_then_is_picked_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = FakeClock()
    path = tmp_path / "later" / "City.mmdb"
    with GeoLocator.open(path, clock=clock, check_interval=5) as located:
        assert not located.enabled
        for _ in range(3):
            clock.advance(6)
            assert located.lookup("81.2.69.160") is None
        assert len(_warnings(caplog)) == 1
        _city(path, "Arrived")
        clock.advance(6)
        info = located.lookup("81.2.69.160")
        assert info is not None
        assert info.city == "Arrived"
        assert located.enabled


# -- reload without restart -------------------------------------------------------------------------------------


def test_replaced_file_is_picked_up_after_the_check_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    path = _city(tmp_path / "City.mmdb", "Before")
    with GeoLocator(path, clock=clock, check_interval=5) as located:
        before = located.lookup("81.2.69.160")
        assert before is not None
        assert before.city == "Before"

        staged = _city(tmp_path / "staging" / "City.mmdb", "After")
        os.replace(staged, path)

        clock.advance(4.9)  # not due yet: the cached answer stands, no stat
        again = located.lookup("81.2.69.160")
        assert again is not None
        assert again.city == "Before"

        clock.advance(0.2)
        after = located.lookup("81.2.69.160")
        assert after is not None
        assert after.city == "After"  # reopened, and the cache was cleared with it


def test_unchanged_file_is_not_reopened(city_db: Path) -> None:
    clock = FakeClock()
    with GeoLocator(city_db, clock=clock, check_interval=1) as located:
        assert not located.refresh()
        clock.advance(2)
        located.lookup("81.2.69.160")
        assert not located.refresh()


def test_broken_replacement_keeps_old_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = FakeClock()
    path = _city(tmp_path / "City.mmdb", "Good")
    with GeoLocator(path, clock=clock, check_interval=1) as located:
        assert located.lookup("81.2.69.160") is not None
        broken = tmp_path / "broken.mmdb"
        broken.write_bytes(b"this is not a MaxMind database" * 10)
        os.replace(broken, path)
        for _ in range(3):
            clock.advance(2)
            located.clear_cache()
            info = located.lookup("81.2.69.160")
            assert info is not None
            assert info.city == "Good"  # the old generation keeps answering from its mapping
        assert len(_warnings(caplog)) == 1
        _city(path, "Fixed")
        clock.advance(2)
        fixed = located.lookup("81.2.69.160")
        assert fixed is not None
        assert fixed.city == "Fixed"


def test_deleted_file_keeps_answering(tmp_path: Path) -> None:
    clock = FakeClock()
    path = _city(tmp_path / "City.mmdb", "Kept")
    with GeoLocator(path, clock=clock, check_interval=1) as located:
        path.unlink()
        clock.advance(2)
        located.clear_cache()
        info = located.lookup("81.2.69.160")
        assert info is not None
        assert info.city == "Kept"


def test_lookups_from_threads_during_reloads(tmp_path: Path) -> None:
    path = _city(tmp_path / "City.mmdb", "A")
    errors: list[BaseException] = []
    seen: set[str | None] = set()
    stop = threading.Event()

    def hammer(located: GeoLocator) -> None:
        try:
            while not stop.is_set():
                info = located.lookup("81.2.69.160")
                seen.add(info.city if info else None)
                located.lookup("8.8.8.8")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with GeoLocator(path, check_interval=0) as located:
        threads = [threading.Thread(target=hammer, args=(located,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            for i in range(8):
                _city(tmp_path / "next.mmdb", "B" if i % 2 else "A")
                os.replace(tmp_path / "next.mmdb", path)
                located.refresh()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert errors == []
    assert seen <= {"A", "B"}


# -- attribution and metadata -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("database_type", "expected"),
    [
        pytest.param("DBIP-City-Lite", DBIP_ATTRIBUTION, id="dbip-city-lite"),
        pytest.param("DBIP-Country-Lite", DBIP_ATTRIBUTION, id="dbip-country-lite"),
        pytest.param("GeoLite2-City", GEOLITE_ATTRIBUTION, id="geolite2-city"),
        pytest.param("GeoIP2-City", None, id="geoip2-commercial"),
        pytest.param("Centure-Demo-City", None, id="own-demo"),
    ],
)
def test_attribution_from_database_type(tmp_path: Path, database_type: str, expected: str | None) -> None:
    path = build_city_database(tmp_path / "x.mmdb", DEMO_CITIES, database_type=database_type)
    with GeoLocator(path, check_interval=None) as located:
        assert located.attribution == expected


def test_attribution_from_description_and_both_databases(tmp_path: Path) -> None:
    city = build_city_database(
        tmp_path / "c.mmdb", DEMO_CITIES, database_type="Custom-City", description="dbip-city-lite-2024-05 by db-ip.com"
    )
    asn = build_asn_database(tmp_path / "a.mmdb", DEMO_ASNS, database_type="GeoLite2-ASN")
    with GeoLocator(city, asn_path=asn, check_interval=None) as located:
        assert located.attribution == f"{DBIP_ATTRIBUTION}; {GEOLITE_ATTRIBUTION}"
    dbip_asn = build_asn_database(tmp_path / "d.mmdb", DEMO_ASNS, database_type="DBIP-ASN-Lite (compat=GeoLite2-ASN)")
    with GeoLocator(city, asn_path=dbip_asn, check_interval=None) as located:
        assert located.attribution == DBIP_ATTRIBUTION  # said once


def test_geo_metadata_keys_follow_workos_rules(locator: GeoLocator) -> None:
    info = locator.lookup("89.160.20.112")
    metadata = geo_metadata(info)
    assert metadata == {
        "geo_country_code": "SE",
        "geo_country": "Sweden",
        "geo_region": "Östergötland County",
        "geo_city": "Linköping",
        "geo_time_zone": "Europe/Stockholm",
        "geo_asn": 29518,
        "geo_as_org": "Bredband2 AB",
    }
    with_coordinates = geo_metadata(info, include_coordinates=True)
    assert with_coordinates["geo_latitude"] == 58.4167
    assert with_coordinates["geo_longitude"] == 15.6167
    assert with_coordinates["geo_accuracy_radius_km"] == 76
    for key, value in with_coordinates.items():
        assert WORKOS_KEY.match(key), key
        assert isinstance(value, str | int | float | bool)
        assert not isinstance(value, str) or len(value) <= 500
    assert all(WORKOS_KEY.match(key) for key in GEO_METADATA_KEYS.values())


def test_geo_metadata_of_none_and_partial() -> None:
    assert geo_metadata(None) == {}
    assert geo_metadata(GeoInfo(country_code="JP")) == {"geo_country_code": "JP"}
    long_name = geo_metadata(GeoInfo(city="x" * 600))["geo_city"]
    assert isinstance(long_name, str)
    assert len(long_name) == 500


# -- fidelity against MaxMind's test databases and geoip2 ------------------------------------------------------

FIDELITY_IPS = [
    "81.2.69.142",
    "81.2.69.160",
    "2.125.160.216",
    "89.160.20.112",
    "216.160.83.56",
    "175.16.199.0",
    "67.43.156.0",
    "214.78.120.1",
    "214.1.1.0",
    "2001:218::1",
    "2a02:cf40::1",
    "::81.2.69.142",
    "::ffff:81.2.69.142",
    "8.8.8.8",
    "1.0.0.1",
]

needs_shared = pytest.mark.skipif(not SHARED_GEOIP.is_dir(), reason="../shared/data/geoip/ is absent")


@needs_shared
@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        pytest.param("81.2.69.142", ("GB", "London", "England", "Europe/London"), id="london"),
        pytest.param("2.125.160.216", ("GB", "Boxford", "England", None), id="boxford"),
        pytest.param("89.160.20.112", ("SE", "Linköping", None, "Europe/Stockholm"), id="linkoping"),
        pytest.param("216.160.83.56", ("US", "Milton", "Washington", "America/Los_Angeles"), id="milton"),
        pytest.param("175.16.199.0", ("CN", "Changchun", None, None), id="changchun"),
        pytest.param("2001:218::1", ("JP", None, None, None), id="japan-v6"),
        pytest.param("::81.2.69.142", ("GB", "London", "England", "Europe/London"), id="ipv4-compatible"),
    ],
)
def test_readme_answers(ip: str, expected: tuple[str | None, ...]) -> None:
    with GeoLocator(SHARED_GEOIP / "GeoLite2-City-Test.mmdb", check_interval=None) as located:
        info = located.lookup(ip)
    assert info is not None
    country_code, city, subdivision, time_zone = expected
    assert info.country_code == country_code
    assert info.city == city
    if subdivision is not None:
        assert info.subdivision == subdivision
    if time_zone is not None:
        assert info.time_zone == time_zone


@needs_shared
@pytest.mark.parametrize("database", ["GeoIP2-City-Test.mmdb", "GeoLite2-City-Test.mmdb"])
def test_city_fidelity_with_geoip2(database: str) -> None:
    import geoip2.database
    import geoip2.errors

    path = SHARED_GEOIP / database
    with GeoLocator(path, check_interval=None) as located, geoip2.database.Reader(str(path)) as reference:
        assert located.attribution == (GEOLITE_ATTRIBUTION if database.startswith("GeoLite") else None)
        compared = 0
        for ip in FIDELITY_IPS:
            ours = located.lookup(ip)
            try:
                theirs = reference.city(ip)
            except geoip2.errors.AddressNotFoundError:
                assert ours is None, ip
                continue
            expected = GeoInfo(
                country_code=theirs.country.iso_code,
                country=theirs.country.name,
                subdivision=theirs.subdivisions[0].name if theirs.subdivisions else None,
                city=theirs.city.name,
                latitude=theirs.location.latitude,
                longitude=theirs.location.longitude,
                accuracy_radius_km=theirs.location.accuracy_radius,
                time_zone=theirs.location.time_zone,
            )
            # A record with nothing we keep (214.1.1.0: only traits) is "no location" for us.
            assert ours == (expected if expected != GeoInfo() else None), ip
            compared += 1
        assert compared >= 8


@needs_shared
def test_country_and_asn_fidelity_with_geoip2() -> None:
    import geoip2.database
    import geoip2.errors

    country_path, asn_path = SHARED_GEOIP / "GeoLite2-Country-Test.mmdb", SHARED_GEOIP / "GeoLite2-ASN-Test.mmdb"
    with (
        GeoLocator(country_path, asn_path=asn_path, check_interval=None) as located,
        geoip2.database.Reader(str(country_path)) as countries,
        geoip2.database.Reader(str(asn_path)) as asns,
    ):
        assert located.attribution == GEOLITE_ATTRIBUTION
        for ip in FIDELITY_IPS:
            fields: dict[str, object] = {}
            try:
                country = countries.country(ip)
                fields.update(country_code=country.country.iso_code, country=country.country.name)
            except geoip2.errors.AddressNotFoundError:
                pass
            try:
                asn = asns.asn(ip)
                fields.update(asn=asn.autonomous_system_number, as_organization=asn.autonomous_system_organization)
            except geoip2.errors.AddressNotFoundError:
                pass
            present = {k: v for k, v in fields.items() if v is not None}
            assert located.lookup(ip) == (GeoInfo(**present) if present else None), ip  # type: ignore[arg-type]
        info = located.lookup("89.160.20.112")
        assert info is not None
        assert (info.country_code, info.asn, info.as_organization) == ("SE", 29518, "Bredband2 AB")


@needs_shared
def test_private_addresses_answer_none_on_maxmind_databases() -> None:
    # The test database knows nothing private either; the point is that we never ask it.
    with GeoLocator(SHARED_GEOIP / "GeoIP2-City-Test.mmdb", check_interval=None) as located:
        for ip in ("127.0.0.1", "10.0.0.1", "::1", "fe80::1", "192.168.0.1"):
            assert located.lookup(ip) is None
