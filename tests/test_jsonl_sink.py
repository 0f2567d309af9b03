"""JsonlSink: whole lines only, rotation by size and by time, and a tailer that follows by inode reads every line
exactly once while the file rotates under it."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from centure_audit_middleware.events import Actor, AuditEvent
from centure_audit_middleware.sinks.base import RetryLater
from centure_audit_middleware.sinks.jsonl import JsonlSink

from .store_fixtures import make_event


def read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a partial line at the end of the file"
    return data.decode("utf-8").splitlines()


def all_files(path: Path) -> list[Path]:
    """The rotated files oldest first, then the current one."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*backups, path]


def test_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    sink = JsonlSink(path)
    events = [make_event(seconds=i, enriched=True, metadata={"note": "multi\nline ☃"}) for i in range(3)]
    sink.send(events[0])
    assert sink.send_many(events[1:]) == [None, None]
    sink.close()
    lines = read_lines(path)
    assert [AuditEvent.from_json(line) for line in lines] == events
    assert json.loads(lines[0])["geo"]["city"] == "Berlin"  # the enrichment is in the line
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # not world-readable


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier": true}\n')
    with_sink = JsonlSink(path)
    with_sink.send(make_event())
    with_sink.close()
    assert len(read_lines(path)) == 2


def test_rotation_by_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = [make_event(seconds=i) for i in range(60)]
    line_size = len(events[0].to_json()) + 1
    sink = JsonlSink(path, max_bytes=line_size * 7, backups=100)
    for i in range(0, 60, 4):
        assert sink.send_many(events[i : i + 4]) == [None] * 4
    sink.close()
    files = all_files(path)
    assert len(files) == 9  # 60 lines, 7 per file
    for f in files:
        assert f.stat().st_size <= line_size * 7
    lines = [line for f in files for line in read_lines(f)]
    assert [json.loads(line)["id"] for line in lines] == [e.id for e in events]


def test_rotation_keeps_at_most_backups_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = [make_event(seconds=i) for i in range(20)]
    sink = JsonlSink(path, max_bytes=1, backups=3)  # every line is its own file
    for event in events:
        sink.send(event)
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
        "audit.jsonl.3",
    ]
    kept = [json.loads(read_lines(f)[0])["id"] for f in all_files(path)]
    assert kept == [e.id for e in events[-4:]]


def test_zero_backups_deletes_on_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path, max_bytes=1, backups=0)
    for i in range(3):
        sink.send(make_event(seconds=i))
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]
    assert len(read_lines(path)) == 1


def test_a_line_longer_than_max_bytes_gets_a_file_to_itself(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    small, big = make_event(), make_event(seconds=1, metadata={"blob": "x" * 5000})
    sink = JsonlSink(path, max_bytes=2000)
    sink.send_many([small, big, small])
    sink.close()
    assert [len(read_lines(f)) for f in all_files(path)] == [1, 1, 1]


def test_rotation_by_time(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path, rotate_every=dt.timedelta(hours=1), clock=lambda: now[0])
    sink.send(make_event(seconds=0))
    now[0] += 1800
    sink.send(make_event(seconds=1))
    assert not (tmp_path / "audit.jsonl.1").exists()
    now[0] += 1800
    sink.send(make_event(seconds=2))  # an hour since the file was started: rotate first
    now[0] += 7200
    sink.send(make_event(seconds=3))
    sink.close()
    assert [len(read_lines(f)) for f in all_files(path)] == [2, 1, 1]


def test_time_rotation_period_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    (tmp_path / "audit.jsonl.1").write_text("{}\n")
    os.utime(tmp_path / "audit.jsonl.1", (time.time() - 7200, time.time() - 7200))
    path.write_text("{}\n")
    sink = JsonlSink(path, rotate_every=dt.timedelta(hours=1))  # last rotation 2 h ago: due now
    sink.send(make_event())
    sink.close()
    assert len(read_lines(tmp_path / "audit.jsonl.2")) == 1
    assert len(read_lines(path)) == 1


def test_manual_rotate(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    sink.rotate()  # nothing written yet: nothing to rotate
    assert not (tmp_path / "audit.jsonl.1").exists()
    sink.send(make_event())
    sink.rotate()
    sink.send(make_event(seconds=1))
    sink.close()
    assert [len(read_lines(f)) for f in all_files(path)] == [1, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_bytes": 1.5}, "max_bytes"),
        ({"rotate_every": dt.timedelta(0)}, "rotate_every"),
        ({"rotate_every": 60}, "rotate_every"),
        ({"backups": -1}, "backups"),
    ],
)
def test_invalid_settings(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JsonlSink(tmp_path / "x.jsonl", **kwargs)  # type: ignore[arg-type]


def test_closed_sink_asks_for_a_retry(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "audit.jsonl", fsync=True)
    sink.send(make_event())
    sink.close()
    sink.close()
    [outcome] = sink.send_many([make_event()])
    assert isinstance(outcome, RetryLater)
    with pytest.raises(RetryLater):
        sink.send(make_event())


def test_a_failed_write_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    sink.send(make_event())
    real_write = os.write

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data)[:10])  # the disk takes a few bytes, then fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    outcomes = sink.send_many([make_event(seconds=1), make_event(seconds=2)])
    assert all(isinstance(o, RetryLater) for o in outcomes)
    monkeypatch.undo()
    assert len(read_lines(path)) == 1  # cut back to the last whole line
    sink.send(make_event(seconds=3))  # and the file goes on from there
    sink.close()
    assert len(read_lines(path)) == 2


def test_unencodable_text_is_escaped_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    event = make_event(actor=Actor("user_x", name="bad \udc80 surrogate"))
    sink.send(event)
    sink.close()
    [line] = read_lines(path)  # valid UTF-8
    assert AuditEvent.from_json(line).actor.name == "bad \udc80 surrogate"


class Tailer(threading.Thread):
    """Follows `path` the way Filebeat or Fluent Bit do: by inode, reading each file to its end before moving to
    the next one (found among the rotated names by inode), keeping an unfinished line until its newline comes."""

    def __init__(self, path: Path, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = stop
        self.lines: list[str] = []
        self.partial_at_switch = 0
        self.seen_inodes: set[int] = set()

    def _next_file(self) -> Path | None:
        for candidate in all_files(self.path):
            try:
                if candidate.stat().st_ino not in self.seen_inodes:
                    return candidate
            except FileNotFoundError:
                continue
        return None

    def run(self) -> None:
        while not self.path.exists():
            time.sleep(0.001)
        current = self.path.open("rb")
        self.seen_inodes.add(os.fstat(current.fileno()).st_ino)
        pending = b""
        try:
            while True:
                chunk = current.read(65536)
                if chunk:
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    self.lines.extend(line.decode("utf-8") for line in complete)
                    continue
                nxt = self._next_file()
                if nxt is not None:
                    # The file we hold was rotated away: it is complete, read it to the end, then move on.
                    rest = current.read()
                    pending += rest
                    *complete, pending = pending.split(b"\n")
                    self.lines.extend(line.decode("utf-8") for line in complete)
                    if pending:
                        self.partial_at_switch += 1
                        pending = b""
                    current.close()
                    current = nxt.open("rb")
                    self.seen_inodes.add(os.fstat(current.fileno()).st_ino)
                    continue
                if self.stop.is_set():
                    rest = current.read()
                    if not rest:
                        if pending:
                            self.partial_at_switch += 1
                        return
                    pending += rest
                    *complete, pending = pending.split(b"\n")
                    self.lines.extend(line.decode("utf-8") for line in complete)
                    continue
                time.sleep(0.0005)
        finally:
            current.close()


@pytest.mark.parametrize("rotation", ["size", "time"])
def test_a_tailer_following_by_inode_reads_every_line_once(tmp_path: Path, rotation: str) -> None:
    path = tmp_path / "audit.jsonl"
    ticks = [0.0]
    lock = threading.Lock()

    def clock() -> float:
        with lock:
            ticks[0] += 1
            return ticks[0]

    if rotation == "size":
        sink = JsonlSink(path, max_bytes=20_000, backups=10_000)
    else:
        sink = JsonlSink(path, rotate_every=dt.timedelta(seconds=40), backups=10_000, clock=clock)
    stop = threading.Event()
    tailer = Tailer(path, stop)
    tailer.start()
    sent: list[str] = []

    def writer(k: int) -> None:
        for j in range(0, 600, 3):
            batch = [make_event(seconds=k * 1000 + j + i, metadata={"w": k, "pad": "p" * (j % 300)}) for i in range(3)]
            assert sink.send_many(batch) == [None, None, None]
            with lock:
                sent.extend(e.id for e in batch)

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    sink.close()
    stop.set()
    tailer.join(timeout=30)
    assert not tailer.is_alive()
    assert len(all_files(path)) > 10  # it did rotate, many times, under the reader
    assert tailer.partial_at_switch == 0
    received = [json.loads(line)["id"] for line in tailer.lines]
    counts = Counter(received)
    assert len(received) == len(sent) == 1800
    assert set(counts) == set(sent) and max(counts.values()) == 1
