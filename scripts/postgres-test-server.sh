#!/usr/bin/env bash
# Start a local PostgreSQL for the test suite and print its DSN on stdout (and nothing else on stdout).
#
# Usage (as root; idempotent; non-interactive):
#     export CENTURE_AUDIT_TEST_POSTGRES_DSN="$(scripts/postgres-test-server.sh)"
#     .venv/bin/pytest -m postgres            # or the whole suite: postgres tests run instead of being skipped
#
# What it does: installs PostgreSQL with apt if no server is installed, creates the Debian cluster if there is
# none, starts it, waits until it accepts connections, then creates (or updates) the login role and the database
# `centure_test` owned by it. Running it again changes nothing except resetting the role's password.
#
# Settings (environment): CENTURE_TEST_PG_PASSWORD (default "centure_test": a throwaway server on loopback, so a
# fixed password keeps the DSN stable across runs while a test session is using it), CENTURE_TEST_PG_DB and
# CENTURE_TEST_PG_USER (default "centure_test").
set -euo pipefail

DB="${CENTURE_TEST_PG_DB:-centure_test}"
ROLE="${CENTURE_TEST_PG_USER:-centure_test}"
PASSWORD="${CENTURE_TEST_PG_PASSWORD:-centure_test}"

log() { echo "postgres-test-server: $*" >&2; }

if [[ "$(id -u)" -ne 0 ]]; then
    log "run me as root (I install packages and start the cluster as the postgres user)"
    exit 1
fi
for value in "$DB" "$ROLE"; do
    # These are interpolated into SQL as identifiers: keep them to plain names.
    if [[ ! "$value" =~ ^[a-z_][a-z0-9_]*$ ]]; then
        log "invalid name: $value"
        exit 1
    fi
done
if [[ "$PASSWORD" == *"'"* || "$PASSWORD" == *"@"* || "$PASSWORD" == *"/"* || "$PASSWORD" == *":"* ]]; then
    # Kept out so that the password needs no quoting in SQL and no percent-encoding in the DSN.
    log "the password must not contain ' @ / or :"
    exit 1
fi

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing postgresql with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {found = 1} END {exit !found}'; then
    log "creating cluster $VERSION/main"
    pg_createcluster "$VERSION" main >&2
fi

STATUS="$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}')"
PORT="$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')"
if [[ "$STATUS" != online* ]]; then
    log "starting cluster $VERSION/main on port $PORT"
    pg_ctlcluster "$VERSION" main start >&2
fi

for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PORT"; then
        break
    fi
    sleep 0.5
done
if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
    log "the server did not become ready; see /var/log/postgresql/postgresql-$VERSION-main.log"
    exit 1
fi

psql_admin() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }

psql_admin -d postgres >&2 <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
    ELSE
        ALTER ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DB OWNER $ROLE' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB')
\gexec
SQL

echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
