#!/usr/bin/env bash
# Creates (once) and updates the project-local Python environment in <repo>/.venv with
# ops/python/requirements.txt; prints its bin directory. Safe to run every time: it only
# calls pip when the requirements changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GANYMEDE_VENV:-$ROOT/.venv}
REQS=$ROOT/ops/python/requirements.txt
PYTHON=${PYTHON:-python3}

if [[ ! -x $VENV/bin/python ]]; then
  echo "venv.sh: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ ! -s $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "venv.sh: installing $(grep -cv '^#' "$REQS") pinned packages (first run takes a minute or two)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" >&2
  echo "$want" > "$stamp"
fi
echo "$VENV/bin"
