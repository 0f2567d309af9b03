"""Acceptance for issue 12, items 1-4: examples/flaskr, a blog in the shape of Flask's tutorial app (register, log in,
create, update, delete, `login_required`), has its own test suite written the usual way (an app factory,
`app.test_client()`, no flush, no `with` block), which asserts the exact events through the `audit_log` fixture:
none for a GET that only shows a form, none for a `login_required` redirect or a form sent back with an error.

That suite runs here, as its authors would run it (`pytest` in its own folder, with its own configuration), in a
subprocess of this interpreter, so that CI runs it. This project's `testpaths` is `tests`, so `pytest` at the root
never collects it a second time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flaskr"


def _files(root: Path) -> set[Path]:
    return {path.relative_to(root) for path in root.rglob("*") if "__pycache__" not in path.parts}


def test_the_flaskr_example_suite_passes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKOS_", "CENTURE_AUDIT_", "PYTEST_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    before = _files(EXAMPLE)
    done = subprocess.run(
        # No cache folder and no benchmark storage: this run must leave the example's folder as it found it.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", f"--junitxml={report}"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] == 23 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    # In particular no audit outbox or store beside the app (the fixture keeps events in memory), and no instance
    # folder: every test's database is a temporary file.
    assert _files(EXAMPLE) == before
