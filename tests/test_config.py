"""Auditor.from_env(): the documented variables, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from centure_audit_middleware import Auditor
from centure_audit_middleware.sinks import StoreSink, WorkOSSink
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import ALICE, ORG


def test_without_api_key_only_the_local_store(tmp_path: Path) -> None:
    auditor = Auditor.from_env(
        {"CENTURE_AUDIT_STORE": str(tmp_path / "a.db"), "CENTURE_AUDIT_OUTBOX": str(tmp_path / "o.db")}
    )
    try:
        assert [type(s) for s in auditor.sinks] == [StoreSink]
        assert auditor.dispatcher.config.outbox_path == str(tmp_path / "o.db")
    finally:
        auditor.close()


def test_with_api_key_workos_and_store_end_to_end(tmp_path: Path) -> None:
    with WorkOSEmulator(organizations=[ORG]) as emulator:
        auditor = Auditor.from_env(
            {
                "WORKOS_API_KEY": emulator.api_key,
                "WORKOS_BASE_URL": emulator.url,
                "CENTURE_AUDIT_STORE": str(tmp_path / "a.db"),
                "CENTURE_AUDIT_OUTBOX": str(tmp_path / "o.db"),
                "CENTURE_AUDIT_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.0/16",
                "CENTURE_AUDIT_RECORD_FAILURES": "1",
                "CENTURE_AUDIT_RATE_LIMIT": "off",
            },
            geoip=False,
        )
        try:
            assert [type(s) for s in auditor.sinks] == [WorkOSSink, StoreSink]
            assert auditor.record_failures is True
            assert auditor.client_ip_resolver.is_trusted("10.1.2.3")
            assert auditor.dispatcher.config.rate_limits == {}
            auditor.record("doc.update", actor=ALICE, organization=ORG)
            assert auditor.flush(10)
            assert len(emulator.count_by_key()) == 1
        finally:
            auditor.close()


def test_workos_rate_limit_on_by_default(tmp_path: Path) -> None:
    auditor = Auditor.from_env(
        {"WORKOS_API_KEY": "sk_test", "CENTURE_AUDIT_STORE": "off", "CENTURE_AUDIT_OUTBOX": str(tmp_path / "o.db")}
    )
    try:
        assert auditor.dispatcher.config.rate_limits == {"workos": (6000, 60.0)}
    finally:
        auditor.close()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CENTURE_AUDIT_TRUSTED_HOPS", "two", "CENTURE_AUDIT_TRUSTED_HOPS must be a positive integer"),
        ("CENTURE_AUDIT_TRUSTED_HOPS", "0", "CENTURE_AUDIT_TRUSTED_HOPS must be a positive integer"),
        ("CENTURE_AUDIT_FORWARDED_HEADER", "x-real-ip", "CENTURE_AUDIT_FORWARDED_HEADER must be"),
        ("CENTURE_AUDIT_TRUSTED_PROXIES", "10.0.0.0/33", "invalid trusted proxy"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Auditor.from_env(
            {
                "CENTURE_AUDIT_STORE": str(tmp_path / "a.db"),
                variable: value,
                "CENTURE_AUDIT_OUTBOX": str(tmp_path / "o"),
            }
        )


def test_no_sink_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one sink"):
        Auditor.from_env({"CENTURE_AUDIT_STORE": "off", "CENTURE_AUDIT_OUTBOX": str(tmp_path / "o.db")})


def test_bad_rate_limit(tmp_path: Path) -> None:
    for value in ("fast", "0/60", "-1/1"):
        with pytest.raises(ValueError, match="CENTURE_AUDIT_RATE_LIMIT"):
            Auditor.from_env({"WORKOS_API_KEY": "sk", "CENTURE_AUDIT_STORE": "off", "CENTURE_AUDIT_RATE_LIMIT": value})
