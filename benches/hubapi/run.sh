#!/usr/bin/env bash
# The hub's REST API against JupyterHub 6.1.1 (PyPI, from the project venv), same
# machine, same run, interleaved round by round. Each hub gets 1,000 users, then:
#   - GET /hub/api/users/{name} and GET /hub/api/users (200 per page, paginated) under
#     wrk -t2 -c64: req/s and p99;
#   - 200 GET /hub/api/users/{name} at once (JupyterHub issue #2733): total time.
# Ganymede runs as one replica (as JupyterHub runs as one process), fsync on.
#
#   benches/hubapi/run.sh                ROUNDS=2 DURATION=10s CONNS=64
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
USERS=${USERS:-1000}
TOKEN=bench-hub-token-$RANDOM$RANDOM$RANDOM

bash "$ROOT/benches/proxy/setup.sh"
VENV_BIN=$(bash "$ROOT/ops/venv.sh")
(cd "$ROOT" && cargo build --locked --quiet --bin ganymede)


G_API=$(port); G_RAFT=$(port)

cat > "$WORK/hub.toml" <<TOML
[hub]
node_id = 1
data_dir = "$WORK/ganymede"
api_bind = "127.0.0.1:$G_API"
raft_bind = "127.0.0.1:$G_RAFT"
log = "warn"
[cluster]
initial_members = [{ node_id = 1, raft_addr = "127.0.0.1:$G_RAFT", api_addr = "127.0.0.1:$G_API" }]
TOML
GANYMEDE_ADMIN_TOKEN=$TOKEN "$BIN" hub --config "$WORK/hub.toml" > "$WORK/ganymede.log" 2>&1 & started $!

wait_up "http://127.0.0.1:$G_API/hub/health"
J_BASE=$(jupyterhub jupyterhub "c.JupyterHub.authenticator_class = \"dummy\"
c.JupyterHub.services = [{\"name\": \"bench\", \"api_token\": \"$TOKEN\"}]
c.JupyterHub.load_roles = [{\"name\": \"bench\", \"scopes\": [\"admin:users\", \"admin:servers\", \"list:users\", \"read:users\"], \"services\": [\"bench\"]}]")

G=http://127.0.0.1:$G_API/hub/api
J=$J_BASE/hub/api
echo "creating $USERS users on each hub..." >&2
python3 - "$G" "$J" "$TOKEN" "$USERS" <<'PY'
import json, sys, time, urllib.request
token, n = sys.argv[3], int(sys.argv[4])
for base in sys.argv[1:3]:
    for start in range(0, n, 250):
        names = [f"u{i}" for i in range(start, min(n, start + 250))]
        for attempt in range(100):
            try:
                req = urllib.request.Request(f"{base}/users", method="POST",
                    data=json.dumps({"usernames": names}).encode(),
                    headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=60).read()
                break
            except Exception as err:  # the admin token may not be provisioned yet
                if attempt == 99:
                    raise
                time.sleep(0.1)
PY

# wrk's output → "req/s p99_ms non2xx"
measure() {
  wrk -t2 -c"$CONNS" -d"$DURATION" --latency -H "Authorization: token $TOKEN" "${@:2}" "$1" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 } /Non-2xx/ { bad = $NF }
    END { printf "%.0f %.2f %s\n", rps, p99, (bad == "" ? 0 : bad) }'
}
# 200 requests for different users at once → total seconds
burst() {
  python3 - "$1" "$TOKEN" <<'PY'
import concurrent.futures, sys, time, urllib.request
base, token = sys.argv[1], sys.argv[2]
def get(i):
    req = urllib.request.Request(f"{base}/users/u{i}", headers={"Authorization": f"token {token}"})
    return urllib.request.urlopen(req, timeout=120).status
start = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(200) as pool:
    statuses = list(pool.map(get, range(200)))
assert all(s == 200 for s in statuses), statuses
print(f"{time.monotonic() - start:.3f}")
PY
}

PAGE=(-H "Accept: application/jupyterhub-pagination+json")
declare -A R
for round in $(seq 1 "$ROUNDS"); do
  for hub in ganymede jupyterhub; do
    base=$G; [[ $hub == jupyterhub ]] && base=$J
    one=$(measure "$base/users/u$((USERS / 2))")
    list=$(measure "$base/users?offset=0&limit=200" "${PAGE[@]}")
    total=$(burst "$base")
    R[$hub.one]+="$one;"; R[$hub.list]+="$list;"; R[$hub.burst]+="$total;"
    echo "round $round $hub: user [$one] list [$list] burst ${total}s" >&2
  done
done

python3 - "${R[ganymede.one]}" "${R[ganymede.list]}" "${R[ganymede.burst]}" \
  "${R[jupyterhub.one]}" "${R[jupyterhub.list]}" "${R[jupyterhub.burst]}" "$CONNS" "$DURATION" "$ROUNDS" "$USERS" <<'PY'
import json, statistics, sys
def med(raw):
    rows = [list(map(float, s.split())) for s in raw.strip(";").split(";")]
    return [statistics.median(col) for col in zip(*rows)]
g1, gl, gb, j1, jl, jb = (med(a) for a in sys.argv[1:7])
conns, duration, rounds, users = sys.argv[7:11]
print(f"\nhub API, {users} users, wrk -t2 -c{conns} -d{duration}, median of {rounds} interleaved rounds")
print(f"{'':34} {'ganymede':>10} {'jupyterhub':>11} {'ratio':>7}")
print(f"{'GET /users/{name} req/s':34} {g1[0]:10.0f} {j1[0]:11.0f} {g1[0]/j1[0]:6.1f}x  (goal >= 20x)")
print(f"{'GET /users/{name} p99 ms':34} {g1[1]:10.2f} {j1[1]:11.2f} {j1[1]/g1[1]:6.1f}x lower")
print(f"{'GET /users (200/page) req/s':34} {gl[0]:10.0f} {jl[0]:11.0f} {gl[0]/jl[0]:6.1f}x  (goal >= 20x)")
print(f"{'GET /users (200/page) p99 ms':34} {gl[1]:10.2f} {jl[1]:11.2f} {jl[1]/gl[1]:6.1f}x lower")
print(f"{'200 parallel GET /users/{name} s':34} {gb[0]:10.3f} {jb[0]:11.3f} {jb[0]/gb[0]:6.1f}x faster")
print(f"non-2xx: ganymede {g1[2]:.0f}/{gl[2]:.0f}, jupyterhub {j1[2]:.0f}/{jl[2]:.0f}")
print(json.dumps({"ganymede": {"user_rps": g1[0], "user_p99_ms": g1[1], "list_rps": gl[0], "list_p99_ms": gl[1], "burst_s": gb[0]},
                  "jupyterhub": {"user_rps": j1[0], "user_p99_ms": j1[1], "list_rps": jl[0], "list_p99_ms": jl[1], "burst_s": jb[0]}}))
PY
