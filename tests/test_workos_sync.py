"""`centure-audit export --via workos` and `retention sync` against the WorkOS emulator, through the real SDK."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from centure_audit_middleware import Auditor, Target
from centure_audit_middleware.catalog.schemas import workos_client
from centure_audit_middleware.cli import main
from centure_audit_middleware.sinks import StoreSink, WorkOSSink
from centure_audit_middleware.store import open_store
from centure_audit_middleware.store.workos_sync import ExportFailed, export_via_workos
from centure_audit_middleware.testing import WorkOSEmulator

from .conftest import ALICE, BOB, ORG


@pytest.fixture
def emulator() -> Iterator[WorkOSEmulator]:
    with WorkOSEmulator(organizations=[ORG], export_polls_until_ready=3) as emulator:
        yield emulator


def test_export_via_workos_cli_polls_and_downloads(
    tmp_path: Path, emulator: WorkOSEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    auditor = Auditor(
        sinks=[WorkOSSink(api_key=emulator.api_key, base_url=emulator.url)], outbox=tmp_path / "o.db", geoip=False
    )
    auditor.record("doc.update", actor=ALICE, organization=ORG, targets=[Target("doc", id="d1")])
    auditor.record("doc.delete", actor=BOB, organization=ORG, targets=[Target("doc", id="d2")])
    assert auditor.flush(10)
    auditor.close()
    out = tmp_path / "export.csv"
    args = ["export", "--via", "workos", "--org", ORG, "--format", "csv", "-o", str(out), "--poll-interval", "0.01"]
    code = main([*args, "--api-key", emulator.api_key, "--base-url", emulator.url])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(row["action"] for row in rows) == ["doc.delete", "doc.update"]
    gets = [r for r in emulator.requests if r.method == "GET" and r.path.startswith("/audit_logs/exports/")]
    assert len(gets) == 3  # polled until ready (the emulator's 3rd poll)
    assert not (tmp_path / "export.csv.partial").exists()


def test_export_filters_are_sent_and_bad_ranges_refused(emulator: WorkOSEmulator) -> None:
    now = dt.datetime.now(dt.UTC)
    with workos_client(emulator.api_key, emulator.url) as client:
        sink = io.BytesIO()
        export_via_workos(
            client,
            ORG,
            sink,
            range_start=now - dt.timedelta(days=1),
            range_end=now,
            actions=["doc.update"],
            actor_ids=["user_alice"],
            poll_interval=0.01,
        )
        with pytest.raises(ValueError, match="before range_end"):
            export_via_workos(client, ORG, sink, range_start=now, range_end=now)
        with pytest.raises(ValueError, match="timezone-aware"):
            export_via_workos(client, ORG, sink, range_start=now.replace(tzinfo=None), range_end=now)
        with pytest.raises(ExportFailed, match="not ready"):
            export_via_workos(
                client,
                ORG,
                sink,
                range_start=now - dt.timedelta(days=1),
                range_end=now,
                poll_interval=0.05,
                timeout=0.01,
            )
    [create] = [r for r in emulator.requests if r.method == "POST" and r.path == "/audit_logs/exports"][:1]
    assert b'"actions": ["doc.update"]' in create.body or b'"actions":["doc.update"]' in create.body


def test_export_without_key_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WORKOS_API_KEY", raising=False)
    assert main(["export", "--via", "workos", "--org", ORG, "--format", "csv"]) == 1
    assert "no API key (pass --api-key or set WORKOS_API_KEY)" in capsys.readouterr().err


def test_retention_sync(tmp_path: Path, emulator: WorkOSEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "audit.db"
    store = open_store(store_path)
    auditor = Auditor(sinks=[StoreSink(store)], outbox=tmp_path / "o.db", geoip=False)
    auditor.record("doc.update", actor=ALICE, organization=ORG)
    assert auditor.flush(10)
    auditor.close()
    store.set_retention_days(ORG, 365)
    store.close()
    code = main(
        ["retention", "sync", "--store", str(store_path), "--api-key", emulator.api_key, "--base-url", emulator.url]
    )
    assert code == 0, capsys.readouterr().err
    assert f"{ORG}\t365 days at WorkOS" in capsys.readouterr().out
    [put] = [r for r in emulator.requests if r.method == "PUT"]
    assert put.path == f"/organizations/{ORG}/audit_logs_retention"
    assert b"365" in put.body
