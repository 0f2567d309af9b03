"""`centure-audit outbox` against a real outbox with pending and dead deliveries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from centure_audit_middleware import Auditor, Target
from centure_audit_middleware.cli import main
from centure_audit_middleware.sinks import MemorySink, RejectEvent, Sink

from .conftest import ALICE, ORG


class RefusesSecrets(Sink):
    name = "picky"

    def send(self, event: object) -> None:
        raise RejectEvent("HTTP 422: targets[0].id is not allowed")


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.db"
    auditor = Auditor(sinks=[MemorySink(), RefusesSecrets()], outbox=path, geoip=False)
    for i in range(3):
        auditor.record("doc.read", actor=ALICE, organization=ORG, targets=[Target("doc", id=f"d{i}")])
    assert auditor.flush(10)
    auditor.close()
    return path


def test_status_and_dead_letters(outbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "--outbox", str(outbox), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sinks"]["picky"] == {
        "pending": 0,
        "dead": 3,
        "oldest_pending_age": None,
    }
    assert main(["outbox", "--outbox", str(outbox), "dead", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["reason"] for line in lines] == ["HTTP 422: targets[0].id is not allowed"] * 3
    assert {line["event"]["targets"][0]["id"] for line in lines} == {"d0", "d1", "d2"}


def test_replay_then_deliver(outbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = json.loads(
        (main(["outbox", "--outbox", str(outbox), "dead", "--json"]), capsys.readouterr().out)[1].splitlines()[0]
    )
    assert main(["outbox", "--outbox", str(outbox), "replay", "--id", first["event_id"]]) == 0
    assert "1 dead letter(s) queued again" in capsys.readouterr().out
    memory = MemorySink(name="picky")  # the sink got fixed: same name, so it owns those deliveries
    auditor = Auditor(sinks=[memory], outbox=outbox, geoip=False)
    assert auditor.flush(10)
    auditor.close()
    assert [e.id for e in memory.events] == [first["event_id"]]


def test_purge_needs_yes(outbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "--outbox", str(outbox), "purge"]) == 1
    assert "would delete 3" in capsys.readouterr().out
    assert main(["outbox", "--outbox", str(outbox), "purge", "--yes"]) == 0
    assert main(["outbox", "--outbox", str(outbox), "status", "--json"]) == 0
    assert "picky" not in json.loads(capsys.readouterr().out.splitlines()[-1])["sinks"]


def test_missing_outbox_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["outbox", "--outbox", str(tmp_path / "nope.db"), "status"])
    assert exit_info.value.code == 2
    assert "no outbox at" in capsys.readouterr().err
