#!/usr/bin/env bash
# A real 3-hub Ganymede cluster on loopback, for a laptop.
#
#   ops/local/cluster.sh up          build if needed, install JupyterLab into .venv (first
#                                    run), start hub1..3 and edge1..2, wait for a leader
#                                    and for the edges' route tables; users log in at
#                                    http://127.0.0.1:8000/ and start JupyterLab
#   ops/local/cluster.sh down        stop everything (state is kept)
#   ops/local/cluster.sh status      one line per process: NAME up|down ROLE
#   ops/local/cluster.sh kill NAME   SIGKILL one process (e.g. hub2, edge1)
#   ops/local/cluster.sh start NAME  restart it on its data dir and wait until it answers
#   ops/local/cluster.sh logs NAME   print its log
#
# Names and ports (fixed):  hub1 API 127.0.0.1:8081, routes API :8091, raft :8281,
#                                edge feed gRPC :8381, events (ZeroMQ) :8481
#                           hub2 API :8082, routes API :8092, raft :8282, :8382, :8482
#                           hub3 API :8083, routes API :8093, raft :8283, :8383, :8483
#                           edge1 127.0.0.1:8000 (metrics :9100)
#                           edge2 127.0.0.1:8010 (metrics :9110)
# Environment:
#   GANYMEDE_LOCAL_DIR    where data, logs and pids live (default: <repo>/.local/cluster)
#   GANYMEDE_ADMIN_TOKEN  the admin token (default: generated once, kept in
#                         $GANYMEDE_LOCAL_DIR/admin-token)
#   GANYMEDE_AUTHENTICATOR, GANYMEDE_DUMMY_PASSWORD  who may log in (default here: dummy,
#                         any name, any password; the hubs' own default is native);
#                         passed to the hubs, as is every GANYMEDE_AUTH_* key override
#                         (e.g. GANYMEDE_AUTH_ADMIN_USERS='["admin"]')
#   CONFIGPROXY_AUTH_TOKEN  the routes API token, also the edges' token for the hubs'
#                         feed (default: generated once, kept in $GANYMEDE_LOCAL_DIR/proxy-token)
#   CARGO_TARGET_DIR      where cargo builds (default: ~/.cache/ganymede/target)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${GANYMEDE_LOCAL_DIR:-$ROOT/.local/cluster}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ganymede/target}
export GANYMEDE_AUTHENTICATOR=${GANYMEDE_AUTHENTICATOR:-dummy}
BIN=$CARGO_TARGET_DIR/debug/ganymede
HUBS=(hub1 hub2 hub3)
EDGES=(edge1 edge2)
ALL=("${HUBS[@]}" "${EDGES[@]}")

die() { echo "cluster.sh: $*" >&2; exit 1; }

api_port() { echo $((8080 + ${1#hub})); }
proxy_port() { echo $((8090 + ${1#hub})); }
raft_port() { echo $((8280 + ${1#hub})); }
feed_port() { echo $((8380 + ${1#hub})); }
events_port() { echo $((8480 + ${1#hub})); }
edge_port() { echo $((8000 + 10 * (${1#edge} - 1))); }
edge_metrics_port() { echo $((9100 + 10 * (${1#edge} - 1))); }
is_edge() { [[ $1 == edge* ]]; }

# A token from the environment, or one generated once into $DIR/<file>.
token_from() {
  local value=$1 file=$DIR/$2
  if [[ -n $value ]]; then
    echo "$value"
  else
    if [[ ! -s $file ]]; then
      (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$file")
    fi
    cat "$file"
  fi
}
admin_token() { token_from "${GANYMEDE_ADMIN_TOKEN:-}" admin-token; }
proxy_token() { token_from "${CONFIGPROXY_AUTH_TOKEN:-}" proxy-token; }

build() {
  if [[ ! -x $BIN ]] || [[ -n $(find "$ROOT/crates" "$ROOT/proto" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" -print -quit 2>/dev/null) ]]; then
    echo "building ganymede (cargo build --bin ganymede)..." >&2
    (cd "$ROOT" && cargo build --locked --quiet --bin ganymede) || die "build failed"
  fi
}

write_edge_config() {
  local name=$1
  cat > "$DIR/$name.toml" <<TOML
# Written by ops/local/cluster.sh
[edge]
name = "$name"
bind = "127.0.0.1:$(edge_port "$name")"
metrics_bind = "127.0.0.1:$(edge_metrics_port "$name")"
hubs = [
  { api = "127.0.0.1:8081", grpc = "127.0.0.1:8381", events = "127.0.0.1:8481" },
  { api = "127.0.0.1:8082", grpc = "127.0.0.1:8382", events = "127.0.0.1:8482" },
  { api = "127.0.0.1:8083", grpc = "127.0.0.1:8383", events = "127.0.0.1:8483" },
]
TOML
}

write_config() {
  local name=$1 id=${1#hub}
  cat > "$DIR/$name.toml" <<TOML
# Written by ops/local/cluster.sh
[hub]
node_id = $id
data_dir = "$DIR/$name/data"
api_bind = "127.0.0.1:$(api_port "$name")"
raft_bind = "127.0.0.1:$(raft_port "$name")"

[proxy]
api_bind = "127.0.0.1:$(proxy_port "$name")"

[events]
grpc_bind = "127.0.0.1:$(feed_port "$name")"
pub_bind = "127.0.0.1:$(events_port "$name")"

[cluster]
initial_members = [
  { node_id = 1, raft_addr = "127.0.0.1:8281", api_addr = "127.0.0.1:8081" },
  { node_id = 2, raft_addr = "127.0.0.1:8282", api_addr = "127.0.0.1:8082" },
  { node_id = 3, raft_addr = "127.0.0.1:8283", api_addr = "127.0.0.1:8083" },
]

[spawner]
cmd = ["${VENV_BIN:-$ROOT/.venv/bin}/jupyterhub-singleuser"]
default_url = "/lab"
prefork = true
environment = { PATH = "${VENV_BIN:-$ROOT/.venv/bin}:/usr/local/bin:/usr/bin:/bin" }
TOML
}

pid_of() {
  local file=$DIR/$1.pid
  [[ -s $file ]] || return 1
  local pid
  pid=$(cat "$file")
  kill -0 "$pid" 2>/dev/null || return 1
  # Only a process we started: its command line names our binary.
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -Eq "ganymede (hub|edge)" || return 1
  echo "$pid"
}

cluster_json() {
  GANYMEDE_ADMIN_TOKEN=$(admin_token) "$BIN" cluster --url "http://127.0.0.1:$(api_port "$1")" status --json 2>/dev/null
}

role_of() {
  cluster_json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["role"])' 2>/dev/null || echo unknown
}

has_leader() {
  cluster_json "$1" | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["leader_id"] else 1)' 2>/dev/null
}

# An edge answers once it has loaded the route table from a hub.
edge_ready() {
  python3 - "$(edge_metrics_port "$1")" <<'PY' 2>/dev/null
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=1).read().decode()
sys.exit(0 if "ganymede_edge_snapshots_total" in text else 1)
PY
}

wait_until() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    (( SECONDS < deadline )) || die "timed out after ${seconds}s waiting for $what"
    sleep 0.1
  done
}

start_one() {
  local name=$1
  [[ " ${ALL[*]} " == *" $name "* ]] || die "unknown process '$name' (known: ${ALL[*]})"
  if pid_of "$name" >/dev/null; then
    echo "$name is already running"
    return 0
  fi
  mkdir -p "$DIR/$name"
  if is_edge "$name"; then
    write_edge_config "$name"
    CONFIGPROXY_AUTH_TOKEN=$(proxy_token) nohup "$BIN" edge --config "$DIR/$name.toml" >> "$DIR/$name.log" 2>&1 &
  else
    write_config "$name"
    GANYMEDE_ADMIN_TOKEN=$(admin_token) CONFIGPROXY_AUTH_TOKEN=$(proxy_token) nohup "$BIN" hub --config "$DIR/$name.toml" >> "$DIR/$name.log" 2>&1 &
  fi
  echo $! > "$DIR/$name.pid"
}

wait_answering() {
  if is_edge "$1"; then
    wait_until "$1 to load the route table" 60 edge_ready "$1"
  else
    wait_until "$1 to answer with a leader" 60 has_leader "$1"
  fi
}

cmd_up() {
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  build
  # JupyterLab for the local spawner (first run: a minute or two, with pip's output).
  VENV_BIN=$(bash "$ROOT/ops/venv.sh") || die "could not install JupyterLab into the venv"
  for name in "${ALL[@]}"; do start_one "$name"; done
  for name in "${ALL[@]}"; do wait_answering "$name"; done
  cmd_status
  echo "admin token: $( [[ -n ${GANYMEDE_ADMIN_TOKEN:-} ]] && echo "\$GANYMEDE_ADMIN_TOKEN" || echo "$DIR/admin-token")"
}

stop_pid() {
  local pid=$1 signal=${2:-TERM}
  kill -"$signal" "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_group() {
  # In parallel: each process takes a moment to stop in order.
  local name pid waits=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then stop_pid "$pid" & waits+=($!); fi
  done
  for pid in "${waits[@]}"; do wait "$pid" || true; done
  for name in "$@"; do rm -f "$DIR/$name.pid"; done
}

cmd_down() {
  # Edges first: they would only log the hubs going away.
  stop_group "${EDGES[@]}"
  stop_group "${HUBS[@]}"
}

cmd_status() {
  [[ -x $BIN ]] || build
  for name in "${ALL[@]}"; do
    if pid_of "$name" >/dev/null; then
      if is_edge "$name"; then echo "$name up edge"; else echo "$name up $(role_of "$name")"; fi
    else
      echo "$name down -"
    fi
  done
}

cmd_kill() {
  local name=${1:?usage: cluster.sh kill NAME}
  local pid
  pid=$(pid_of "$name") || die "$name is not running"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$DIR/$name.pid"
}

cmd_start() {
  local name=${1:?usage: cluster.sh start NAME}
  mkdir -p "$DIR"
  build
  start_one "$name"
  wait_answering "$name"
}

cmd_logs() {
  local name=${1:?usage: cluster.sh logs NAME}
  [[ -f $DIR/$name.log ]] || die "no log for $name in $DIR"
  cat "$DIR/$name.log"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kill) cmd_kill "${2:-}" ;;
  start) cmd_start "${2:-}" ;;
  logs) cmd_logs "${2:-}" ;;
  *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
