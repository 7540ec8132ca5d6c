#!/usr/bin/env bash
# Spawning, measured from the API client's side, same machine, same run:
#   1. spawn-to-ready of real JupyterLab (jupyterhub-singleuser from the project venv, the
#      same command and arguments for all): Ganymede (one hub replica, local spawner),
#      Ganymede with prefork (servers forked from a warm interpreter), and JupyterHub
#      6.1.1 (SimpleLocalProcessSpawner), interleaved round by round.
#      A round: POST /hub/api/users/<u>/server, then GET the user every 20 ms until
#      "ready"; the time from the POST to the first ready answer. Then the server stops.
#   2. burst: BURST test single-user servers (ganymede-test-singleuser) started at once
#      through 3 hub replicas; the time until every route is in both edges' tables.
#
#   benches/spawn/run.sh            ROUNDS=5 BURST=500
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ROUNDS=${ROUNDS:-5}
BURST=${BURST:-500}
TEST_SERVER=$CARGO_TARGET_DIR/debug/ganymede-test-singleuser
TOKEN=bench-hub-token-$RANDOM$RANDOM$RANDOM
PROXY_TOKEN=bench-proxy-token-$RANDOM$RANDOM$RANDOM

bash "$ROOT/benches/proxy/setup.sh"
VENV_BIN=$(bash "$ROOT/ops/venv.sh")
(cd "$ROOT" && cargo build --locked --quiet --bin ganymede --bin ganymede-test-singleuser)
ARGS='[]'
[[ $(id -u) == 0 ]] && ARGS='["--ServerApp.allow_root=True"]'


# ganymede_hubs <name> <size> <cmd TOML array> <args TOML array> [prefork true|false]
#   → "api1 api2 …" (and edges' feed ports in $WORK/<name>.feeds)
ganymede_hubs() {
  local name=$1 size=$2 cmd=$3 args=$4 prefork=${5:-false} i members="" apis=()
  declare -a api raft feed events proxy
  for i in $(seq 1 "$size"); do
    api[i]=$(port); raft[i]=$(port); feed[i]=$(port); events[i]=$(port); proxy[i]=$(port)
    members+="{ node_id = $i, raft_addr = \"127.0.0.1:${raft[i]}\", api_addr = \"127.0.0.1:${api[i]}\" },"
  done
  : > "$WORK/$name.feeds"
  for i in $(seq 1 "$size"); do
    cat > "$WORK/$name$i.toml" <<TOML
[hub]
node_id = $i
data_dir = "$WORK/$name$i"
api_bind = "127.0.0.1:${api[i]}"
raft_bind = "127.0.0.1:${raft[i]}"
log = "warn,ganymede_spawner::prefork=info"
[cluster]
initial_members = [$members]
[proxy]
api_bind = "127.0.0.1:${proxy[i]}"
[events]
grpc_bind = "127.0.0.1:${feed[i]}"
pub_bind = "127.0.0.1:${events[i]}"
[servers]
concurrent_spawn_limit = 0
[spawner]
cmd = $cmd
args = $args
allow_root = false
prefork = $prefork
environment = { PATH = "$VENV_BIN:/usr/local/bin:/usr/bin:/bin" }
TOML
    echo "{ api = \"127.0.0.1:${api[i]}\", grpc = \"127.0.0.1:${feed[i]}\", events = \"127.0.0.1:${events[i]}\" }," >> "$WORK/$name.feeds"
    GANYMEDE_ADMIN_TOKEN=$TOKEN CONFIGPROXY_AUTH_TOKEN=$PROXY_TOKEN "$BIN" hub --config "$WORK/$name$i.toml" > "$WORK/$name$i.log" 2>&1 & started $!
    apis+=("http://127.0.0.1:${api[i]}")
  done
  for base in "${apis[@]}"; do wait_up "$base/hub/health"; done
  echo "${apis[*]}"
}

# ganymede_edge <name> <hubs name> → the edge's metrics base URL
ganymede_edge() {
  local name=$1 hubs=$2 bind metrics
  bind=$(port); metrics=$(port)
  cat > "$WORK/$name.toml" <<TOML
[edge]
name = "$name"
bind = "127.0.0.1:$bind"
metrics_bind = "127.0.0.1:$metrics"
log = "warn"
hubs = [$(cat "$WORK/$hubs.feeds")]
TOML
  CONFIGPROXY_AUTH_TOKEN=$PROXY_TOKEN "$BIN" edge --config "$WORK/$name.toml" > "$WORK/$name.log" 2>&1 & started $!
  wait_up "http://127.0.0.1:$metrics/metrics"
  echo "http://127.0.0.1:$metrics"
}


SPAWN=$(cat <<'PY'
import json, sys, time, urllib.request
base, token, user = sys.argv[1], sys.argv[2], sys.argv[3]
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + "/hub/api" + path, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
status, _ = call("POST", f"/users/{user}")
assert status in (201, 409), status
start = time.monotonic()
status, body = call("POST", f"/users/{user}/server", {})
assert status in (201, 202), (status, body)
while True:
    status, model = call("GET", f"/users/{user}")
    server = (model.get("servers") or {}).get("", {})
    if server.get("ready"):
        break
    if time.monotonic() - start > 120:
        raise SystemExit(f"{user} not ready after 120 s at {base}")
    time.sleep(0.02)
took = time.monotonic() - start
call("DELETE", f"/users/{user}/server")
while (call("GET", f"/users/{user}")[1].get("servers") or {}).get(""):
    time.sleep(0.1)
print(f"{took:.3f}")
PY
)

G=$(ganymede_hubs g 1 "[\"$VENV_BIN/jupyterhub-singleuser\"]" "$ARGS")
P=$(ganymede_hubs p 1 "[\"$VENV_BIN/jupyterhub-singleuser\"]" "$ARGS" true)
J=$(jupyterhub j "$(cat <<PY
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = ["$VENV_BIN/jupyterhub-singleuser"]
c.Spawner.args = $ARGS
c.Spawner.environment = {"PATH": "$VENV_BIN:/usr/local/bin:/usr/bin:/bin"}
c.SimpleLocalProcessSpawner.home_dir_template = "$WORK/j/homes/{username}"
c.JupyterHub.services = [{"name": "bench", "api_token": "$TOKEN"}]
c.JupyterHub.load_roles = [{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}]
PY
)")
# The warm interpreter imports for a few seconds after the hub starts.
for _ in $(seq 1 600); do grep -q "warm interpreter ready" "$WORK/p1.log" && break; sleep 0.1; done
grep -q "warm interpreter ready" "$WORK/p1.log" || { echo "spawn/run.sh: no warm interpreter" >&2; exit 1; }
declare -a GT PT JT
for round in $(seq 1 "$ROUNDS"); do
  GT+=("$(python3 -c "$SPAWN" "$G" "$TOKEN" "g$round")")
  PT+=("$(python3 -c "$SPAWN" "$P" "$TOKEN" "p$round")")
  JT+=("$(python3 -c "$SPAWN" "$J" "$TOKEN" "j$round")")
  echo "round $round: ganymede ${GT[-1]} s, prefork ${PT[-1]} s, jupyterhub ${JT[-1]} s" >&2
done

# The burst: 3 replicas, 2 edges, the test single-user server.
read -r -a B <<< "$(ganymede_hubs b 3 "[\"$TEST_SERVER\"]" '[]')"
E1=$(ganymede_edge e1 b); E2=$(ganymede_edge e2 b)
BURST_S=$(python3 - "$TOKEN" "$BURST" "$E1" "$E2" "${B[@]}" <<'PY'
import json, sys, time, threading, urllib.request
token, n, e1, e2, hubs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + "/hub/api" + path, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as e:
        print(f"{path}: {e.code} {e.read().decode()[:300]}", file=sys.stderr)
        return e.code
names = [f"burst{i:04}" for i in range(n)]
assert call(hubs[0], "POST", "/users", {"usernames": names}) == 201
start = time.monotonic()
def start_one(i):
    status = call(hubs[i % len(hubs)], "POST", f"/users/{names[i]}/server", {})
    assert status in (201, 202), (names[i], status)
threads = [threading.Thread(target=start_one, args=(i,)) for i in range(n)]
[t.start() for t in threads]
want = {f"/user/{name}" for name in names}
def routed(edge):
    with urllib.request.urlopen(edge + "/routes", timeout=10) as r:
        return want <= set(json.load(r)["routes"])
while not (routed(e1) and routed(e2)):
    if time.monotonic() - start > 300:
        raise SystemExit("not every route reached both edges within 300 s")
    time.sleep(0.05)
took = time.monotonic() - start
[t.join() for t in threads]
print(f"{took:.2f}")
PY
)

python3 - "${GT[*]}" "${PT[*]}" "${JT[*]}" "$BURST" "$BURST_S" "$ROUNDS" <<'PY'
import json, statistics, sys
g, p, j = ([float(x) for x in arg.split()] for arg in sys.argv[1:4])
burst, burst_s, rounds = int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
gm, pm, jm = statistics.median(g), statistics.median(p), statistics.median(j)
print(f"\nspawn-to-ready of JupyterLab (jupyterhub-singleuser, same command), median of {rounds} interleaved rounds")
print(f"{'':14} {'ganymede':>10} {'prefork':>10} {'jupyterhub':>11}")
print(f"{'median s':14} {gm:10.2f} {pm:10.2f} {jm:11.2f}")
print(f"{'min / max s':14} {min(g):5.2f}/{max(g):4.2f} {min(p):5.2f}/{max(p):4.2f} {min(j):6.2f}/{max(j):4.2f}")
print(f"vs jupyterhub: ganymede {jm - gm:.2f} s faster ({jm / gm:.1f}x), with prefork {jm - pm:.2f} s faster ({jm / pm:.1f}x)")
print(f"\n{burst} test servers started at once through 3 replicas: every route in both edges after {burst_s:.2f} s")
print(json.dumps({"spawn_to_ready_s": {"ganymede": g, "ganymede_prefork": p, "jupyterhub": j}, "burst": {"servers": burst, "seconds": burst_s}}))
PY
