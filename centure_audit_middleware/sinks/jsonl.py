"""`JsonlSink`: events as JSON Lines in a local file, for log shippers (Vector, Fluent Bit, Filebeat) to tail.

What a tailing agent can rely on:

- Whole lines only. Each event is one line, ``event.to_json()`` plus ``\\n``; lines reach the file through one
  ``write(2)`` on an ``O_APPEND`` descriptor with no user-space buffer, several whole lines per call at most, so
  there is nothing left to flush and a reader never finds half a line at the end of the file (a write the disk
  cuts short is truncated away before the error is reported).
- Rotation by rename, then reopen: ``app.jsonl`` becomes ``app.jsonl.1`` (``.1`` becomes ``.2``, ..., up to
  `backups`; the oldest is deleted), and a new ``app.jsonl`` is created. An agent that follows the file by inode
  reads the renamed file to its end, then picks up the new one; nothing is ever truncated or copied.
- Rotation happens before a write that would take the file past `max_bytes`, and before the first write once
  `rotate_every` has passed since the file was started (measured from the last rotation, found from the
  modification time of ``.1`` after a restart). A single line longer than `max_bytes` gets a file to itself.

Durability (`fsync`): by default lines are handed to the kernel at once, so they survive the process being killed
(SIGKILL, OOM), but not a power cut or kernel crash within the few seconds before the kernel writes them out.
``fsync=True`` also calls ``fsync(2)`` after each batch and on the directory after a rotation: safe against power
loss, at the cost of a disk flush per batch (milliseconds on most disks). Since the dispatcher's outbox keeps each
event until the sink has returned, the default loses nothing on a crash of the app itself.

One sink per file: the sink is thread-safe, but two processes rotating the same file would rename each other's
files. With several worker processes, give each its own file (e.g. ``f"audit-{os.getpid()}.jsonl"``) and let the
agent tail them all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from ..events import AuditEvent
from .base import RejectEvent, RetryLater, Sink

__all__ = ["JsonlSink"]

#: Bytes per write(2) at most when a batch is written (whole lines are never split across writes).
MAX_WRITE: Final = 1 << 20


class JsonlSink(Sink):
    """Appends each event as one JSON line to `path`, rotating by size (`max_bytes`) and/or age (`rotate_every`).

    `backups` is how many rotated files to keep (``path.1`` newest ... ``path.N`` oldest); 0 deletes the file on
    rotation (a tailer still holding it open reads it to the end). `mode` is the permission of new files (subject
    to the umask): events may hold personal data, so not world-readable by default. `clock` is for tests.
    """

    name = "jsonl"
    inline = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        rotate_every: dt.timedelta | None = None,
        backups: int = 10,
        fsync: bool = False,
        mode: int = 0o640,
        name: str = "jsonl",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if rotate_every is not None and (not isinstance(rotate_every, dt.timedelta) or rotate_every <= dt.timedelta(0)):
            raise ValueError(f"rotate_every must be a positive timedelta, got {rotate_every!r}")
        if type(backups) is not int or backups < 0:
            raise ValueError(f"backups must be an integer >= 0, got {backups!r}")
        self.name = name
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.rotate_every = rotate_every
        self.backups = backups
        self.fsync = fsync
        self._mode = mode
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._started = 0.0
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._open(first=True)

    # --- file handling (called with the lock held) ---

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _open(self, *, first: bool = False) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self._mode)
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._started = self._clock()
        if first and self._size > 0:
            # Restarted on a file already in use: its period began at the last rotation, if we can tell.
            with contextlib.suppress(OSError):
                self._started = min(self._started, self._backup(1).stat().st_mtime)

    def _rotate(self) -> None:
        assert self._fd is not None
        if self.fsync:
            os.fsync(self._fd)
        if self.backups == 0:
            os.unlink(self.path)
        else:
            # Oldest first, so that no rename overwrites a file that has not moved yet.
            for index in range(self.backups - 1, 0, -1):
                source = self._backup(index)
                if source.exists():
                    os.replace(source, self._backup(index + 1))
            os.replace(self.path, self._backup(1))
        os.close(self._fd)
        self._fd = None
        self._open()
        if self.fsync:
            self._fsync_directory()

    def _fsync_directory(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _due(self, next_line: int) -> bool:
        if self._size == 0:
            return False
        if self.max_bytes is not None and self._size + next_line > self.max_bytes:
            return True
        return self.rotate_every is not None and self._clock() - self._started >= self.rotate_every.total_seconds()

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        before = self._size
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # Never leave a partial line for a tailer to read: cut the file back to the last whole line.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, before)
            raise
        self._size = before + len(data)

    # --- Sink ---

    def send(self, event: AuditEvent) -> None:
        outcome = self.send_many([event])[0]
        if outcome is not None:
            raise outcome

    def send_many(self, events: Sequence[AuditEvent]) -> list[BaseException | None]:
        return self.send_encoded(events, None)

    def send_encoded(self, events: Sequence[AuditEvent], bodies: Sequence[str] | None) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = [None] * len(events)
        lines: list[tuple[int, bytes]] = []
        for i, event in enumerate(events):
            try:
                body = event.to_json() if bodies is None else bodies[i]
                # backslashreplace: a lone surrogate becomes its JSON escape (\udc80), which reads back losslessly.
                lines.append((i, (body + "\n").encode("utf-8", "backslashreplace")))
            except Exception as exc:
                outcomes[i] = RejectEvent(f"cannot serialise event as JSON: {exc}")
        with self._lock:
            if self._closed:
                return [RetryLater("the JSON Lines sink is closed") if o is None else o for o in outcomes]
            done = 0
            try:
                if self._fd is None:  # a rotation failed half-way (e.g. disk full): start a file again
                    self._open()
                while done < len(lines):
                    if self._due(len(lines[done][1])):
                        self._rotate()
                    # As many whole lines as fit before the next rotation point, in one write.
                    chunk = [lines[done][1]]
                    size = len(chunk[0])
                    end = done + 1
                    while end < len(lines) and size + len(lines[end][1]) <= MAX_WRITE:
                        nxt = len(lines[end][1])
                        if self.max_bytes is not None and self._size + size + nxt > self.max_bytes:
                            break
                        chunk.append(lines[end][1])
                        size += nxt
                        end += 1
                    self._write_all(b"".join(chunk))
                    done = end
                if self.fsync and lines and self._fd is not None:
                    os.fsync(self._fd)
            except OSError as exc:
                for i, _ in lines[done:]:
                    outcomes[i] = RetryLater(f"cannot write {self.path}: {exc}")
        return outcomes

    def rotate(self) -> None:
        """Rotate now (e.g. from a SIGHUP handler), whatever the size and age of the file."""
        with self._lock:
            if self._fd is not None and self._size > 0:
                self._rotate()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                fd, self._fd = self._fd, None
                try:
                    if self.fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
