"""``centure-audit events``, ``export`` and ``retention`` against a real store (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from centure_audit_middleware.cli import main
from centure_audit_middleware.commands.events import Progress, parse_time
from centure_audit_middleware.events import Actor, AuditEvent, Target
from centure_audit_middleware.store import STORE_ENV, EventQuery, open_store

from .store_fixtures import ALICE, BOB, ORG_A, ORG_B, T0, backend, make_event, pg_schema, store_url

__all__ = ["backend", "pg_schema", "store_url"]  # fixtures, imported for pytest


def fill(url: str, events: list[AuditEvent]) -> None:
    with open_store(url) as store:
        store.append(events)


@pytest.fixture
def events(store_url: str) -> list[AuditEvent]:
    long_name = Actor("user_long", name="Maximilian Alexander von Habsburg-Lothringen the Third")
    made = [
        make_event(seconds=i, actor=ALICE if i % 2 else BOB, action="mcp_proxy.update" if i % 3 else "project.create")
        for i in range(12)
    ]
    made.append(make_event(seconds=20, actor=long_name, targets=[Target("project", "p1", name="Production")]))
    made.append(make_event(ORG_B, seconds=30))
    fill(store_url, made)
    return made


def newest_ids(events: list[AuditEvent], org: str = ORG_A) -> list[str]:
    mine = [e for e in events if e.organization_id == org]
    return [e.id for e in sorted(mine, key=lambda e: (e.occurred_at, e.id), reverse=True)]


def test_events_table(store_url: str, events: list[AuditEvent], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--org", ORG_A, "--store", store_url, "--limit", "5"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["OCCURRED_AT", "ACTION", "ACTOR", "TARGETS", "LOCATION", "ID"]
    assert len(lines) == 6
    assert "Maximilian Alexander von Ha…" in lines[1]  # cut to the column's width
    assert "project:Production" in lines[1]
    assert lines[1].index("project.create") == lines[2].index("mcp_proxy.update")  # aligned columns
    assert "2025-03-01 12:00:20Z" in lines[1]
    assert err.startswith("more: --cursor ")
    cursor = err.split()[-1]
    assert main(["events", "--org", ORG_A, "--store", store_url, "--limit", "5", "--cursor", cursor]) == 0
    out, _ = capsys.readouterr()
    assert len(out.splitlines()) == 6
    assert newest_ids(events)[5] in out


def test_events_filters_and_json(store_url: str, events: list[AuditEvent], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["events", "--org", ORG_A, "--store", store_url, "--format", "json", "--actor", "Bob Builder"]
    assert (
        main([*argv, "--action", "mcp_proxy.*", "--since", "2025-03-01T12:00:03Z", "--until", "2025-03-01T12:00:09"])
        == 0
    )
    out, _ = capsys.readouterr()
    got = [AuditEvent.from_json(line) for line in out.splitlines()]
    expected = [e for e in events if e.actor is BOB and e.action == "mcp_proxy.update"]
    expected = [e for e in expected if T0 + dt.timedelta(seconds=3) <= e.occurred_at < T0 + dt.timedelta(seconds=9)]
    assert [e.id for e in got] == [e.id for e in sorted(expected, key=lambda e: e.occurred_at, reverse=True)]
    assert main(["events", "--org", ORG_A, "--store", store_url, "--format", "json", "--text", "habsburg"]) == 0
    out, _ = capsys.readouterr()
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_events_all_streams_every_match(
    store_url: str, events: list[AuditEvent], capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    assert main(["events", "--org", ORG_A, "--store", store_url, "--format", fmt, "--all", "--limit", "2"]) == 0
    out, err = capsys.readouterr()
    if fmt == "json":
        got = [json.loads(line)["id"] for line in out.splitlines()]
    else:
        got = [row["id"] for row in csv.DictReader(io.StringIO(out, newline=""))]
    assert got == newest_ids(events)
    assert "more:" not in err and err == ""  # no progress: stderr is not a terminal


def test_events_csv_page(store_url: str, events: list[AuditEvent], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--org", ORG_A, "--store", store_url, "--format", "csv", "--limit", "3"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [r["id"] for r in rows] == newest_ids(events)[:3]
    assert "more: --cursor" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "0"], "limit must be"),
        (["--limit", "5000"], "limit must be"),
        (["--action", "*.create"], "only allowed at the end"),
        (["--since", "2025-03-02", "--until", "2025-03-01"], "is after until"),
        (["--cursor", "not-a-cursor"], "invalid cursor"),
        (["--all"], "--all needs --format json or csv"),
    ],
)
def test_events_bad_input(
    store_url: str, events: list[AuditEvent], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["events", "--org", ORG_A, "--store", store_url, *args]) == 2
    _, err = capsys.readouterr()
    assert message in err


def test_events_without_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--org", ORG_A, "--store", str(tmp_path / "nope.db")]) == 1
    assert "no event store" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()


def test_store_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "env.db")
    fill(url, [make_event()])
    monkeypatch.setenv(STORE_ENV, url)
    assert main(["events", "--org", ORG_A, "--format", "json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    monkeypatch.setenv(STORE_ENV, "off")  # the Auditor's "no local store": tools fall back to ./audit.db
    monkeypatch.chdir(tmp_path)
    assert main(["events", "--org", ORG_A]) == 1
    assert "audit.db" in capsys.readouterr().err


def test_export_csv_to_a_file(
    store_url: str, events: list[AuditEvent], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "export.csv"
    target.parent.mkdir()
    assert main(["export", "--org", ORG_A, "--store", store_url, "--format", "csv", "-o", str(target)]) == 0
    assert "exported 13 events" in capsys.readouterr().err
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == newest_ids(events)
    assert not list(target.parent.glob("*.partial"))


def test_export_jsonl_to_stdout_with_filters(
    store_url: str, events: list[AuditEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["export", "--org", ORG_A, "--store", store_url, "--format", "jsonl", "--action", "project.create"]) == 0
    )
    out, _ = capsys.readouterr()
    got = [AuditEvent.from_json(line) for line in out.splitlines()]
    assert got and all(e.action == "project.create" and e.organization_id == ORG_A for e in got)
    assert main(["export", "--org", ORG_B, "--store", store_url, "--format", "jsonl", "--via", "local"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == newest_ids(events, ORG_B)


def test_export_errors_leave_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "export.csv"
    assert (
        main(["export", "--org", ORG_A, "--store", str(tmp_path / "missing.db"), "--format", "csv", "-o", str(target)])
        == 1
    )
    assert "no event store" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    fill(str(tmp_path / "a.db"), [make_event()])
    bad_range = ["--since", "2025-04-01", "--until", "2025-03-01"]
    argv = ["export", "--org", ORG_A, "--store", str(tmp_path / "a.db"), "--format", "csv", *bad_range]
    assert main([*argv, "-o", str(target)]) == 2
    assert "is after until" in capsys.readouterr().err
    assert not target.exists()


def test_retention_commands(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    now = dt.datetime.now(dt.UTC)
    fill(
        store_url,
        [
            make_event(ORG_A, when=now - dt.timedelta(days=40)),
            make_event(ORG_A, when=now - dt.timedelta(days=1)),
            make_event(ORG_B, when=now - dt.timedelta(days=40)),
        ],
    )
    assert main(["retention", "set", ORG_B, "365", "--store", store_url]) == 0
    assert capsys.readouterr().out == f"{ORG_B}\t365 days\n"
    assert main(["retention", "set", ORG_B, "90", "--store", store_url]) == 2
    assert "retention must be 30 or 365 days" in capsys.readouterr().err

    assert main(["retention", "apply", "--dry-run", "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert f"{ORG_A}\t30 days\twould delete 1" in out and f"{ORG_B}\t365 days\twould delete 0" in out
    with open_store(store_url) as store:
        assert store.count(EventQuery(ORG_A)) == 2

    assert main(["retention", "apply", "--store", store_url]) == 0
    assert f"{ORG_A}\t30 days\tdeleted 1" in capsys.readouterr().out
    with open_store(store_url) as store:
        assert store.count(EventQuery(ORG_A)) == 1 and store.count(EventQuery(ORG_B)) == 1

    assert main(["retention", "show", "--store", store_url]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in shown] == [[ORG_A, "30 days"], [ORG_B, "365 days"]]


def test_parse_time() -> None:
    assert parse_time("2025-03-01") == dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    assert parse_time("2025-03-01T12:00:00Z") == T0
    assert parse_time("2025-03-01T13:00:00+01:00") == T0
    before = dt.datetime.now(dt.UTC)
    week_ago = parse_time("7d")
    assert before - dt.timedelta(days=7) <= week_ago <= dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    assert parse_time("90m") <= dt.datetime.now(dt.UTC) - dt.timedelta(minutes=90)
    assert abs(dt.datetime.now(dt.UTC) - parse_time("now")) < dt.timedelta(minutes=1)
    with pytest.raises(Exception, match="invalid time"):
        parse_time("yesterday-ish")


def test_progress_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    progress = Progress(stream=tty, interval=0)
    assert progress.enabled
    progress(1000)
    progress(2000)
    progress.done(2500)
    assert tty.getvalue() == "\r1,000 events\r2,000 events\r2,500 events\n"
    pipe = io.StringIO()
    quiet = Progress(stream=pipe, interval=0)
    assert not quiet.enabled
    quiet(1000)
    quiet.done(1000)
    assert pipe.getvalue() == ""
