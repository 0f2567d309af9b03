"""The README's code, as tests: every ```python fence, with the stubs and checks the README declares beside it.

A fence may have, right above it, a ``<!-- snippet-setup ... -->`` comment, and right below it a
``<!-- snippet-check ... -->`` comment (blank lines between are allowed). Their bodies are Python: the setup runs
first, then the fence, then the check, all in one fresh module namespace. The comments are the only place stubs live,
so what a reader sees and what the suite runs can't drift apart.

Why this and not pytest-examples: each block is compiled under the README's own path with its own line numbers, so a
failure's traceback shows the README's lines (pytest reads them through linecache), and there is no formatting
or linting opinion to satisfy, only the code's behaviour.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

__all__ = ["README", "SPAN", "Block", "ShellCommand", "Snippet", "orphan_comments", "python_snippets", "shell_commands"]

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_INFO = frozenset({"python", "py", "python3"})
SHELL_INFO = frozenset({"sh", "bash", "shell", "console", "ini", "yaml", "yml"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(?P<title>.+?)\s*#*$")
_COMMENT = re.compile(r"^\s*<!--\s*snippet-(?P<kind>setup|check)\b")


@dataclass(frozen=True, slots=True)
class Block:
    """Python source and the README line its first line is on (1-based)."""

    source: str
    line: int

    def compile(self) -> CodeType:
        # Every statement on its README line, so tracebacks quote the README. Code objects number their lines from
        # their co_firstlineno, so moving that moves them all; and pytest quotes a failing frame from co_firstlineno,
        # which is then the block's first line, not the README's top (as blank-line padding would give).
        return _moved(compile(self.source, str(README), "exec", dont_inherit=True), self.line - 1)


@dataclass(frozen=True, slots=True)
class Snippet:
    code: Block
    heading: str
    setup: Block | None = None
    check: Block | None = None

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-") or "top"
        return f"L{self.code.line}-{slug}" + ("-postgres" if self.needs_postgres else "")

    @property
    def needs_postgres(self) -> bool:
        """Whether its setup asks for a PostgreSQL database (the `pg_outbox_url` fixture)."""
        return self.setup is not None and "pg_outbox_url" in self.setup.source


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """A command line the README shows (an inline code span, or a line of a shell, ini or yaml block)."""

    argv: tuple[str, ...]
    line: int

    @property
    def id(self) -> str:
        return f"L{self.line}-{'-'.join(self.argv[:3])}"


def _moved(code: CodeType, offset: int) -> CodeType:
    consts = tuple(_moved(c, offset) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + offset, co_consts=consts)


def _lines() -> list[str]:
    return README.read_text(encoding="utf-8").splitlines()


def _fences(lines: list[str]) -> Iterator[tuple[str, int, int, int]]:
    """(info, indent, first content index, closing index) of every fenced block, 0-based indices."""
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        yield match["info"].strip().split(" ", 1)[0].lower(), indent, i + 1, end
        i = end + 1


def _comment_at(lines: list[str], index: int, kind: str) -> Block | None:
    """The ``<!-- snippet-<kind>`` comment that starts at `index`, if any."""
    match = _COMMENT.match(lines[index])
    if match is None or match["kind"] != kind:
        return None
    end = index
    while "-->" not in lines[end]:
        end += 1
    body = lines[index + 1 : end]
    indent = min((len(line) - len(line.lstrip()) for line in body if line.strip()), default=0)
    return Block("\n".join(line[indent:] for line in body) + "\n", index + 2)


def _setup_before(lines: list[str], fence_index: int) -> Block | None:
    i = fence_index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i < 0 or not lines[i].strip().endswith("-->"):
        return None
    while i >= 0 and "<!--" not in lines[i]:
        i -= 1
    return _comment_at(lines, i, "setup") if i >= 0 else None


def _check_after(lines: list[str], closing_index: int) -> Block | None:
    i = closing_index + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    return _comment_at(lines, i, "check") if i < len(lines) else None


def _headings(lines: list[str]) -> list[str]:
    """The heading each line is under (fenced lines can't start a heading)."""
    inside = {i for _, _, start, end in _fences(lines) for i in range(start - 1, end + 1)}
    current, out = "", []
    for i, line in enumerate(lines):
        match = _HEADING.match(line) if i not in inside else None
        if match:
            current = match["title"]
        out.append(current)
    return out


def python_snippets() -> list[Snippet]:
    lines = _lines()
    headings = _headings(lines)
    snippets = []
    for info, indent, start, end in _fences(lines):
        if info not in PYTHON_INFO:
            continue
        source = "\n".join(line[indent:] for line in lines[start:end]) + "\n"
        snippets.append(
            Snippet(
                Block(source, start + 1),
                headings[start],
                setup=_setup_before(lines, start - 1),
                check=_check_after(lines, end),
            )
        )
    return snippets


def orphan_comments() -> list[int]:
    """README lines of snippet-setup/check comments that no python fence claims (a typo would silently drop them)."""
    claimed = {b.line for s in python_snippets() for b in (s.setup, s.check) if b is not None}
    lines = _lines()
    fenced = {i for _, _, start, end in _fences(lines) for i in range(start, end)}  # e.g. the README's own example
    return [i + 2 for i, line in enumerate(lines) if _COMMENT.match(line) and i not in fenced and i + 2 not in claimed]


SPAN = re.compile(r"(?<!`)`(?!`)([^`]+?)`(?!`)")
PROGRAMS = ("centure-audit", "uvicorn", "gunicorn", "make")
# What may stand before a command on a line of a block: a shell prompt, a systemd ExecStart=, a container's command
# list; then the program, possibly by path.
_LINE_PREFIX = re.compile(
    r"^(?:\$\s*|ExecStart=|command:\s*\[\s*)?(?:\S*/)?(?=(?:centure-audit|uvicorn|gunicorn|make)\b)"
)


def _split_alternatives(text: str) -> list[tuple[str, ...]]:
    """``centure-audit outbox status | dead [--json]`` names two commands: the alternatives share the words before
    the first one's last word (``|`` without spaces, as in ``csv|jsonl``, is a value's alternatives)."""
    parts = [part.replace("[", " ").replace("]", " ") for part in text.split(" | ")]
    first = tuple(shlex.split(parts[0]))
    out = [first]
    for part in parts[1:]:
        words = tuple(shlex.split(part))
        if words:
            out.append(first[: max(len(first) - 1, 1)] + words if not words[0].startswith("-") else first + words)
    return out


def shell_commands() -> list[ShellCommand]:
    """Every command line of `PROGRAMS` the README shows, in inline code or in shell, ini and yaml blocks."""
    lines = _lines()
    commands: list[ShellCommand] = []
    fenced: set[int] = set()
    for info, _, start, end in _fences(lines):
        fenced.update(range(start - 1, end + 1))
        if info not in SHELL_INFO:
            continue
        for i in range(start, end):
            # `ExecStart=/srv/app/.venv/bin/centure-audit relay ...`, `command: [centure-audit, relay, ...]`
            text = _LINE_PREFIX.sub("", lines[i].strip(), count=1)
            text = re.sub(r"[\[\],]", " ", text) if lines[i].strip().startswith("command:") else text
            if text.split(" ", 1)[0] in PROGRAMS:
                commands += [ShellCommand(argv, i + 1) for argv in _split_alternatives(text.split("#", 1)[0])]
    # Inline spans, which may wrap across lines within a paragraph; the top of the README's indented block too.
    text_lines = [line if i not in fenced else "" for i, line in enumerate(lines)]
    joined = "\n".join(text_lines)
    for match in SPAN.finditer(joined):
        span = " ".join(match[1].split())
        if span.split(" ", 1)[0] in PROGRAMS:
            number = joined.count("\n", 0, match.start()) + 1
            commands += [ShellCommand(argv, number) for argv in _split_alternatives(span)]
    for i, line in enumerate(lines):
        if line.startswith("    make ") and i not in fenced:
            commands.append(ShellCommand(tuple(shlex.split(line.split("#", 1)[0])), i + 1))
    return commands
