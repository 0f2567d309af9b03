#!/usr/bin/env bash
# Run the route-template tests against the oldest FastAPI and Starlette the package supports, in .venv-oldest
# (the main .venv keeps the newest releases, which `make unit` tests).
#
# Usage: scripts/test-oldest-deps.sh            (idempotent; non-interactive; the venv is reused across runs)
#
# Two runs, because pyproject's two floors cannot be installed together: FastAPI 0.110 pins starlette<0.38, while
# the extras ask for starlette>=0.40.
#   1. fastapi==0.110.* with the Starlette it pins (0.37.x): the FastAPI floor; Starlette records no route there.
#   2. starlette==0.40.* with the newest FastAPI that accepts it: the Starlette floor.
# httpx is pinned to 0.27: 0.28 dropped the `app=` argument that old Starlette's TestClient passes. anyio can't be
# (workos needs >= 4.10), and with it old Starlette warns (a deprecated anyio alias; memory streams left open): the
# suite's filterwarnings=error would turn those into failures of Starlette's own, so the two are ignored here.
#
# Settings (environment): PYTHON (default python3), VENV_OLDEST (default .venv-oldest).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV_OLDEST:-.venv-oldest}"
TESTS=(tests/test_route_templates.py tests/test_starlette.py)
OLD_STARLETTE_WARNINGS=(
    -W 'ignore:The anyio.abc.BlockingPortal alias is deprecated:DeprecationWarning'
    -W 'ignore:Unclosed <MemoryObject:ResourceWarning'
)

log() { echo "test-oldest-deps: $*" >&2; }

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV" || { apt-get update -qq && apt-get install -y -qq python3-venv && "$PYTHON" -m venv "$VENV"; }
    "$VENV/bin/pip" install --quiet --upgrade pip
fi
# Keeps ruff, git and editors out of the venv without an entry in the project's .gitignore (Python >= 3.13's venv
# writes the same file itself).
echo '*' >"$VENV/.gitignore"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)

# The package with its own dependencies only: its web extras would pull the newest frameworks.
"${PIP[@]}" -e . 'pytest>=8.2' 'pytest-timeout>=2.3' 'httpx==0.27.*'

run() {
    local versions
    versions="$("$VENV/bin/python" -c 'import fastapi, starlette; print(f"fastapi {fastapi.__version__}, starlette {starlette.__version__}")')"
    log "$1: $versions"
    "$VENV/bin/python" -m pytest -p no:cacheprovider -q "${OLD_STARLETTE_WARNINGS[@]}" "${TESTS[@]}"
}

"${PIP[@]}" 'fastapi==0.110.*'
run "FastAPI floor"

# --upgrade: the FastAPI 0.110 just installed pins an older Starlette, so another FastAPI must be chosen.
"${PIP[@]}" --upgrade 'starlette==0.40.*' 'fastapi>=0.110'
run "Starlette floor"
