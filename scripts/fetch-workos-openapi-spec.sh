#!/usr/bin/env bash
# Fetch WorkOS's published OpenAPI spec, the npm package @workos/openapi-spec (MIT), pinned to one version and
# checked against its pinned sha512 integrity, into .cache/workos-openapi-spec/<version>/ (git-ignored). Prints the
# spec's path on stdout (and nothing else on stdout).
#
# The test suite checks every request and answer of the WorkOS emulator against it (tests/workos_spec.py); the
# package itself never downloads anything. Idempotent: a cached tarball whose checksum still matches is reused, so
# a second run works offline. Uses `npm pack` when npm is installed, else curl on the registry's tarball URL.
#
# Upgrading: change VERSION and INTEGRITY together (`npm view @workos/openapi-spec@<version> dist.integrity`).
set -euo pipefail

VERSION=0.1.0
INTEGRITY="sha512-pVw8SPFsva6UR8Z2ovE1DC4Aq1fRdPXywT8JP7yN1G8Y02+/kDb6KgFXmpKiv76XinUXDOAmU9tr/G73UI8mHw=="
TARBALL_URL="https://registry.npmjs.org/@workos/openapi-spec/-/openapi-spec-$VERSION.tgz"

cd "$(dirname "$0")/.."
DEST=".cache/workos-openapi-spec/$VERSION"
log() { echo "fetch-workos-openapi-spec: $*" >&2; }

# The npm integrity string of a file: "sha512-" and the base64 of its SHA-512 digest.
integrity_of() {
    python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$1"
}

if [[ ! -f "$DEST/package.tgz" || "$(integrity_of "$DEST/package.tgz")" != "$INTEGRITY" ]]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    if command -v npm >/dev/null 2>&1; then
        log "npm pack @workos/openapi-spec@$VERSION"
        (cd "$tmp" && npm pack --silent "@workos/openapi-spec@$VERSION" >/dev/null)
        mv "$tmp"/workos-openapi-spec-"$VERSION".tgz "$tmp/package.tgz"
    else
        log "no npm: downloading $TARBALL_URL"
        curl -fsSL --retry 3 -o "$tmp/package.tgz" "$TARBALL_URL"
    fi
    actual="$(integrity_of "$tmp/package.tgz")"
    if [[ "$actual" != "$INTEGRITY" ]]; then
        log "checksum mismatch for @workos/openapi-spec@$VERSION: expected $INTEGRITY, got $actual"
        exit 1
    fi
    mkdir -p "$DEST"
    mv "$tmp/package.tgz" "$DEST/package.tgz"
fi

# Always unpacked from the verified tarball, so an edited copy of the YAML never survives a run.
tar -xzf "$DEST/package.tgz" -C "$DEST" --strip-components=1 package/open-api-spec.yaml package/LICENSE.txt
echo "$PWD/$DEST/open-api-spec.yaml"
