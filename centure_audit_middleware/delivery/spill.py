"""The spill: where events go when the hand-off queue is past its bound (a burst faster than the committer).

Beyond `Dispatcher`'s spill threshold, the thread that hands an event off builds it itself and appends it, encoded,
to a file of its own process beside the outbox (one `write` to the page cache: no database lock to wait for), so
that a burst costs disk, not memory. The committer moves spilled events into the outbox in its next round; an event
keeps the id it was built with, so a spill read twice (after a crash between the outbox commit and the spill's
removal) is one event, not two.

Each process writes `<outbox>.spill.<pid>.<random>` and holds an `flock` on it: a process starting on the same outbox
takes over the spill files no live process holds, which is how a SIGKILLed process's spill reaches the outbox.
Lines are ``<id> TAB <recorded_at> TAB <event JSON> LF`` (JSON escapes every control character, so neither TAB nor LF
can occur inside it); a line cut short by a crash is ignored.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from .forking import after_fork_in_child

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the spill is not shared between processes there
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spill"]

Row = tuple[str, float, str]


class Spill:
    def __init__(self, outbox_path: str | os.PathLike[str]) -> None:
        self.prefix = f"{os.fspath(outbox_path)}.spill."
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        #: files being moved into the outbox (this process's, or orphans it took), each with its locked descriptor
        self._moving: dict[Path, int] = {}
        after_fork_in_child(self, Spill._forget)

    def write(self, event_id: str, recorded_at: float, body: str) -> bool:
        """Append one event; False if it could not be written (the caller keeps it in memory instead)."""
        try:
            line = f"{event_id}\t{recorded_at!r}\t{body}\n".encode()
        except UnicodeEncodeError:
            return False
        with self._lock:
            try:
                if self._fd is None:
                    self._open()
                assert self._fd is not None
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError("short write")
                self._size += written
            except OSError:
                # Disk full: never leave a partial line behind a later whole one.
                if self._fd is not None:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, self._size)
                return False
        return True

    def _open(self) -> None:
        path = Path(f"{self.prefix}{os.getpid()}.{uuid.uuid4().hex[:8]}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        self._fd, self._path, self._size = fd, path, 0

    def take(self) -> Path | None:
        """This process's spill file, to move into the outbox now; later writes start a new one. Its lock is kept
        until `remove`: no other process may take it for an orphan while it is being moved."""
        with self._lock:
            path, fd = self._path, self._fd
            self._fd = self._path = None
            if path is not None and fd is not None:
                self._moving[path] = fd
        return path

    def orphans(self) -> list[Path]:
        """Spill files that no live process holds (a dead process's), locked for this one until `remove`, and ours
        whose move failed and is to be tried again."""
        # The directory is listed and each file tried outside the lock, which `write()` takes on the request path;
        # flock refuses a file this process holds (its own spill, or one being moved), whichever fd asks.
        names = sorted(glob.glob(glob.escape(self.prefix) + "*"))
        with self._lock:
            found = list(self._moving)
        for name in names:
            path = Path(name)
            if path not in found and (fd := _lock_orphan(path)) is not None:
                with self._lock:
                    self._moving[path] = fd
                found.append(path)
        return found

    def has_orphans(self) -> bool:
        """Whether any spill file waits to be moved (a probe: nothing is taken)."""
        with self._lock:
            if self._moving:
                return True
        for name in glob.glob(glob.escape(self.prefix) + "*"):
            fd = _lock_orphan(Path(name))
            if fd is not None:
                os.close(fd)  # the probe's lock goes with it
                return True
        return False

    def is_own(self, path: Path) -> bool:
        """Whether this process wrote `path` (its pid is in the name)."""
        return path.name.startswith(f"{Path(self.prefix).name}{os.getpid()}.")

    @staticmethod
    def read(path: Path, chunk: int = 1000) -> Iterator[list[Row]]:
        """The file's rows, `chunk` at a time (a burst's spill can be larger than the memory it was meant to spare)."""
        rows: list[Row] = []
        with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # cut short by a crash: written, never acknowledged
                event_id, recorded_at, body = raw[:-1].decode().split("\t", 2)
                rows.append((event_id, float(recorded_at), body))
                if len(rows) >= chunk:
                    yield rows
                    rows = []
        if rows:
            yield rows

    def remove(self, path: Path) -> None:
        """`path` is in the outbox: delete it, then let its lock go."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with self._lock:
            fd = self._moving.pop(path, None)
        if fd is not None:
            os.close(fd)

    def _forget(self) -> None:
        # After fork: the files and their locks are the parent's (closing the child's copies of the descriptors
        # leaves the parent's locks alone); the child spills into a file of its own.
        self._lock = threading.Lock()
        fds = [self._fd, *self._moving.values()]
        self._fd, self._path, self._moving = None, None, {}
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _lock_orphan(path: Path) -> int | None:
    """A locked descriptor of `path` if no live process holds it (its writer died): then it is ours to move."""
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
