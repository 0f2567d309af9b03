#!/usr/bin/env bash
# Install (as root, non-interactively, idempotently) the system packages the test suite uses for real:
# PostgreSQL for the store's PostgreSQL backend, Debian's Chromium for the admin page's browser tests, and curl
# when there is no npm, to fetch the WorkOS OpenAPI spec.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# scripts/fetch-workos-openapi-spec.sh takes the spec from the npm registry with npm, or else with curl.
command -v npm >/dev/null 2>&1 || command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-services: installing ${missing[*]}" >&2
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
