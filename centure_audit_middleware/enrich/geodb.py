"""Build tiny MaxMind-format (MMDB) databases for the demo, the unit tests and the benchmarks.

Nothing downloads at run time (DESIGN §8), so the demo and the tests cannot rely on a GeoLite2 download. This
module writes small databases with the MaxMind City and ASN schemas (the same maps and keys GeoIP2, GeoLite2 and
DB-IP Lite use), readable by `maxminddb` and by `geoip2.database.Reader(...).city()` / `.asn()` alike.

The writer, `mmdb-writer`, is a development dependency (the `dev` extra), imported only when a database is
built: the library itself never needs it to *read* a database.

`DEMO_CITIES` maps public, globally routable networks to cities so that the demo can send `X-Forwarded-For`
from several places. Four networks follow MaxMind's own test databases (London, Milton, Linköping, Changchun);
the others are illustrative assignments for demos: the data is fake and must never be used as real geolocation.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, NotRequired, TypedDict

__all__ = [
    "DEMO_ASNS",
    "DEMO_CITIES",
    "DEMO_CLIENT_IPS",
    "AsnRecord",
    "CityRecord",
    "build_asn_database",
    "build_city_database",
    "build_demo_databases",
]

DEFAULT_CITY_TYPE: Final = "Centure-Demo-City"
# geoip2's Reader.asn() insists on "GeoLite2-ASN" in the type; DB-IP's ASN Lite names itself the same way.
DEFAULT_ASN_TYPE: Final = "Centure-Demo-ASN (compat=GeoLite2-ASN)"


class CityRecord(TypedDict):
    """One network's answer in a City database; everything but the country code is optional."""

    country_code: str
    country: NotRequired[str]
    subdivision: NotRequired[str]
    subdivision_code: NotRequired[str]
    city: NotRequired[str]
    latitude: NotRequired[float]
    longitude: NotRequired[float]
    accuracy_radius_km: NotRequired[int]
    time_zone: NotRequired[str]
    continent_code: NotRequired[str]


class AsnRecord(TypedDict):
    """One network's answer in an ASN database."""

    asn: int
    organization: str


DEMO_CITIES: Final[Mapping[str, CityRecord]] = {
    # The first four mirror MaxMind's test databases (../shared/data/geoip/README.md), so answers agree.
    "81.2.69.0/24": {
        "country_code": "GB",
        "country": "United Kingdom",
        "subdivision": "England",
        "subdivision_code": "ENG",
        "city": "London",
        "latitude": 51.5142,
        "longitude": -0.0931,
        "accuracy_radius_km": 10,
        "time_zone": "Europe/London",
        "continent_code": "EU",
    },
    "216.160.83.0/24": {
        "country_code": "US",
        "country": "United States",
        "subdivision": "Washington",
        "subdivision_code": "WA",
        "city": "Milton",
        "latitude": 47.2513,
        "longitude": -122.3149,
        "accuracy_radius_km": 22,
        "time_zone": "America/Los_Angeles",
        "continent_code": "NA",
    },
    "89.160.20.0/24": {
        "country_code": "SE",
        "country": "Sweden",
        "subdivision": "Östergötland County",
        "subdivision_code": "E",
        "city": "Linköping",
        "latitude": 58.4167,
        "longitude": 15.6167,
        "accuracy_radius_km": 76,
        "time_zone": "Europe/Stockholm",
        "continent_code": "EU",
    },
    "175.16.199.0/24": {
        "country_code": "CN",
        "country": "China",
        "subdivision": "Jilin Sheng",
        "subdivision_code": "22",
        "city": "Changchun",
        "latitude": 43.88,
        "longitude": 125.3228,
        "accuracy_radius_km": 100,
        "time_zone": "Asia/Shanghai",
        "continent_code": "AS",
    },
    # Illustrative from here on (real-looking public ranges, fictitious answers).
    "2001:218::/32": {
        "country_code": "JP",
        "country": "Japan",
        "subdivision": "Tokyo",
        "subdivision_code": "13",
        "city": "Tokyo",
        "latitude": 35.6897,
        "longitude": 139.6895,
        "accuracy_radius_km": 100,
        "time_zone": "Asia/Tokyo",
        "continent_code": "AS",
    },
    "86.246.0.0/16": {
        "country_code": "FR",
        "country": "France",
        "subdivision": "Île-de-France",
        "subdivision_code": "IDF",
        "city": "Paris",
        "latitude": 48.8566,
        "longitude": 2.3522,
        "accuracy_radius_km": 20,
        "time_zone": "Europe/Paris",
        "continent_code": "EU",
    },
    "177.8.0.0/16": {
        "country_code": "BR",
        "country": "Brazil",
        "subdivision": "São Paulo",
        "subdivision_code": "SP",
        "city": "São Paulo",
        "latitude": -23.5505,
        "longitude": -46.6333,
        "accuracy_radius_km": 50,
        "time_zone": "America/Sao_Paulo",
        "continent_code": "SA",
    },
    "1.120.0.0/16": {
        "country_code": "AU",
        "country": "Australia",
        "subdivision": "New South Wales",
        "subdivision_code": "NSW",
        "city": "Sydney",
        "latitude": -33.8688,
        "longitude": 151.2093,
        "accuracy_radius_km": 50,
        "time_zone": "Australia/Sydney",
        "continent_code": "OC",
    },
}

DEMO_ASNS: Final[Mapping[str, AsnRecord]] = {
    # AS29518 and AS209 match MaxMind's GeoLite2-ASN test database; the rest are illustrative.
    "89.160.20.0/24": {"asn": 29518, "organization": "Bredband2 AB"},
    "216.160.83.0/24": {"asn": 209, "organization": "Qwest Communications Company, LLC"},
    "81.2.69.0/24": {"asn": 20712, "organization": "Andrews & Arnold Ltd"},
    "86.246.0.0/16": {"asn": 3215, "organization": "Orange S.A."},
    "177.8.0.0/16": {"asn": 28573, "organization": "Claro NXT Telecomunicacoes Ltda"},
    "1.120.0.0/16": {"asn": 1221, "organization": "Telstra Limited"},
}

# One client address per demo city, for X-Forwarded-For in the demo and for tests.
DEMO_CLIENT_IPS: Final[Mapping[str, str]] = {
    "London": "81.2.69.160",
    "Milton": "216.160.83.56",
    "Linköping": "89.160.20.112",
    "Changchun": "175.16.199.7",
    "Tokyo": "2001:218::1",
    "Paris": "86.246.12.34",
    "São Paulo": "177.8.200.9",
    "Sydney": "1.120.33.44",
}

_CONTINENT_NAMES: Final[Mapping[str, str]] = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}


def _city_record(record: CityRecord) -> dict[str, Any]:
    """The MaxMind City schema for one record: the maps `geoip2.models.City` and our reader expect."""
    out: dict[str, Any] = {"country": {"iso_code": record["country_code"]}}
    if "country" in record:
        out["country"]["names"] = {"en": record["country"]}
        # Real databases carry registered_country too; geoip2 reads it, so keep the shape familiar.
        out["registered_country"] = dict(out["country"])
    if "continent_code" in record:
        code = record["continent_code"]
        out["continent"] = {"code": code, "names": {"en": _CONTINENT_NAMES.get(code, code)}}
    if "subdivision" in record:
        subdivision: dict[str, Any] = {"names": {"en": record["subdivision"]}}
        if "subdivision_code" in record:
            subdivision["iso_code"] = record["subdivision_code"]
        out["subdivisions"] = [subdivision]
    if "city" in record:
        out["city"] = {"names": {"en": record["city"]}}
    location: dict[str, Any] = {}
    if "latitude" in record and "longitude" in record:
        # Doubles, as in MaxMind's databases: an int here would be encoded as an integer type.
        location["latitude"] = float(record["latitude"])
        location["longitude"] = float(record["longitude"])
    if "accuracy_radius_km" in record:
        location["accuracy_radius"] = int(record["accuracy_radius_km"])
    if "time_zone" in record:
        location["time_zone"] = record["time_zone"]
    if location:
        out["location"] = location
    return out


def _writer() -> Any:
    """The mmdb_writer module, or an ImportError that says how to get it."""
    try:
        import mmdb_writer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "building a GeoIP database needs mmdb-writer (pip install 'mmdb-writer>=0.2.5'), a development dependency"
        ) from exc
    return mmdb_writer


def _asn_record(record: AsnRecord) -> dict[str, Any]:
    MmdbU32 = _writer().MmdbU32

    # MaxMind stores the number as uint32; "auto" would pick uint16 for small numbers (harmless, but not faithful).
    return {
        "autonomous_system_number": MmdbU32(int(record["asn"])),
        "autonomous_system_organization": record["organization"],
    }


def _write(
    path: str | os.PathLike[str],
    records: Mapping[str, dict[str, Any]],
    *,
    database_type: str,
    description: str,
) -> Path:
    writer_module = _writer()
    from netaddr import IPSet  # mmdb-writer's own dependency: present whenever it is

    writer = writer_module.MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,  # IPv4 networks live in ::/96, as in MaxMind's own databases.
        database_type=database_type,
        languages=["en"],
        description={"en": description},
    )
    for network, record in records.items():
        # Validate with the standard library first: netaddr accepts odd forms (e.g. "10/8") we'd rather refuse.
        parsed = ipaddress.ip_network(network, strict=True)
        writer.insert_network(IPSet([str(parsed)]), record)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename: a reader watching the path (GeoLocator's reload) must never see a
    # half-written file, and os.replace is atomic on POSIX and Windows.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        writer.to_db_file(tmp_name)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def build_city_database(
    path: str | os.PathLike[str],
    entries: Mapping[str, CityRecord],
    *,
    database_type: str = DEFAULT_CITY_TYPE,
    description: str = "Centure demo City database (fake data, for demos and tests only)",
) -> Path:
    """Write a MaxMind-schema City database mapping each network (CIDR string) of `entries` to its record.

    `database_type` must contain "City" for `geoip2.database.Reader.city()` to accept the file; use e.g.
    "DBIP-City-Lite" or "GeoLite2-City" to exercise attribution detection. The file is replaced atomically.
    """
    return _write(
        path,
        {network: _city_record(record) for network, record in entries.items()},
        database_type=database_type,
        description=description,
    )


def build_asn_database(
    path: str | os.PathLike[str],
    entries: Mapping[str, AsnRecord],
    *,
    database_type: str = DEFAULT_ASN_TYPE,
    description: str = "Centure demo ASN database (fake data, for demos and tests only)",
) -> Path:
    """Write a MaxMind-schema ASN database (`autonomous_system_number`/`_organization`); replaced atomically."""
    return _write(
        path,
        {network: _asn_record(record) for network, record in entries.items()},
        database_type=database_type,
        description=description,
    )


def build_demo_databases(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Build the demo City and ASN databases (`DEMO_CITIES`, `DEMO_ASNS`) in `directory`; returns both paths."""
    base = Path(directory)
    city = build_city_database(base / "Centure-Demo-City.mmdb", DEMO_CITIES)
    asn = build_asn_database(base / "Centure-Demo-ASN.mmdb", DEMO_ASNS)
    return city, asn
