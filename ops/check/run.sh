#!/usr/bin/env bash
# Checks the deployable files without Docker or a Kubernetes cluster: the image recipe
# (ops/docker), the compose system (ops/compose), the Kubernetes manifests (ops/k8s,
# schema-validated offline with kubernetes-validate) and the Grafana dashboard. See
# check_manifests.py for what is checked. tests/it/ops_manifests.rs runs it.
#
#   ops/check/run.sh
#
# Exit status: 0 all good, 1 a problem (each one is printed), 2 the checker could not run.
#
# Environment:
#   GANYMEDE_BIN  the ganymede binary: configuration keys and files are checked against
#                 it, and each configuration is started once on free loopback ports
#                 (default ~/.cache/ganymede/target/debug/ganymede; without one those
#                 checks are skipped, and say so)
#   OPS_VENV      the venv (default <repo>/.venv-ops); PYTHON makes it (python3)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV=${OPS_VENV:-$ROOT/.venv-ops}
REQS=$HERE/requirements.txt
BIN=${GANYMEDE_BIN:-$HOME/.cache/ganymede/target/debug/ganymede}

die() { echo "check/run.sh: $*" >&2; exit 2; }

# The venv: created once, reinstalled only when requirements.txt changes (as ops/venv.sh).
if [[ ! -x $VENV/bin/python ]]; then
  echo "check/run.sh: creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV" || die "cannot create $VENV (python3-venv missing?)"
  # Never committed (what Python 3.13's venv writes by itself).
  printf '*\n' > "$VENV/.gitignore"
fi
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ ! -s $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "check/run.sh: installing $(grep -v '^#' "$REQS" | grep -c .) pinned package(s) into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" >&2 || die "pip install failed"
  echo "$want" > "$stamp"
fi

args=(--root "$ROOT")
if [[ -x $BIN ]]; then args+=(--ganymede "$BIN"); fi
exec "$VENV/bin/python" "$HERE/check_manifests.py" "${args[@]}" "$@"
