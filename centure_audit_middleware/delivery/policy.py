"""Retry policy: full-jitter exponential backoff, Retry-After as a capped floor, and a rate limiter."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

__all__ = ["RateLimiter", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`delay(attempt)` is uniform in [0, min(max_delay, base * 2**attempt)] (AWS's "full jitter": spreads a crowd
    of clients that failed together); a server's Retry-After is a floor, capped at `max_retry_after` so that an
    absurd value (a day) can't stall the outbox."""

    base: float = 0.5
    max_delay: float = 60.0
    max_retry_after: float = 60.0
    #: WorkOS keeps idempotency keys 24 h; an event still undelivered this long after recording is dead-lettered
    #: for an operator to replay, never resent silently (a resend could no longer be deduplicated).
    idempotency_window: float = 23 * 3600.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.max_delay, self.base * (2 ** min(attempt, 32)))
        wait = random.uniform(0, ceiling)
        if retry_after is not None and retry_after > 0:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


class RateLimiter:
    """A token bucket: on average at most `requests` per `period` seconds, bursts up to one period's worth.
    `acquire()` blocks until a token is free (sender threads only, never the request path)."""

    def __init__(self, requests: int, period: float) -> None:
        if requests <= 0 or period <= 0:
            raise ValueError("rate limit needs requests > 0 and period > 0")
        self.rate = requests / period
        self.capacity = float(requests)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return True
                wait = (1 - self._tokens) / self.rate
            if stop is not None:
                if stop.wait(wait):
                    return False
            else:
                time.sleep(wait)
