"""Enrichment: where the client is (GeoIP) and what it runs (parsed user agent), computed off the request path.

The dispatcher calls `Enricher.enrich(ip, user_agent)` for every event nobody enriched on the request path
(DESIGN §2, §5); both halves are cached, so a burst from one client costs two dict probes. `enrich` never
raises: a failure is logged once per reason and that half of the answer is None (the event is delivered
unenriched rather than not at all).

The database builder for demos and tests lives in `centure_audit_middleware.enrich.geodb`; it is not imported
here because it needs `mmdb-writer`, a development dependency.
"""

from __future__ import annotations

import logging

from ..events import GeoInfo, UserAgentInfo
from .geo import GeoLocator, geo_metadata
from .useragent import UserAgentParser, default_parser

__all__ = ["Enricher", "GeoLocator", "UserAgentParser", "default_parser", "geo_metadata"]

logger = logging.getLogger("centure_audit_middleware.enrich")


class Enricher:
    """Both enrichers behind one call. Either may be None (that half is off)."""

    def __init__(self, geo: GeoLocator | None, user_agents: UserAgentParser | None) -> None:
        self.geo = geo
        self.user_agents = user_agents
        self._warned: set[str] = set()

    def enrich(self, ip: str | None, user_agent: str | None) -> tuple[GeoInfo | None, UserAgentInfo | None]:
        """(geo, parsed user agent) for one event; None for whatever is unknown, off, or failed."""
        return self._locate(ip), self._parse(user_agent)

    __call__ = enrich

    def _locate(self, ip: str | None) -> GeoInfo | None:
        if self.geo is None or not ip:
            return None
        try:
            return self.geo.lookup(ip)
        except Exception as exc:  # lookup doesn't raise by contract; this guards the pipeline against a bug
            self._warn_once("geo", "geo enrichment failed (%r); events go out without location", exc)
            return None

    def _parse(self, user_agent: str | None) -> UserAgentInfo | None:
        if self.user_agents is None or not user_agent:
            return None
        try:
            return self.user_agents.parse(user_agent)
        except Exception as exc:
            self._warn_once("user_agent", "user-agent enrichment failed (%r); events go out unparsed", exc)
            return None

    def _warn_once(self, reason: str, message: str, *args: object) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            logger.warning(message, *args)

    def close(self) -> None:
        """Close the GeoIP databases (the user-agent parser holds nothing to release)."""
        if self.geo is not None:
            self.geo.close()
