"""Configuration from environment variables (one table, in the README).

| variable | meaning |
| --- | --- |
| `WORKOS_API_KEY` | enables the WorkOS sink (the SDK's own variable) |
| `WORKOS_BASE_URL` | the WorkOS API address (the SDK's own; the emulator in tests and the demo) |
| `CENTURE_AUDIT_STORE` | the local store: a path, `sqlite:///path`, `postgresql://...` or `off` (default: audit.db) |
| `CENTURE_AUDIT_OUTBOX` | the outbox: a file (default `./audit-outbox.db`), or a `postgresql://` URL |
| `CENTURE_AUDIT_DELIVERY` | `in-process` (default) or `relay`: the app only commits, `centure-audit relay` delivers |
| `CENTURE_AUDIT_TRUSTED_PROXIES` | comma-separated CIDRs of trusted proxies |
| `CENTURE_AUDIT_TRUSTED_HOPS` | or: the number of trusted proxy hops |
| `CENTURE_AUDIT_FORWARDED_HEADER` | `x-forwarded-for` (default) or `forwarded` (RFC 7239) |
| `CENTURE_AUDIT_RECORD_FAILURES` | `1` to record responses >= 400 too |
| `CENTURE_AUDIT_REDACT` | extra comma-separated key patterns to redact |
| `CENTURE_AUDIT_GEOIP_DB` | a MaxMind-format database (else common locations are searched) |
| `CENTURE_AUDIT_RATE_LIMIT` | WorkOS requests per period, `6000/60` (default) or `off` |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .delivery.redact import DEFAULT_REDACT_PATTERNS

__all__ = ["settings_from_env"]

_TRUE = {"1", "true", "yes", "on"}


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for `Auditor(...)` read from `env`; invalid values raise `ValueError` naming the variable."""
    from .sinks.base import Sink

    sinks: list[Sink] = []
    rate_limits: dict[str, tuple[int, float] | None] = {}
    api_key = env.get("WORKOS_API_KEY")
    if api_key:
        from .sinks.workos import WorkOSSink

        sinks.append(WorkOSSink(api_key=api_key, base_url=env.get("WORKOS_BASE_URL") or None))
        limit = env.get("CENTURE_AUDIT_RATE_LIMIT", "").strip().lower()
        if limit:
            rate_limits["workos"] = _parse_rate_limit(limit)
    store = env.get("CENTURE_AUDIT_STORE", "").strip()
    if store.lower() != "off":
        from .sinks.store import StoreSink

        sinks.append(StoreSink(store or None))
    settings: dict[str, Any] = {"sinks": sinks, "rate_limits": rate_limits}
    proxies = _split(env.get("CENTURE_AUDIT_TRUSTED_PROXIES"))
    if proxies:
        settings["trusted_proxies"] = proxies
    hops = env.get("CENTURE_AUDIT_TRUSTED_HOPS", "").strip()
    if hops:
        if not hops.isdigit() or int(hops) < 1:
            raise ValueError(f"CENTURE_AUDIT_TRUSTED_HOPS must be a positive integer, got {hops!r}")
        settings["trusted_hops"] = int(hops)
    header = env.get("CENTURE_AUDIT_FORWARDED_HEADER", "").strip().lower()
    if header:
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"CENTURE_AUDIT_FORWARDED_HEADER must be x-forwarded-for or forwarded, got {header!r}")
        settings["forwarded_header"] = header
    if env.get("CENTURE_AUDIT_RECORD_FAILURES", "").strip().lower() in _TRUE:
        settings["record_failures"] = True
    extra = _split(env.get("CENTURE_AUDIT_REDACT"))
    if extra:
        settings["redact"] = (*DEFAULT_REDACT_PATTERNS, *extra)
    if env.get("CENTURE_AUDIT_OUTBOX"):
        settings["outbox"] = env["CENTURE_AUDIT_OUTBOX"]
    delivery = env.get("CENTURE_AUDIT_DELIVERY", "").strip().lower()
    if delivery:
        if delivery not in ("in-process", "relay"):
            raise ValueError(f"CENTURE_AUDIT_DELIVERY must be in-process or relay, got {delivery!r}")
        settings["delivery"] = delivery
    if env.get("CENTURE_AUDIT_GEOIP_DB"):
        settings["geoip"] = env["CENTURE_AUDIT_GEOIP_DB"]
    return settings


def _parse_rate_limit(value: str) -> tuple[int, float] | None:
    if value == "off":
        return None
    requests, _, period = value.partition("/")
    try:
        parsed = (int(requests), float(period or "60"))
    except ValueError:
        raise ValueError(f"CENTURE_AUDIT_RATE_LIMIT must look like 6000/60 or off, got {value!r}") from None
    if parsed[0] <= 0 or parsed[1] <= 0:
        raise ValueError(f"CENTURE_AUDIT_RATE_LIMIT must be positive, got {value!r}")
    return parsed
