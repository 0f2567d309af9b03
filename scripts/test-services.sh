#!/usr/bin/env bash
# Prepare what the test suite uses for real, and print the PostgreSQL DSN for it on stdout (empty if none):
# as root, install PostgreSQL and Chromium and start PostgreSQL; anywhere, fetch the pinned WorkOS OpenAPI spec the
# emulator is checked against. Used by `make unit`; idempotent and non-interactive.
#
# On a developer's machine any of these may be missing (not root, offline): the tests that need it skip, each saying
# why. Under CI=true a missing one is an error: this script stops with the reason (and the tests would fail too,
# see tests/requirements.py), so a broken install can never turn into a green run that skipped its PostgreSQL or
# browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "test-services: $*" >&2; }
ci=false
case "${CI:-}" in [Tt][Rr][Uu][Ee] | 1) ci=true ;; esac
# unavailable WHAT CONSEQUENCE: an error under CI, a warning otherwise.
unavailable() {
    if $ci; then
        log "CI=true, but $1"
        exit 1
    fi
    log "$1: $2"
}

dsn="${CENTURE_AUDIT_TEST_POSTGRES_DSN:-}"
if [[ "$(id -u)" -eq 0 ]]; then
    scripts/install-services.sh || unavailable "installing PostgreSQL and Chromium failed" "their tests will be skipped"
    if [[ -z "$dsn" ]]; then
        dsn="$(scripts/postgres-test-server.sh)" || {
            dsn=""
            unavailable "the PostgreSQL test server did not start" "the PostgreSQL tests will be skipped"
        }
    fi
else
    [[ -n "$dsn" ]] || unavailable "not root: PostgreSQL cannot be installed and started" \
        "the PostgreSQL tests will be skipped (or set CENTURE_AUDIT_TEST_POSTGRES_DSN)"
    [[ -x /usr/bin/chromium ]] || unavailable "not root: Chromium cannot be installed" \
        "the browser tests will be skipped"
fi
scripts/fetch-workos-openapi-spec.sh >/dev/null ||
    unavailable "the WorkOS OpenAPI spec could not be fetched" "the emulator's spec checks will be skipped"
echo "$dsn"
