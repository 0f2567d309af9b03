"""Where an outbox lives, and what of its address may be shown (`delivery.location`)."""

from __future__ import annotations

import pytest

from centure_audit_middleware.delivery.location import is_postgres_url, redact_dsn, spill_prefix


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://audit:s3cret@db:5432/app", "postgresql://audit:***@db:5432/app"),
        ("postgres://audit:p%40ss@db/app", "postgres://audit:***@db/app"),
        (
            "postgresql://audit@db/app?password=s3cret&sslmode=require",
            "postgresql://audit@db/app?password=***&sslmode=require",
        ),
        (
            "postgresql://audit@db/app?sslmode=require&PASSWORD=s3cret",
            "postgresql://audit@db/app?sslmode=require&PASSWORD=***",
        ),
        ("postgresql://db/app", "postgresql://db/app"),
    ],
)
def test_a_password_is_never_shown(url: str, shown: str) -> None:
    assert redact_dsn(url) == shown
    assert "s3cret" not in redact_dsn(url) and "p%40ss" not in redact_dsn(url)


def test_only_postgresql_urls_name_a_database() -> None:
    assert is_postgres_url("postgresql://db/app") and is_postgres_url("POSTGRES://db/app")
    assert not is_postgres_url("audit-outbox.db") and not is_postgres_url("/var/lib/postgresql://x")


def test_a_database_spills_to_one_local_prefix_that_does_not_name_it() -> None:
    url = "postgresql://audit:s3cret@db/app"
    assert spill_prefix(url) == spill_prefix(url) != spill_prefix("postgresql://audit:s3cret@db/other")
    assert "s3cret" not in spill_prefix(url)
