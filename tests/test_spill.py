"""A burst faster than the committer spills to disk instead of memory (issue 11, part 6; RELIABILITY row 10).

Past the spill threshold, the thread that hands an event off builds it and appends it to its process's spill file;
the committer moves spill files into the outbox. A SIGKILLed process's spill is taken over by the next process.
"""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from centure_audit_middleware import AuditEvent, Auditor, Target
from centure_audit_middleware.sinks import MemorySink
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import ALICE, ORG
from .reliability_support import ProcessGroup, app_env, delivered_targets, wait_until


class RemoteMemorySink(MemorySink):
    """Delivered from the outbox by a sender, as WorkOS is: what the spill must reach."""

    inline = False


def slow_committer(event: AuditEvent) -> None:
    time.sleep(0.0005)  # a validator that takes its time: the committer falls behind a tight record() loop


@pytest.mark.parametrize("sink_kind", ["remote", "inline"])
def test_a_burst_past_the_threshold_spills_and_every_event_arrives_once(tmp_path: Path, sink_kind: str) -> None:
    sink = RemoteMemorySink() if sink_kind == "remote" else MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "outbox.db", geoip=False, validators=[slow_committer])
    auditor.dispatcher._spill_at = 50
    try:
        for i in range(2000):
            auditor.record("doc.read", actor=ALICE, organization=ORG, targets=[Target("doc", id=f"d{i}")])
        stats = auditor.stats()
        assert stats["spilled"] > 0, stats
        assert stats["recorded"] == 2000
        assert auditor.flush(30), auditor.stats()
        ids = [e.targets[0].id for e in sink.events]
        assert sorted(ids) == sorted(f"d{i}" for i in range(2000))
        assert not glob.glob(f"{tmp_path}/outbox.db.spill.*")  # moved into the outbox, then removed
        assert auditor.stats()["dropped"] == {}
    finally:
        auditor.close()


def test_in_relay_mode_spilled_captures_are_committed_and_flush_returns(tmp_path: Path) -> None:
    """An app in relay mode spills captured events; once they are in the outbox, flush() returns (it used to wait
    for them for ever: they were never counted as moved), and a relay delivers each once."""
    from centure_audit_middleware.delivery.relay import Relay

    sink = RemoteMemorySink()
    outbox = tmp_path / "outbox.db"
    app = Auditor(sinks=[sink], outbox=outbox, geoip=False, delivery="relay")
    app.dispatcher._spill_at = 0  # every hand-off spills
    try:
        for i in range(500):
            app.record("doc.read", actor=ALICE, organization=ORG, targets=[Target("doc", id=f"c{i}")])
        assert app.stats()["spilled"] == 500
        assert app.flush(20), app.stats()
    finally:
        app.close()
    relay = Relay.for_auditor(app, outbox)
    relay.start()
    try:
        assert wait_until(lambda: len(sink.events) == 500, 20)
    finally:
        relay.close()
    assert sorted(e.targets[0].id for e in sink.events) == sorted(f"c{i}" for i in range(500))


SPILLING_JOB = """
import sys, time
from centure_audit_middleware import Auditor, Target
from tests.apps.reliability_app import ACTION, ACTOR, ORG, make_auditor

auditor = make_auditor()
auditor.dispatcher.builder.validators.append(lambda event: time.sleep(0.0005))
auditor.dispatcher._spill_at = 50
for i in range(int(sys.argv[1])):
    auditor.record(ACTION, actor=ACTOR, organization=ORG, targets=[Target("item", id=f"s{i}")])
print("spilled", auditor.stats()["spilled"], flush=True)
if sys.argv[1] == "0":
    print("flushed", auditor.flush(30), flush=True)  # a restart: takes over what a dead process left
time.sleep(3600)
"""


@pytest.mark.slow
def test_a_killed_process_spill_is_taken_over_by_the_next(
    tmp_path: Path, procs: ProcessGroup, workos_emulator: WorkOSEmulator
) -> None:
    outbox = tmp_path / "outbox.db"
    workos_emulator.set_down(True)  # nothing leaves: the burst piles up in the outbox and the spill
    env: dict[str, Any] = app_env(workos_emulator, outbox)
    job = procs.spawn("job", [sys.executable, "-c", SPILLING_JOB, "3000"], env)
    job.wait_output(lambda out: "spilled " in out, 60, "the burst")
    [spilled] = job.lines("spilled")
    assert int(spilled) > 0
    job.kill_group()
    assert glob.glob(f"{outbox}.spill.*"), "the killed job left no spill file: the scenario did not happen"
    recorded = {f"s{i}" for i in range(3000)}  # all of them: "spilled" is printed once the loop is done
    workos_emulator.set_down(False)
    again = procs.spawn("again", [sys.executable, "-c", SPILLING_JOB, "0"], env)
    assert wait_until(lambda: not glob.glob(f"{outbox}.spill.*"), 30), again.output()
    assert wait_until(lambda: len(workos_emulator.events) >= int(spilled), 30)
    again.wait_output(lambda out: "flushed " in out, 30, "the flush")
    assert again.lines("flushed") == ["True"]
    counts = delivered_targets(workos_emulator)
    assert set(counts.values()) == {1}, "dup > 0"
    # Lost only what was still in the dead job's memory: its hand-off queue (≤ 50) and one commit group (≤ 1,000).
    lost = recorded - set(counts)
    assert len(lost) <= 50 + 1000, len(lost)
    assert set(counts) <= recorded


def test_a_spill_file_being_moved_is_nobody_elses_orphan(tmp_path: Path) -> None:
    """A process moving its spill file into the outbox keeps the file's lock until it is removed: another process on
    the same outbox never takes it for a dead process's file (both would deliver it, and the owner's flush would wait
    for ever). A second `Spill` on the same prefix stands for that other process: flock locks belong to each open."""
    from centure_audit_middleware.delivery.spill import Spill

    prefix = tmp_path / "outbox.db"
    mover, other = Spill(prefix), Spill(prefix)
    assert mover.write("e1", 1.0, "{}")
    path = mover.take()
    assert path is not None
    assert other.orphans() == []
    assert mover.orphans() == [path]  # a move that failed is tried again by its owner, and only by it
    mover.remove(path)
    assert other.orphans() == [] and not path.exists()
