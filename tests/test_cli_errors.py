"""Bad input on the command line gets a message, not a traceback: a file that is not a store or an outbox, a device,
a missing optional extra, an organization the store has never seen. Every option documents itself.

The CLI runs as a subprocess, as an operator runs it. A missing extra is simulated by a `sitecustomize` that makes
the extra's modules unimportable in that process only, the way an install without the extra behaves.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from centure_audit_middleware.cli import build_parser
from centure_audit_middleware.store import open_store

from .reliability_support import REPO_ROOT
from .store_fixtures import ORG_A, ORG_B, make_event

POSTGRES_HINT = "pip install 'centure-audit-middleware[postgres]'"
STRIPE_HINT = "pip install 'centure-audit-middleware[stripe]'"

# Loaded by Python at start-up from PYTHONPATH: a meta-path finder that refuses the modules in $BLOCK_IMPORTS as if
# they were not installed (ModuleNotFoundError with the module's name, as the import system raises it).
BLOCKER = """
import os
import sys

_BLOCKED = frozenset(filter(None, os.environ.get("BLOCK_IMPORTS", "").split(",")))


class _NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled)
"""


@pytest.fixture
def without(tmp_path: Path) -> dict[str, str]:
    """Environment entries that make the modules named in BLOCK_IMPORTS unimportable in a subprocess."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}


def run(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CENTURE_AUDIT_")}
    environ["PYTHONPATH"] = str(REPO_ROOT)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=cwd or REPO_ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run("-m", "centure_audit_middleware.cli", *args, env=env)


def assert_refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode != 0, result
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# -- the event store ----------------------------------------------------------------------------------------------
def test_store_that_is_not_a_database(tmp_path: Path) -> None:
    notes = tmp_path / "README.md"
    notes.write_text("# Not a database\n")
    result = cli("events", "--org", ORG_A, "--store", str(notes))
    assert_refused(result, f"{notes} is not an event store")
    assert notes.read_text() == "# Not a database\n"
    assert sorted(os.listdir(tmp_path)) == ["README.md"]  # no journal or WAL beside it


@pytest.mark.parametrize("command", [["events", "--org", ORG_A], ["export", "--org", ORG_A, "--format", "csv"]])
def test_store_that_is_a_device(command: list[str], tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # a device-like file whose neighbours the test can watch
    before = sorted(os.listdir("/dev"))
    assert_refused(cli(*command, "--store", "/dev/null"), "/dev/null is not an event store: not a regular file")
    assert_refused(cli(*command, "--store", str(fifo)), "not a regular file")
    assert sorted(os.listdir("/dev")) == before
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["events", "--org", ORG_A], id="events"),
        pytest.param(["export", "--org", ORG_A, "--format", "jsonl"], id="export"),
        pytest.param(["retention", "show"], id="retention"),
    ],
)
def test_postgres_store_without_the_extra(command: list[str], without: dict[str, str]) -> None:
    env = {**without, "BLOCK_IMPORTS": "psycopg,psycopg_pool"}
    result = cli(*command, "--store", "postgresql://audit@127.0.0.1:1/audit", env=env)
    assert_refused(result, POSTGRES_HINT)


def test_the_blocker_blocks(without: dict[str, str]) -> None:
    # Otherwise the test above would pass on a machine with psycopg for the wrong reason.
    result = run("-c", "import psycopg", env={**without, "BLOCK_IMPORTS": "psycopg"})
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'psycopg'" in result.stderr


# -- organizations the store has never seen ------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with open_store(path) as opened:
        opened.append([make_event(ORG_A), make_event(ORG_B, seconds=1)])
    return path


@pytest.mark.parametrize(
    "output", [pytest.param([], id="table"), pytest.param(["--format", "json", "--all"], id="json-all")]
)
def test_unknown_organization_gets_a_hint(store: Path, output: list[str]) -> None:
    result = cli("events", "--org", "org_never_seen", "--store", str(store), *output)
    assert_refused(result, f"no events for organization org_never_seen; organizations in this store: {ORG_A}, {ORG_B}")
    assert result.stdout == ""


def test_known_organization_without_matches_is_not_an_error(store: Path) -> None:
    result = cli("events", "--org", ORG_A, "--store", str(store), "--action", "nothing.matches")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "no events"


# -- the outbox ---------------------------------------------------------------------------------------------------
def test_outbox_that_is_a_device_creates_nothing_beside_it() -> None:
    before = sorted(os.listdir("/dev"))
    try:
        assert_refused(cli("outbox", "--outbox", "/dev/null", "status"), "/dev/null is not an outbox")
        assert sorted(os.listdir("/dev")) == before
    finally:
        # Were the guard broken, SQLite would have left /dev/null-journal: never leave it behind for other tests.
        for name in set(os.listdir("/dev")) - set(before):
            if name.startswith("null-"):
                os.unlink(os.path.join("/dev", name))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: os.mkfifo(p), "not a regular file", id="fifo"),
        pytest.param(lambda p: p.mkdir(), "not a regular file", id="directory"),
        pytest.param(lambda p: p.write_text("hello"), "not a SQLite database", id="text-file"),
        pytest.param(lambda p: p.touch(), "an empty file", id="empty-file"),
    ],
)
def test_outbox_that_is_not_an_outbox(tmp_path: Path, make: Callable[[Path], object], message: str) -> None:
    target = tmp_path / "outbox.db"
    make(target)
    content = target.read_bytes() if target.is_file() else None
    for action in (["status"], ["dead"], ["replay"], ["purge", "--yes"]):
        assert_refused(cli("outbox", "--outbox", str(target), *action), message)
    assert sorted(os.listdir(tmp_path)) == ["outbox.db"]  # nothing created beside it
    if content is not None:
        assert target.read_bytes() == content  # no schema written into it


# -- optional extras imported by apps ------------------------------------------------------------------------------
def test_stripe_entitlements_without_the_extra(without: dict[str, str]) -> None:
    code = "from centure_audit_middleware.admin import StripeEntitlements\nprint('imported')\n"
    result = run("-c", code, env={**without, "BLOCK_IMPORTS": "stripe"})
    assert result.returncode != 0
    assert f"ModuleNotFoundError: StripeEntitlements needs the Stripe SDK: {STRIPE_HINT}" in result.stderr
    # The admin page without Stripe still works: only the Stripe class needs the extra.
    ok = run(
        "-c",
        "from centure_audit_middleware.admin import StaticEntitlements",
        env={**without, "BLOCK_IMPORTS": "stripe"},
    )
    assert ok.returncode == 0, ok.stderr


# -- help ---------------------------------------------------------------------------------------------------------
def _undocumented(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if not choice.help:
                    yield f"{path} {choice.dest}"
            for name, sub in action.choices.items():
                yield from _undocumented(sub, f"{path} {name}")
        elif not action.help or action.help == argparse.SUPPRESS:
            yield f"{path} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    assert list(_undocumented(parser, "centure-audit")) == []
    commands = {name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}
    assert {"events", "export", "outbox", "retention"} <= commands  # the walk did reach the subcommands
