"""The package's metadata builds without deprecation banners (issue 12, item 9).

`pip install -e .` printed setuptools' "`project.license` as a TOML table is deprecated" banner: the licence must be
an SPDX expression. The metadata is built here with the backend pip uses, in a subprocess (the backend warns through
`warnings`, and pytest's `filterwarnings = error` must not change what it prints), from a copy of the two files it
reads, so that nothing is written into the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_licence_is_an_spdx_expression_and_builds_without_a_banner(tmp_path: Path) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "MIT"
    # An isolated build (pip's default) installs what build-system.requires says: it must understand the string form.
    assert pyproject["build-system"]["requires"] == ["setuptools>=77"]

    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "README.md", tmp_path)
    (tmp_path / "out").mkdir()
    build = subprocess.run(
        [
            sys.executable,
            "-W",
            "always",
            "-c",
            "from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel('out'))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    output = build.stdout + build.stderr
    assert "deprecated" not in output.lower(), output
    assert "license" not in output.lower(), output
    metadata = Parser().parsestr((tmp_path / "out" / build.stdout.strip().splitlines()[-1] / "METADATA").read_text())
    assert metadata["License-Expression"] == "MIT"
