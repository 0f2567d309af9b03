"""`Durable`: the promise that a group of events is committed (durable-before-response actions, `durable=True`).

The committer settles it once the events are in the outbox (or, for the inline sinks, in the store); whoever waits
does so without polling: a thread blocks on an event, a coroutine awaits a future that the committer resolves
through the loop's thread-safe hand-off, so that waiting never blocks an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["UNAVAILABLE_BODY", "UNAVAILABLE_HEADERS", "DurabilityError", "Durable"]

#: What a durable request answers in place of its response when its record could not be committed (policy "503").
UNAVAILABLE_BODY: Final = b"Service Unavailable: the audit record of this action could not be committed.\n"
UNAVAILABLE_HEADERS: Final = (
    ("content-type", "text/plain; charset=utf-8"),
    ("content-length", str(len(UNAVAILABLE_BODY))),
    ("retry-after", "1"),
    ("cache-control", "no-store"),
)


class DurabilityError(RuntimeError):
    """`audit.record(..., durable=True)` outside a request: the event could not be committed in time."""


class Durable:
    __slots__ = ("_callbacks", "_done", "_lock", "ok")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[bool], None]] = []
        self.ok = False

    @classmethod
    def settled(cls, ok: bool) -> Durable:
        durable = cls()
        durable.settle(ok)
        return durable

    def settle(self, ok: bool) -> None:
        """Called once by the committer: committed (True) or not (False)."""
        with self._lock:
            if self._done.is_set():
                return
            self.ok = ok
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(ok)

    def wait(self, timeout: float) -> bool:
        """Block this thread until settled; whether the events were committed within `timeout`."""
        return self._done.wait(timeout) and self.ok

    async def wait_async(self, timeout: float) -> bool:
        """The same from a coroutine, without blocking its event loop (asyncio; other loops wait in a thread)."""
        if self._done.is_set():
            return self.ok
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio through anyio: wait in a worker thread
            import anyio.to_thread

            return await anyio.to_thread.run_sync(self.wait, timeout)
        future: asyncio.Future[bool] = loop.create_future()

        def resolve(ok: bool) -> None:
            if not future.done():
                future.set_result(ok)

        def on_settled(ok: bool) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(resolve, ok)

        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(on_settled)
                pending = True
            else:
                pending = False
        if not pending:
            return self.ok
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
