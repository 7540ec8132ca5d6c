#!/usr/bin/env bash
# Installs the proxy benchmark's anchors and load generator, once: wrk and nginx from
# Debian, configurable-http-proxy 5.3.0 from npm (into $GANYMEDE_BENCH_DIR/node).
set -euo pipefail
DIR=${GANYMEDE_BENCH_DIR:-$HOME/.cache/ganymede/bench}
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
if ((${#need[@]})); then
  echo "setup.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ ! -x $DIR/node/node_modules/.bin/configurable-http-proxy ]]; then
  echo "setup.sh: installing configurable-http-proxy@5.3.0" >&2
  mkdir -p "$DIR/node"
  npm install --silent --no-audit --no-fund --prefix "$DIR/node" configurable-http-proxy@5.3.0 >/dev/null
fi
