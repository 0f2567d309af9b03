"""One sender per outbox: an OS file lock beside the outbox file.

Every process that could send (the app's in-process senders, gunicorn's workers, `centure-audit relay`) tries to
take the lock; the one that has it claims and sends, the others stand by and try again every `retry` seconds. The
kernel drops the lock the moment its holder dies (SIGKILL included), so another process takes over within that
interval, and since only the holder ever claims rows, every lease it finds held by someone else belongs to a sender
that is gone: the new holder hands them back at once instead of waiting for them to expire.

`flock` locks belong to an open file description: a process that forks shares its lock with the child. The child
drops its copy of the descriptor (which leaves the parent's lock alone) and competes on its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from .forking import after_fork_in_child

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no sender lock, leases alone keep senders apart
    fcntl = None  # type: ignore[assignment]

__all__ = ["SenderLock"]


class SenderLock:
    """`try_acquire()` never blocks; `held` says whether this process is the outbox's sender now."""

    def __init__(self, outbox_path: str | os.PathLike[str]) -> None:
        self.path = Path(f"{os.fspath(outbox_path)}.sender-lock")
        self._fd: int | None = None
        self._mutex = threading.Lock()
        after_fork_in_child(self, SenderLock._forget)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this process holds it (now or already)."""
        with self._mutex:
            if self._fd is not None:
                return True
            if fcntl is None:  # pragma: no cover
                self._fd = -1
                return True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return False  # unreadable directory, read-only file system: nobody can send from here now
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        with self._mutex:
            fd, self._fd = self._fd, None
        if fd is not None and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the only descriptor of the open file description drops the lock

    def _forget(self) -> None:
        # After fork: the descriptor is the parent's lock too. Closing the child's copy leaves that lock held by the
        # parent; the child holds nothing and competes like any other process.
        fd, self._fd = self._fd, None
        self._mutex = threading.Lock()
        if fd is not None and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
