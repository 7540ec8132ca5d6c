# Sourced by the benchmark scripts: where things are, a work directory whose processes
# end with the script, free ports, waiting for a URL, and JupyterHub 6.1.1 (the anchor,
# from the project venv, with configurable-http-proxy from benches/proxy/setup.sh).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ganymede/target}
BENCH_DIR=${GANYMEDE_BENCH_DIR:-$HOME/.cache/ganymede/bench}
BIN=$CARGO_TARGET_DIR/debug/ganymede
CHP=$BENCH_DIR/node/node_modules/.bin/configurable-http-proxy
BENCH_NAME=${BENCH_NAME:-$(basename "$(dirname "$0")")/$(basename "$0")}

WORK=$(mktemp -d)
# Started processes are listed in a file, not an array: most are started inside $(…)
# (a subshell), whose variables the script never sees.
started() { echo "$1" >> "$WORK/pids"; }
bench_cleanup() {
  local pids=() pid _
  [[ -f $WORK/pids ]] && mapfile -t pids < "$WORK/pids"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # They are not all this shell's children: wait by polling, 15 s at most.
  for _ in $(seq 1 150); do
    local alive=0
    for pid in "${pids[@]}"; do
      [[ -e /proc/$pid && $(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null) != Z ]] && alive=1
    done
    (( alive )) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap bench_cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_up <url> [tries=600] [pause=0.1]: until the URL answers 200, or give up.
wait_up() {
  local url=$1 tries=${2:-600} pause=${3:-0.1}
  for _ in $(seq 1 "$tries"); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$url" || true) == 200 ]] && return 0
    sleep "$pause"
  done
  echo "$BENCH_NAME: $url never answered 200" >&2
  exit 1
}

# jupyterhub <name> [more jupyterhub_config.py lines] → its hub's base URL. Needs VENV_BIN.
jupyterhub() {
  local name=$1 extra=${2:-} public hub proxy
  public=$(port); hub=$(port); proxy=$(port)
  mkdir -p "$WORK/$name"
  cat > "$WORK/$name/jupyterhub_config.py" <<PY
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = $public
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = $hub
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:$proxy"
c.ConfigurableHTTPProxy.command = ["$CHP"]
c.JupyterHub.db_url = "sqlite:///$WORK/$name/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "$WORK/$name/cookie_secret"
c.JupyterHub.pid_file = "$WORK/$name/jupyterhub.pid"
c.JupyterHub.log_level = "WARN"
$extra
PY
  (cd "$WORK/$name" && exec env PATH="$VENV_BIN:$PATH" "$VENV_BIN/jupyterhub" -f jupyterhub_config.py \
    > "$WORK/$name.log" 2>&1) & started $!
  wait_up "http://127.0.0.1:$hub/hub/health"
  echo "http://127.0.0.1:$hub"
}
