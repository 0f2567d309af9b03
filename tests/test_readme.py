"""The README runs (issue 12, item 7): every Python snippet is executed, every command it names exists.

Snippets are collected by `readme_snippets`, so a section added to the README is tested without touching this file.
Each one runs in a fresh module, in its own temporary working directory; its ``snippet-setup`` and ``snippet-check``
comments (in the README, beside it) see one helper, ``fixture(name)``: any pytest fixture (``audit_log``,
``workos_emulator``, ``monkeypatch``, ``tmp_path``, ``request``...). The snippet itself doesn't see it, so a name
the snippet forgot to import or define fails here as it would for a reader.
"""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from centure_audit_middleware.cli import build_parser, main

from .pg_outbox_fixtures import pg_outbox_url
from .readme_snippets import README, SPAN, ShellCommand, Snippet, orphan_comments, python_snippets, shell_commands

__all__ = ["pg_outbox_url"]  # the fixture, for snippets that need a PostgreSQL database

ROOT = README.parent
SNIPPETS = python_snippets()
COMMANDS = shell_commands()


@pytest.mark.parametrize(
    "snippet",
    [pytest.param(s, id=s.id, marks=[pytest.mark.postgres] if s.needs_postgres else []) for s in SNIPPETS],
)
def test_readme_snippet_runs(
    snippet: Snippet, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    __tracebackhide__ = True  # a failure's traceback starts in the README
    monkeypatch.chdir(tmp_path)  # files a snippet writes (audit.db, ...) land here
    module = types.ModuleType(f"readme_L{snippet.code.line}")
    module.__file__ = str(README)  # Flask(__name__) finds its root path through it
    # Registered while it runs: pydantic and dataclasses look classes' modules up in sys.modules.
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for block, helpers in ((snippet.setup, True), (snippet.code, False), (snippet.check, True)):
        if block is None:
            continue
        if helpers:
            namespace["fixture"] = request.getfixturevalue
        else:
            namespace.pop("fixture", None)
        exec(block.compile(), namespace)


def test_every_snippet_comment_belongs_to_a_python_fence() -> None:
    assert orphan_comments() == [], "a snippet-setup/check comment that no ```python fence claims is never run"


#: What a snippet that builds an app looks like: such a snippet must be exercised (a request), not only imported.
_BUILDS_AN_APP = re.compile(r"\b(FastAPI|Flask|Starlette)\(|audit_logs_(router|blueprint)\(")


APP_SNIPPETS = [s for s in SNIPPETS if _BUILDS_AN_APP.search(s.code.source)]


@pytest.mark.parametrize("snippet", APP_SNIPPETS, ids=[s.id for s in APP_SNIPPETS])
def test_snippets_that_build_apps_are_exercised(snippet: Snippet) -> None:
    assert snippet.check is not None, f"README.md:{snippet.code.line}: an app with no snippet-check comment"
    assert re.search(r"TestClient|test_client|\.get\(|\.post\(", snippet.check.source), "the check sends no request"


# -- commands -------------------------------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _centure_audit_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@functools.cache
def _program_help(program: str) -> str:
    executable = Path(sys.executable).with_name(program)
    return subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout


def _flags(words: tuple[str, ...]) -> list[str]:
    return [word.split("=", 1)[0] for word in words if word.startswith("-")]


def _has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command_exists(command: ShellCommand, capsys: pytest.CaptureFixture[str]) -> None:
    program, *rest = command.argv
    words = tuple(rest)
    where = f"README.md:{command.line}: {' '.join(command.argv)}"
    if program == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
        assert set(words) <= set(targets), where
        return
    if program != "centure-audit":
        missing = [flag for flag in _flags(words) if not _has_flag(_program_help(program), flag)]
        assert missing == [], where
        return
    parser = build_parser()
    path: tuple[str, ...] = ()
    helps = [_centure_audit_help(path, capsys)]
    for word in words:
        choices = _subcommands(parser)
        if word not in choices:
            break
        parser, path = choices[word], (*path, word)
        helps.append(_centure_audit_help(path, capsys))
    leftover = words[len(path) :]
    if _subcommands(parser) and leftover and not leftover[0].startswith("-"):
        pytest.fail(f"{where}: `centure-audit {' '.join(path)}` has no subcommand {leftover[0]!r}")
    # A flag may belong to the command or to one above it (`centure-audit outbox --outbox FILE status`).
    missing = [flag for flag in _flags(words) if not any(_has_flag(text, flag) for text in helps)]
    assert missing == [], f"{where}: unknown options"


def _all_centure_audit_options() -> set[str]:
    options: set[str] = set()
    pending = [build_parser()]
    while pending:
        parser = pending.pop()
        options.update(opt for action in parser._actions for opt in action.option_strings)
        pending += _subcommands(parser).values()
    return options


def test_every_option_the_readme_names_exists() -> None:
    """Options quoted on their own (`--dry-run`, `--via workos`, `--preload`) belong to a command the README runs."""
    text = README.read_text(encoding="utf-8")
    known = _all_centure_audit_options()
    helps = _program_help("uvicorn") + _program_help("gunicorn")
    unknown = []
    for match in SPAN.finditer(text):
        flag = match[1].split(" ", 1)[0].split("=", 1)[0]
        if re.fullmatch(r"--?[a-z][\w-]*", flag) and flag not in known and not _has_flag(helps, flag):
            unknown.append(f"README.md:{text.count(chr(10), 0, match.start()) + 1}: {flag}")
    assert unknown == []
