"""Where an outbox lives: a SQLite file, or a PostgreSQL database named by URL (no psycopg needed to tell)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from typing import Final

__all__ = ["is_postgres_url", "redact_dsn", "spill_prefix"]

_URL: Final = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)


def is_postgres_url(location: str | os.PathLike[str]) -> bool:
    """Whether an outbox location names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and bool(_URL.match(location))


def redact_dsn(dsn: str) -> str:
    """The URL without its password, in the user part or in the query string (for logs and `outbox status`)."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", dsn, flags=re.IGNORECASE)


def spill_prefix(dsn: str) -> str:
    """Where this host spills a burst for this database: a local directory. The spill is a burst's overflow on its
    way to the database (see `Spill`), taken over by the next process on this host if this one dies."""
    digest = hashlib.sha256(dsn.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"centure-audit-outbox-{digest}")
