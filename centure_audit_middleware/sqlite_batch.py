"""Many rows per SQLite statement step, for the writes a background thread makes beside a busy server.

Python's `sqlite3` lets go of the GIL around every step of a statement, and `executemany` steps once per row (so
does iterating over a result). A background thread (the committer, a sender) that writes a batch that way takes
the GIL back once per row; in a server, whose event loop thread always wants it, each take is a forced switch
between the two threads, and with the server on one core a context switch. Measured on FastAPI under uvicorn
(`benchmarks/server_throughput.py`, relay mode): the request thread's CPU per request rose by 50-90 µs over its
own work while the committer wrote its rows one step each, and by 10-20 µs once each chunk was one statement.

These helpers write a batch as a few multi-row statements: `INSERT ... VALUES (...), (...), ...` and
`... WHERE key IN (?, ?, ...)`, in chunks that SQLite's variable limit allows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

__all__ = ["MAX_ROWS", "for_keys", "insert_rows"]

#: Rows (or keys) per statement at most: bounds a statement's text and the number of shapes the statement cache
#: holds; 500 is also SQLite's default limit on compound SELECTs, which old versions applied to VALUES lists.
MAX_ROWS: Final = 500


def _chunk(conn: sqlite3.Connection, width: int) -> int:
    # 32,766 variables since SQLite 3.32, 999 before: asked, not assumed.
    return max(1, min(MAX_ROWS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // max(1, width)))


def insert_rows(
    conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]], *, row: str, tail: str = ""
) -> int:
    """Run `{head} VALUES {row}, {row}, ... {tail}` for `rows` (`row` is one row's parenthesised placeholders, such
    as "(?, ?, 1)"), in as few statements as the variable limit allows; returns the rows changed."""
    if not rows:
        return 0
    width = row.count("?")
    size = _chunk(conn, width)
    changed = 0
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        values = ", ".join([row] * len(chunk))
        params = [value for one in chunk for value in one]
        changed += conn.execute(f"{head} VALUES {values} {tail}", params).rowcount
    return changed


def for_keys(conn: sqlite3.Connection, sql: str, keys: Sequence[object], before: Sequence[object] = ()) -> int:
    """Run `sql`, whose `{keys}` is replaced by `?, ?, ...`, for `keys` in chunks, each chunk's keys bound after
    `before` (the parameters that come ahead of the list); returns the rows changed."""
    if not keys:
        return 0
    size = _chunk(conn, 1) - len(before)
    changed = 0
    for start in range(0, len(keys), size):
        chunk = keys[start : start + size]
        marks = ", ".join("?" * len(chunk))
        changed += conn.execute(sql.format(keys=marks), [*before, *chunk]).rowcount
    return changed
