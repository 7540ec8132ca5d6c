#!/usr/bin/env bash
# Installs the npm dependencies of the OIDC test fixture (ops/oidc/node_modules).
# Idempotent: prints nothing and does nothing when node_modules is up to date.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "ops/oidc/setup.sh: node and npm are required (apt-get install nodejs npm)" >&2
    exit 1
fi

# npm writes node_modules/.package-lock.json after a successful install; it is
# stale when package.json or package-lock.json is newer, or when the pinned
# oidc-provider is missing.
marker=node_modules/.package-lock.json
if [[ -f $marker && -f node_modules/oidc-provider/package.json
      && ! package.json -nt $marker
      && ( ! -f package-lock.json || ! package-lock.json -nt $marker ) ]]; then
    exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [[ -f package-lock.json ]]; then
    cmd=(npm ci)
else
    cmd=(npm install)
fi
if ! "${cmd[@]}" --no-audit --no-fund --loglevel=error >"$log" 2>&1; then
    echo "ops/oidc/setup.sh: '${cmd[*]}' failed:" >&2
    cat "$log" >&2
    exit 1
fi
# npm ci does not always bump the marker's mtime past the manifests'.
touch "$marker"
